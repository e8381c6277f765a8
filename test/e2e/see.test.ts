// End to end with the compiled executable: `tap` shows what an input takes while it takes it,
// and `test` prints what would be sent, sends nothing, and leaves the data_dir to a later run.
// Runs when CYBEXP_E2E_BINARY names the executable (npm run test:e2e, .ci/run).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { freePort } from "../testing/ports.ts";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Receiver } from "../../scripts/receiver.ts";
import { agentFolder, Arrivals, cli, configText, referenceReceiver, settleOrFail, skip, startAgent, stopGracefully, type RunningAgent } from "../testing/e2e.ts";
import { until } from "../testing/until.ts";


const FILE_INPUT = `[inputs.logs]
type = "file"
typetag = "app-log"
paths = ["logs/*.log"]
[inputs.hand]
type = "manual"
typetag = "manual-ti"
`;

/** `cybexp-agent tap ARGS` in the agent's folder, once it says it is tapping; its output so far. */
async function startTap(dir: string, args: string[]) {
  const child = spawn(join(dir, "cybexp-agent"), ["tap", ...args], { cwd: dir, env: { PATH: "/usr/bin:/bin" } });
  let stdout = "", stderr = "";
  child.stdout.on("data", (b: Buffer) => (stdout += b));
  child.stderr.on("data", (b: Buffer) => (stderr += b));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  await until(() => stderr.includes("tapping"), "tap to start", 15_000);
  return { child, exited, stdout: () => stdout, stderr: () => stderr };
}

describe("tap (compiled executable)", { skip }, () => {
  let receiver: Receiver;
  let agent: RunningAgent;

  before(async () => {
    receiver = await referenceReceiver();
    const dir = agentFolder(configText(receiver.url, FILE_INPUT));
    mkdirSync(join(dir, "logs"));
    writeFileSync(join(dir, "logs", "app.log"), "");
    agent = await startAgent(dir);
  });
  after(async () => {
    if (agent) {
      await stopGracefully(agent);
      rmSync(agent.dir, { recursive: true, force: true });
    }
    await receiver?.close();
  });

  test("tap logs --limit 5 while lines are appended: 5 JSON lines of that input, each one of the lines, exit 0", async () => {
    const tap = await startTap(agent.dir, ["logs", "--limit", "5"]);
    const { child, exited } = tap;
    const written: string[] = [];
    const writer = setInterval(() => {
      const line = `tap line ${written.length} ${Date.now()}`;
      written.push(line);
      appendFileSync(join(agent.dir, "logs", "app.log"), line + "\n");
    }, 30);
    // A submission to another input while tapping "logs" must not show.
    await fetch(`${agent.url}/inputs/hand/events`, { method: "POST", headers: { authorization: `Bearer ${agent.token}`, "content-type": "text/plain" }, body: "not-this-input\n" });
    const code = await Promise.race([exited, new Promise<"timeout">((r) => setTimeout(() => r("timeout"), 30_000))]);
    clearInterval(writer);
    if (code === "timeout") child.kill("SIGKILL");
    assert.equal(code, 0, `tap exit (stderr: ${tap.stderr()})`);
    const lines = tap.stdout().trim().split("\n");
    assert.equal(lines.length, 5, tap.stdout());
    for (const l of lines) {
      const m = JSON.parse(l) as { input: string; event: string; ts: string };
      assert.deepEqual(Object.keys(m).sort(), ["event", "input", "ts"]);
      assert.equal(m.input, "logs");
      assert.ok(written.includes(m.event), `${m.event} is one of the appended lines`);
      assert.ok(!Number.isNaN(Date.parse(m.ts)));
    }
  });

  test("tap ends with exit 0 on Ctrl-C (SIGINT); an unknown input is exit 1 naming it", async () => {
    const { child, exited, stderr } = await startTap(agent.dir, []);
    assert.match(stderr(), /tapping every input/);
    child.kill("SIGINT");
    assert.equal(await exited, 0);
    const unknown = await cli(agent.dir, ["tap", "nosuch"]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /nosuch/);
  });

  test("a burst faster than 100 events/s: tap shows a sample and says how many it did not show", async () => {
    const tap = await startTap(agent.dir, ["logs", "--limit", "150"]);
    const { child, exited } = tap;
    const burst = Array.from({ length: 20_000 }, (_, i) => `burst ${i}`);
    appendFileSync(join(agent.dir, "logs", "app.log"), burst.join("\n") + "\n");
    await until(() => /not shown/.test(tap.stderr()), "a notice of what sampling left out", 15_000);
    child.kill("SIGINT");
    assert.equal(await exited, 0);
    const shown = tap.stdout().trim().split("\n").filter(Boolean);
    assert.ok(shown.length <= 150, `${shown.length} shown`);
    const notices = [...tap.stderr().matchAll(/tap: (\d+) events? not shown/g)].map((m) => Number(m[1]));
    assert.ok(notices.reduce((a, b) => a + b, 0) > 0, tap.stderr());
  });
});

