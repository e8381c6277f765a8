// /health and /status tell the truth about inputs: polls that keep failing or never succeed,
// listeners that cannot bind, inputs stopped by the operator, inputs disabled in the config.
// The whole agent in-process against real sockets: a local HTTP source, the reference receiver.
import assert from "node:assert/strict";
import { createServer as createHttpServer, type Server as HttpServer, type ServerResponse } from "node:http";
import { createServer as createTcpServer, type AddressInfo, type Server as TcpServer } from "node:net";
import { after, before, describe, test } from "node:test";
import type { Agent } from "../agent/agent.ts";
import { startReceiver, type Receiver } from "../scripts/receiver.ts";
import { until } from "./testing/until.ts";
import { AGENT_AND_CONTROL, startTestAgent } from "./testing/agent.ts";

interface Health {
  status: number;
  problems: string[];
}

interface RunningAgent {
  agent: Agent;
  url: string;
  token: string;
  health(): Promise<Health>;
  input(name: string): Promise<Record<string, unknown>>;
  action(name: string, action: "start" | "stop" | "restart"): Promise<void>;
  close(): Promise<void>;
}

let receiver: Receiver;
before(async () => {
  receiver = await startReceiver({ port: 0, hostname: "127.0.0.1", token: "api-token" });
});
after(async () => {
  await receiver.close();
});

async function startAgent(inputs: string): Promise<RunningAgent> {
  const a = await startTestAgent(
    `${AGENT_AND_CONTROL}[api]
url = "${receiver.url}"
token = "api-token"
orgid = "org-test"
[spool]
fsync = "50ms"
${inputs}`,
    { restart: { baseMs: 50, capMs: 200 } },
  );
  return {
    agent: a.agent,
    url: a.url,
    token: a.auth.authorization.slice("Bearer ".length),
    async health() {
      const res = await fetch(`${a.url}/health`);
      const body = (await res.json()) as { status: string; problems?: string[] };
      assert.equal(body.status, res.status === 200 ? "ok" : "degraded");
      return { status: res.status, problems: body.problems ?? [] };
    },
    async input(name) {
      const { body } = await a.control<{ inputs: Array<Record<string, unknown>> }>("/status");
      const entry = body.inputs.find((i) => i.name === name);
      assert.ok(entry, `no status entry for ${name}`);
      return entry;
    },
    async action(name, action) {
      const res = await a.control(`/inputs/${name}/${action}`, { method: "POST" });
      assert.equal(res.status, 200, JSON.stringify(res.body));
    },
    close: () => a.close(),
  };
}

