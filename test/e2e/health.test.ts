// Input health seen from outside: the compiled agent polling a source that answers 403 every
// second, through GET /health and /status; healthy again once the source answers, and an
// input stopped by the operator is no problem. A syslog listener on a taken port is named.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { createServer as createHttpServer, type ServerResponse } from "node:http";
import { createServer as createTcpServer, type AddressInfo } from "node:net";
import { until } from "../testing/until.ts";
import { cli, health, healthUntil, referenceReceiver, runAgent, skip, stopGracefully } from "../testing/e2e.ts";


describe("input health (compiled executable)", { skip }, () => {
  test("an http_poll source answering 403 every second: /health 503 naming the input within 15 s; 200 once it answers; stopped by the operator it is no problem", async () => {
    let answer = (res: ServerResponse) => void res.writeHead(403, { "content-type": "text/plain" }).end("forbidden");
    let requests = 0;
    const src = createHttpServer((_req, res) => {
      requests++;
      answer(res);
    });
    await new Promise<void>((r) => src.listen(0, "127.0.0.1", () => r()));
    const port = (src.address() as AddressInfo).port;
    const receiver = await referenceReceiver();
    const agent = await runAgent(
      receiver,
      `[inputs.iocs]
type = "http_poll"
typetag = "intel"
url = "http://127.0.0.1:${port}/iocs.json"
interval = "1s"
`,
    );
    try {
      const t0 = Date.now();
      const failing = await healthUntil(agent.url, (h) => h.status === 503, "GET /health 503", 15_000);
      const took = Date.now() - t0;
      assert.equal(failing.body.status, "degraded");
      const problem = failing.body.problems?.find((p) => p.startsWith("input iocs "));
      assert.ok(problem, `a problem naming the input: ${JSON.stringify(failing.body)}`);
      // A problem from the third failed poll on; a slow look at /health may find a fourth already.
      const m = new RegExp(`^input iocs failed its last (\\d+) polls: HTTP 403 from http://127\\.0\\.0\\.1:${port}/iocs\\.json`).exec(problem);
      assert.ok(m, `the problem names the failed polls and the answer: ${problem}`);
      assert.ok(Number(m[1]) >= 3 && Number(m[1]) <= requests, `failed polls counted: ${m[1]} of ${requests} requests`);
      process.stderr.write(`/health 503 ${took} ms after the agent answered, after ${requests} polls\n`);
      const entry = await agent.input("iocs");
      assert.equal(entry.state, "running");
      assert.equal(entry.problem, problem.slice("input iocs ".length));
      assert.equal(entry.last_success, null);

      answer = (res) => void res.writeHead(200, { "content-type": "application/json" }).end('[{"id":1,"ioc":"198.51.100.7"}]');
      await healthUntil(agent.url, (h) => h.status === 200, "GET /health 200 once the source answers", 15_000);
      const ok = await agent.input("iocs");
      assert.equal(ok.problem, null);
      assert.equal(typeof ok.last_success, "string");
      await until(async () => typeof (await agent.input("iocs")).next_poll === "string", "the next poll time in /status");

      // Failing again, then stopped by the operator: /health is green, the input "stopped".
      answer = (res) => void res.writeHead(403).end("forbidden");
      await healthUntil(agent.url, (h) => h.status === 503, "GET /health 503 again", 15_000);
      const stopped = await cli(agent.dir, ["stop", "iocs", "-c", "agent.config.toml"]);
      assert.equal(stopped.code, 0, stopped.stderr);
      assert.equal((await agent.input("iocs")).state, "stopped");
      assert.deepEqual((await health(agent.url)).body, { status: "ok" });
    } finally {
      await stopGracefully(agent).finally(async () => {
        await receiver.close();
        src.closeAllConnections?.();
        src.close();
      });
    }
  });

  test("a syslog input on a port already taken: /health and the log name the input and the address", async () => {
    const taken = createTcpServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", () => r()));
    const port = (taken.address() as AddressInfo).port;
    const receiver = await referenceReceiver();
    const agent = await runAgent(
      receiver,
      `[inputs.syslog_in]
type = "syslog"
typetag = "syslog"
listen = ["tcp://127.0.0.1:${port}"]
[inputs.off]
type = "syslog"
typetag = "syslog"
listen = ["udp://127.0.0.1:0"]
enabled = false
`,
    );
    try {
      const h = await healthUntil(agent.url, (x) => x.status === 503, "GET /health 503", 15_000);
      assert.deepEqual(h.body.problems, [`input syslog_in cannot listen on tcp://127.0.0.1:${port}: address already in use`]);
      await until(() => agent.log().includes(`inputs.syslog_in: cannot listen on tcp://127.0.0.1:${port}: address already in use`), "the log line", 10_000);
      assert.doesNotMatch(agent.log(), /EADDRINUSE/);
      assert.equal((await agent.input("off")).state, "disabled");
    } finally {
      await stopGracefully(agent).finally(async () => {
        await receiver.close();
        taken.close();
      });
    }
  });
});