describe("a tap client that never reads (compiled executable)", { skip }, () => {
  test("50,000 lines still arrive, each once, and the control server still answers", async () => {
    const receiver = await referenceReceiver();
    const dir = agentFolder(configText(receiver.url, FILE_INPUT));
    mkdirSync(join(dir, "logs"));
    writeFileSync(join(dir, "logs", "app.log"), "");
    const agent = await startAgent(dir);
    const { port } = new URL(agent.url);
    const stalled = connect(Number(port), "127.0.0.1");
    try {
      await new Promise<void>((r) => stalled.once("connect", () => r()));
      stalled.write(`GET /tap?rate=10000 HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${agent.token}\r\n\r\n`);
      stalled.pause();
      const arrivals = new Arrivals(receiver, "logs");
      const want = Array.from({ length: 50_000 }, (_, i) => `stalled-tap ${i} ${"x".repeat(200)}`);
      for (let i = 0; i < want.length; i += 5_000) appendFileSync(join(dir, "logs", "app.log"), want.slice(i, i + 5_000).join("\n") + "\n");
      await settleOrFail([[arrivals, want.length]], () => `every line with a stalled tap: ${agent.log().slice(-1500)}`);
      assert.deepEqual((await arrivals.lines()).sort(), want.slice().sort());
      const status = await agent.input("logs");
      assert.equal(status.events, want.length);
    } finally {
      stalled.destroy();
      await stopGracefully(agent);
      await receiver.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("tap with no daemon", { skip }, () => {
  test("exit 3", async () => {
    const dir = agentFolder(configText("http://127.0.0.1:9", FILE_INPUT));
    try {
      const ran = await cli(dir, ["tap", "--limit", "1"]);
      assert.equal(ran.code, 3, ran.stderr);
      assert.match(ran.stderr, /no daemon is running/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("test (compiled executable)", { skip }, () => {
  test("an API nothing listens on: the file's lines are printed as an upload, exit 0, the data_dir untouched; a later run delivers every line", async () => {
    const port = await freePort();
    const dir = agentFolder(configText(`http://127.0.0.1:${port}`, FILE_INPUT));
    const receiver = await referenceReceiver();
    try {
      mkdirSync(join(dir, "logs"));
      const want = Array.from({ length: 2500 }, (_, i) => `203.0.113.${i % 250} line ${i}`);
      writeFileSync(join(dir, "logs", "app.log"), want.join("\n") + "\n");
      writeFileSync(join(dir, "logs", "other.log"), "second file\n");
      const ran = await cli(dir, ["test", "logs"]);
      assert.equal(ran.code, 0, ran.stderr);
      assert.equal(existsSync(join(dir, "data")), false, `test made no data_dir: ${existsSync(join(dir, "data")) ? readdirSync(join(dir, "data")) : ""}`);
      const out = ran.stdout.split("\n");
      const headers = out.filter((l) => l.startsWith("=== upload "));
      assert.ok(headers.length >= 1);
      for (const h of headers) assert.match(h, /^=== upload input=logs name=logs orgid=org-e2e typetag=app-log timezone=UTC kind=text events=\d+$/);
      const events = out.filter((l) => l !== "" && !l.startsWith("=== upload "));
      assert.deepEqual(events.slice().sort(), [...want, "second file"].sort());
      assert.equal(headers.reduce((n, h) => n + Number(/events=(\d+)/.exec(h)![1]), 0), want.length + 1);
      assert.match(ran.stderr, /logs \[file\] read to its end; 2,?501 events/);

      // The real run afterwards: everything, to a receiver that listens.
      writeFileSync(join(dir, "agent.config.toml"), configText(receiver.url, FILE_INPUT));
      const arrivals = new Arrivals(receiver, "logs");
      const agent = await startAgent(dir);
      try {
        await settleOrFail([[arrivals, want.length + 1]], () => `every line after test: ${agent.log().slice(-1500)}`);
        assert.deepEqual((await arrivals.lines()).sort(), [...want, "second file"].sort());
      } finally {
        await stopGracefully(agent);
      }
    } finally {
      await receiver.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a listener listens for --duration; a failing poll is exit 1 with its error; an unknown input is named", async () => {
    const port = await freePort();
    const dir = agentFolder(configText(`http://127.0.0.1:${port}`, `[inputs.syslog]
type = "syslog"
typetag = "syslog"
listen = ["tcp://127.0.0.1:0"]
[inputs.feed]
type = "http_poll"
typetag = "feed"
url = "http://127.0.0.1:${port}/feed.json"
interval = "1h"
`));
    try {
      const t0 = Date.now();
      const listened = await cli(dir, ["test", "syslog", "--duration", "1500ms"]);
      const took = Date.now() - t0;
      assert.equal(listened.code, 0, listened.stderr);
      assert.ok(took >= 1500, `listened ${took} ms`);
      assert.match(listened.stderr, /syslog \[syslog\] listened; 0 events/);
      const failed = await cli(dir, ["test", "feed"]);
      assert.equal(failed.code, 1, failed.stderr);
      assert.match(failed.stderr, /feed \[http_poll\] failed: .*connection refused/);
      const unknown = await cli(dir, ["test", "nosuch"]);
      assert.equal(unknown.code, 1);
      assert.match(unknown.stderr, /no input named "nosuch"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