/** A local HTTP source whose answer the test changes while the agent polls it. */
async function source(): Promise<{ url: string; set(answer: (res: ServerResponse) => void): void; requests: () => number; close(): Promise<void> }> {
  let answer: (res: ServerResponse) => void = (res) => res.writeHead(403).end("forbidden here");
  let requests = 0;
  const server: HttpServer = createHttpServer((_req, res) => {
    requests++;
    answer(res);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/feed.json`,
    set(f) {
      answer = f;
    },
    requests: () => requests,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections?.();
        server.close(() => r());
      }),
  };
}

const pollInput = (url: string, interval = "200ms", extra = "") => `
[inputs.feed]
type = "http_poll"
typetag = "intel"
url = "${url}"
interval = "${interval}"
${extra}
`;

describe("health of polling inputs", () => {
  test("an http_poll source answering 403 every time: 503 naming the input and its error within 3 polls; healthy again once it answers 200", async () => {
    const src = await source();
    const a = await startAgent(pollInput(src.url));
    try {
      let h: Health = { status: 0, problems: [] };
      await until(async () => (h = await a.health()).status === 503, "/health 503");
      assert.ok(src.requests() >= 3, `503 came after ${src.requests()} polls, before the third failed`);
      assert.ok(src.requests() <= 4, `503 came only after ${src.requests()} polls`);
      const problem = h.problems.find((p) => p.startsWith("input feed "));
      assert.ok(problem, JSON.stringify(h.problems));
      assert.match(problem, /^input feed failed its last \d+ polls: HTTP 403 from http:\/\/127\.0\.0\.1:\d+\/feed\.json/);
      assert.match(problem, /forbidden here/);
      const failing = await a.input("feed");
      assert.equal(failing.state, "running");
      assert.equal(failing.problem, problem.slice("input feed ".length));
      assert.equal(failing.last_success, null);
      assert.equal(typeof failing.last_poll, "string");
      const metrics = await (await fetch(`${a.url}/metrics`)).text();
      assert.match(metrics, /^cybexp_agent_input_problem\{input="feed",type="http_poll"\} 1$/m);

      src.set((res) => res.writeHead(200, { "content-type": "application/json" }).end('[{"id":1}]'));
      await until(async () => (await a.health()).status === 200, "/health 200 after a successful poll");
      const ok = await a.input("feed");
      assert.equal(ok.problem, null);
      assert.match(await (await fetch(`${a.url}/metrics`)).text(), /^cybexp_agent_input_problem\{input="feed",type="http_poll"\} 0$/m);
      assert.equal(typeof ok.last_success, "string");
      assert.ok(Date.now() - Date.parse(String(ok.last_success)) < 10_000, String(ok.last_success));
      await until(async () => typeof (await a.input("feed")).next_poll === "string", "the next poll time");
      const next = Date.parse(String((await a.input("feed")).next_poll));
      assert.ok(next >= Date.parse(String(ok.last_success)), "next_poll after last_success");
    } finally {
      await a.close();
      await src.close();
    }
  });

  test("a poll that never succeeds in 3 intervals (the source never answers) is a problem though no poll has failed yet", async () => {
    const held: ServerResponse[] = [];
    const src = await source();
    src.set((res) => void held.push(res));
    // interval 1s: 3 intervals are 3 s; the request timeout (60 s) has not run out by then.
    const a = await startAgent(pollInput(src.url, "1s", 'timeout = "60s"'));
    try {
      const t0 = Date.now();
      assert.equal((await a.health()).status, 200, "not a problem at once");
      let h: Health = { status: 0, problems: [] };
      await until(async () => (h = await a.health()).status === 503, "/health 503", 15_000);
      assert.ok(Date.now() - t0 >= 2500, `503 after ${Date.now() - t0} ms, before 3 intervals`);
      assert.deepEqual(h.problems, ["input feed has not polled successfully yet"]);
      assert.equal((await a.input("feed")).consecutive_failures, 0);

      // Stopped by the operator: not a problem any more.
      await a.action("feed", "stop");
      assert.equal((await a.input("feed")).state, "stopped");
      assert.deepEqual(await a.health(), { status: 200, problems: [] });
    } finally {
      for (const r of held) r.destroy();
      await a.close();
      await src.close();
    }
  });

  test("a failed input (401: credentials refused) is a problem until the operator stops it", async () => {
    const src = await source();
    src.set((res) => res.writeHead(401).end("who are you"));
    const a = await startAgent(pollInput(src.url));
    try {
      await until(async () => (await a.input("feed")).state === "failed", "the input to fail");
      const h = await a.health();
      assert.equal(h.status, 503);
      assert.equal(h.problems.length, 1, JSON.stringify(h.problems));
      assert.match(h.problems[0]!, /^input feed failed: HTTP 401 from /);

      await a.action("feed", "stop");
      const stopped = await a.input("feed");
      assert.equal(stopped.state, "stopped");
      assert.equal(stopped.problem, null);
      assert.deepEqual(await a.health(), { status: 200, problems: [] });

      // Started again against a source that works: running, still healthy.
      src.set((res) => res.writeHead(200, { "content-type": "application/json" }).end("[]"));
      await a.action("feed", "start");
      await until(async () => typeof (await a.input("feed")).last_success === "string", "a successful poll");
      assert.equal((await a.input("feed")).state, "running");
      assert.deepEqual(await a.health(), { status: 200, problems: [] });
    } finally {
      await a.close();
      await src.close();
    }
  });
});

describe("health of listeners", () => {
  let taken: TcpServer;
  let port: number;
  before(async () => {
    taken = createTcpServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", () => r()));
    port = (taken.address() as AddressInfo).port;
  });
  after(() => new Promise<void>((r) => taken.close(() => r())));

  test("a syslog input on a port already taken: /health names the input and the address; the error says it in words; stopping it clears the problem", async () => {
    const a = await startAgent(`
[inputs.syslog_in]
type = "syslog"
typetag = "syslog"
listen = ["tcp://127.0.0.1:${port}"]
`);
    try {
      let h: Health = { status: 0, problems: [] };
      await until(async () => (h = await a.health()).status === 503, "/health 503");
      assert.deepEqual(h.problems, [`input syslog_in cannot listen on tcp://127.0.0.1:${port}: address already in use`]);
      const entry = await a.input("syslog_in");
      assert.equal(entry.last_error, `inputs.syslog_in: cannot listen on tcp://127.0.0.1:${port}: address already in use`);
      assert.ok((entry.restarts as number) >= 0);
      // Still a problem while it retries: the restarts do not make it look healthy in between.
      for (let i = 0; i < 20; i++) assert.equal((await a.health()).status, 503, `health check ${i} while it retries`);

      await a.action("syslog_in", "stop");
      assert.equal((await a.input("syslog_in")).state, "stopped");
      assert.deepEqual(await a.health(), { status: 200, problems: [] });
    } finally {
      await a.close();
    }
  });

  test("the port freed: the input binds on its next try and the problem clears by itself", async () => {
    const blocker = createTcpServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", () => r()));
    const freed = (blocker.address() as AddressInfo).port;
    const a = await startAgent(`
[inputs.syslog_in]
type = "syslog"
typetag = "syslog"
listen = ["tcp://127.0.0.1:${freed}"]
`);
    try {
      await until(async () => (await a.health()).status === 503, "/health 503");
      await new Promise<void>((r) => blocker.close(() => r()));
      await until(async () => (await a.health()).status === 200, "/health 200 once the port is free");
      const entry = await a.input("syslog_in");
      assert.equal(entry.state, "running");
      assert.deepEqual(entry.listening, [`tcp://127.0.0.1:${freed}`]);
    } finally {
      await a.close();
    }
  });
});

describe("disabled inputs", () => {
  test("enabled = false: state disabled, not a problem; started by hand and stopped again it is disabled once more", async () => {
    const src = await source();
    src.set((res) => res.writeHead(200, { "content-type": "application/json" }).end("[]"));
    const a = await startAgent(pollInput(src.url, "200ms", "enabled = false"));
    try {
      const entry = await a.input("feed");
      assert.equal(entry.state, "disabled");
      assert.equal(entry.problem, null);
      assert.deepEqual(await a.health(), { status: 200, problems: [] });
      assert.equal(src.requests(), 0);

      await a.action("feed", "start");
      await until(async () => typeof (await a.input("feed")).last_success === "string", "a poll of the input started by hand");
      assert.equal((await a.input("feed")).state, "running");
      await a.action("feed", "stop");
      assert.equal((await a.input("feed")).state, "disabled");
      assert.deepEqual(await a.health(), { status: 200, problems: [] });
    } finally {
      await a.close();
      await src.close();
    }
  });
});
