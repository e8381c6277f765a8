// The whole agent in-process: control server, supervisor, spool and forwarder against the
// reference receiver.
import assert from "node:assert/strict";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Agent } from "../agent/agent.ts";
import { inputPlugins } from "../plugins/index.ts";
import { createLogger } from "../agent/log.ts";
import { startReceiver, type Receiver } from "../scripts/receiver.ts";
import { until } from "./testing/until.ts";


describe("agent with control server", () => {
  let dir: string, receiver: Receiver, agent: Agent, url: string, token: string, configPath: string;

  const config = (extra = "") => `
[agent]
data_dir = "data"
[control]
listen = "127.0.0.1:0"
max_body_bytes = "64KiB"
[api]
url = "${receiver.url}"
token = "api-token"
orgid = "org-test"
timezone = "Europe/Berlin"
[api.batch]
max_wait = "50ms"
[spool]
fsync = "50ms"
[inputs.weblog]
type = "file"
typetag = "apache"
paths = ["${dir}/logs/*.log"]
[inputs.desk]
type = "manual"
typetag = "manual"
name = "analyst-desk"
${extra}`;

  const call = (method: string, path: string, init: { body?: string; auth?: string | null; type?: string } = {}) =>
    fetch(url + path, {
      method,
      body: init.body,
      headers: {
        ...(init.auth === null ? {} : { authorization: `Bearer ${init.auth ?? token}` }),
        ...(init.type ? { "content-type": init.type } : {}),
      },
    });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "agent-"));
    receiver = await startReceiver({ port: 0, hostname: "127.0.0.1", token: "api-token", keepFiles: true });
    configPath = join(dir, "agent.toml");
    writeFileSync(configPath, config());
    mkdirSync(join(dir, "logs"));
    writeFileSync(join(dir, "logs", "access.log"), "");
    agent = await Agent.start({ configPath, plugins: inputPlugins, log: createLogger("error", { write() {} }) });
    const rc = JSON.parse(readFileSync(join(dir, "data", "runningconfig"), "utf8"));
    url = rc.url;
    token = rc.token;
  });
  after(async () => {
    await agent.shutdown();
    await receiver.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("runningconfig is 0600 and names this process on loopback", () => {
    const st = statSync(join(dir, "data", "runningconfig"));
    assert.equal(st.mode & 0o777, 0o600);
    const rc = JSON.parse(readFileSync(join(dir, "data", "runningconfig"), "utf8"));
    assert.equal(rc.pid, process.pid);
    assert.match(rc.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  });

  test("/health and /metrics are open; everything else needs the token", async () => {
    const h = await call("GET", "/health", { auth: null });
    assert.equal(h.status, 200);
    assert.deepEqual(await h.json(), { status: "ok" });
    const m = await call("GET", "/metrics", { auth: null });
    assert.equal(m.status, 200);
    const text = await m.text();
    assert.match(text, /# TYPE cybexp_agent_input_events_total counter/);
    assert.match(text, /cybexp_agent_spool_bytes \d+/);
    assert.match(text, /cybexp_agent_input_events_total\{input="weblog",type="file"\} \d+/);
    assert.match(text, /cybexp_agent_output_inflight_uploads \d+/);
    for (const [method, path] of [["GET", "/status"], ["POST", "/reload"], ["POST", "/shutdown"], ["POST", "/inputs/desk/stop"]]) {
      const r = await call(method!, path!, { auth: null });
      assert.equal(r.status, 401, `${method} ${path} without a token`);
      const w = await call(method!, path!, { auth: "wrong" });
      assert.equal(w.status, 401, `${method} ${path} with a wrong token`);
    }
  });

  test("a file line and a manual post reach the API with the configured parts", async () => {
    appendFileSync(join(dir, "logs", "access.log"), '203.0.113.9 - - [27/Nov/2026:10:00:00 +0000] "GET /wp-login.php HTTP/1.1" 404 162\n');
    const r = await call("POST", "/inputs/desk/events", { body: JSON.stringify({ indicator: "198.51.100.7", type: "ip" }), type: "application/json" });
    assert.equal(r.status, 202);
    assert.deepEqual(await r.json(), { accepted: 1 });
    await until(() => receiver.uploads.length >= 2, "two uploads");
    const web = receiver.uploads.find((u) => u.name === "weblog")!;
    assert.deepEqual([web.typetag, web.orgid, web.timezone, web.filename], ["apache", "org-test", "Europe/Berlin", "weblog.txt"]);
    const desk = receiver.uploads.find((u) => u.name === "analyst-desk")!;
    assert.equal(desk.filename, "desk.ndjson");
    assert.deepEqual(JSON.parse(new TextDecoder().decode(await receiver.file(desk.seq))), { indicator: "198.51.100.7", type: "ip" });
  });

  test("a truncated JSON post is refused whole; unknown and non-manual inputs are refused", async () => {
    const before = receiver.totalLines();
    const r = await call("POST", "/inputs/desk/events", { body: '[{"a":1},{"b":2},{"c":', type: "application/json" });
    assert.equal(r.status, 400);
    assert.match(((await r.json()) as { error: string }).error, /JSON/);
    const unknown = await call("POST", "/inputs/nope/events", { body: "{}" });
    assert.equal(unknown.status, 404);
    const notManual = await call("POST", "/inputs/weblog/events", { body: "{}" });
    assert.equal(notManual.status, 400);
    const big = await call("POST", "/inputs/desk/events", { body: "x".repeat(70 * 1024), type: "text/plain" });
    assert.equal(big.status, 413);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(receiver.totalLines(), before, "nothing of the refused bodies was forwarded");
    const status = (await (await call("GET", "/status")).json()) as any;
    assert.equal(status.inputs.find((i: any) => i.name === "desk").events, 1);
  });

  test("inputs stop and start by name; /status shows the contract's fields", async () => {
    assert.equal((await call("POST", "/inputs/desk/stop")).status, 200);
    let status = (await (await call("GET", "/status")).json()) as any;
    const desk = status.inputs.find((i: any) => i.name === "desk");
    assert.equal(desk.state, "stopped");
    for (const k of ["name", "type", "state", "events", "bytes", "errors", "last_error", "last_event_at", "restarts"]) assert.ok(k in desk, k);
    for (const k of ["state", "sent_events", "sent_uploads", "retries", "dead_lettered", "last_error"]) assert.ok(k in status.output, k);
    for (const k of ["events", "bytes", "max_bytes", "oldest_event_age_s", "dropped"]) assert.ok(k in status.spool, k);
    const stopped = await call("POST", "/inputs/desk/events", { body: "hello" });
    assert.equal(stopped.status, 409);
    assert.equal((await call("POST", "/inputs/desk/start")).status, 200);
    await until(async () => {
      status = await (await call("GET", "/status")).json();
      return status.inputs.find((i: any) => i.name === "desk").state === "running";
    }, "desk running");
    assert.equal((await call("POST", "/inputs/nope/restart")).status, 404);
  });

  test("reload: an invalid file changes nothing; a valid one applies the difference", async () => {
    writeFileSync(configPath, config(`[inputs.broken]\ntype = "fiel"\ntypetag = "x"\n`));
    const bad = await call("POST", "/reload");
    assert.equal(bad.status, 400);
    const body = (await bad.json()) as { problems: string[] };
    assert.ok(body.problems.some((p) => /inputs\.broken\.type: unknown input type "fiel"/.test(p)), body.problems.join("\n"));
    writeFileSync(configPath, config(`[inputs.desk2]\ntype = "manual"\ntypetag = "manual"\n`));
    const good = await call("POST", "/reload");
    assert.equal(good.status, 200);
    const result = (await good.json()) as any;
    assert.deepEqual(result.started, ["desk2"]);
    assert.deepEqual(result.unchanged.sort(), ["desk", "weblog"]);
  });

  test("shutdown is graceful and removes runningconfig", async () => {
    const r = await call("POST", "/shutdown");
    assert.equal(r.status, 200);
    await agent.done;
    assert.equal(existsSync(join(dir, "data", "runningconfig")), false);
  });
});
