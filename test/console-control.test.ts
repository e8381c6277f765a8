// The control server as a browser and a script meet it: the Host check, console logins (one-time
// codes, the session cookie, CSRF), the status stream, the tap stream, and the submission
// preview. The whole agent in-process on real sockets.
import assert from "node:assert/strict";
import { request } from "node:http";
import { after, before, describe, test } from "node:test";
import { ConsoleSessions, LOGIN_CODE_TTL_MS } from "../agent/console/sessions.ts";
import { allowedHostNames, hostAllowed, parseHostHeader } from "../agent/console/hosts.ts";
import { readSse } from "../agent/commands/sse.ts";
import { AGENT_AND_CONTROL, startTestAgent, type TestAgent } from "./testing/agent.ts";

let a: TestAgent;
before(async () => {
  a = await startTestAgent(`${AGENT_AND_CONTROL}[api]
url = "http://127.0.0.1:9"
token = "api-token-secret"
orgid = "org-test"
[inputs.desk]
type = "manual"
typetag = "manual"
[inputs.other]
type = "manual"
typetag = "other"
`);
});
after(async () => {
  await a.close();
});

/** A raw request with the Host header we choose (fetch does not let a caller set it). */
function rawGet(url: string, host: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { host, ...headers } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode!, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

async function login(): Promise<{ cookie: string; csrf: string }> {
  const { status, body } = await a.control<{ url: string; code: string }>("/console/login-code", { method: "POST" });
  assert.equal(status, 200);
  assert.match(body.url, /^http:\/\/127\.0\.0\.1:\d+\/login\?code=[\w-]{20,}$/);
  const res = await fetch(body.url, { redirect: "manual" });
  assert.equal(res.status, 303);
  assert.equal(res.headers.get("location"), "/");
  const setCookie = res.headers.get("set-cookie") ?? "";
  assert.match(setCookie, /HttpOnly/i);
  assert.match(setCookie, /SameSite=Strict/i);
  const cookie = setCookie.split(";")[0]!;
  const session = await fetch(`${a.url}/console/session`, { headers: { cookie } });
  assert.equal(session.status, 200);
  const { csrf } = (await session.json()) as { csrf: string };
  assert.ok(csrf.length >= 20);
  return { cookie, csrf };
}

describe("Host header", () => {
  test("this agent's names are answered; a foreign Host is refused on every route", async () => {
    const port = new URL(a.url).port;
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`]) assert.equal((await rawGet(`${a.url}/health`, host)).status, 200, host);
    for (const path of ["/health", "/", "/status", "/metrics"]) {
      const res = await rawGet(`${a.url}${path}`, "evil.example", { authorization: a.auth.authorization });
      assert.equal(res.status, 421, path);
      assert.match(res.body, /evil\.example/);
    }
    assert.equal((await rawGet(`${a.url}/health`, `127.0.0.1:${Number(port) + 1}`)).status, 421, "another port");
  });

  test("Host parsing and the allowed names", () => {
    assert.deepEqual(parseHostHeader("[::1]:8765"), { host: "::1", port: 8765 });
    assert.deepEqual(parseHostHeader("LocalHost."), { host: "localhost", port: null });
    assert.equal(parseHostHeader("a b"), null);
    assert.equal(parseHostHeader("user@host:1"), null);
    const names = allowedHostNames("127.0.0.1");
    assert.equal(hostAllowed("localhost:8765", names, 8765), true);
    assert.equal(hostAllowed("localhost", names, 80), true);
    assert.equal(hostAllowed("localhost", names, 8765), false);
    assert.equal(hostAllowed("127.0.0.1.nip.io:8765", names, 8765), false);
    assert.equal(hostAllowed(undefined, names, 8765), false);
  });
});

describe("console login", () => {
  test("without a session or token, data endpoints answer 401; the page itself loads with a strict CSP", async () => {
    for (const path of ["/status", "/status/stream", "/tap", "/console/session"]) assert.equal((await fetch(`${a.url}${path}`)).status, 401, path);
    const post = await fetch(`${a.url}/inputs/desk/events`, { method: "POST", body: "x" });
    assert.equal(post.status, 401);
    const page = await fetch(`${a.url}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-security-policy") ?? "", /default-src 'self'/);
    await page.body?.cancel();
  });

  test("a login code works once; the session reads data, and changes state only with its CSRF token", async () => {
    const { body } = await a.control<{ url: string }>("/console/login-code", { method: "POST" });
    const first = await fetch(body.url, { redirect: "manual" });
    assert.equal(first.status, 303);
    const again = await fetch(body.url, { redirect: "manual" });
    assert.equal(again.status, 401, "a code is used up by its first login");
    assert.match(await again.text(), /cybexp-agent console/);
    assert.equal((await fetch(`${a.url}/login?code=made-up`, { redirect: "manual" })).status, 401);

    const { cookie, csrf } = await login();
    const status = await fetch(`${a.url}/status`, { headers: { cookie } });
    assert.equal(status.status, 200);
    assert.ok(((await status.json()) as { inputs: unknown[] }).inputs.length === 2);
    const noCsrf = await fetch(`${a.url}/inputs/other/stop`, { method: "POST", headers: { cookie } });
    assert.equal(noCsrf.status, 403);
    const wrongCsrf = await fetch(`${a.url}/inputs/other/stop`, { method: "POST", headers: { cookie, "x-csrf-token": csrf + "x" } });
    assert.equal(wrongCsrf.status, 403);
    const stopped = await fetch(`${a.url}/inputs/other/stop`, { method: "POST", headers: { cookie, "x-csrf-token": csrf } });
    assert.equal(stopped.status, 200);
    const started = await fetch(`${a.url}/inputs/other/start`, { method: "POST", headers: { cookie, "x-csrf-token": csrf } });
    assert.equal(started.status, 200);
    // A session cannot mint login codes; logging out ends it.
    assert.equal((await fetch(`${a.url}/console/login-code`, { method: "POST", headers: { cookie, "x-csrf-token": csrf } })).status, 403);
    assert.equal((await fetch(`${a.url}/console/logout`, { method: "POST", headers: { cookie, "x-csrf-token": csrf } })).status, 200);
    assert.equal((await fetch(`${a.url}/status`, { headers: { cookie } })).status, 401);
  });

  test("a wrong bearer token is refused even with a valid session cookie", async () => {
    const { cookie } = await login();
    assert.equal((await fetch(`${a.url}/status`, { headers: { cookie, authorization: "Bearer wrong" } })).status, 401);
  });

  test("codes expire after two minutes; sessions are kept apart and bounded", () => {
    let now = 1_000_000;
    const s = new ConsoleSessions(() => now);
    const code = s.issueCode();
    now += LOGIN_CODE_TTL_MS + 1;
    assert.equal(s.redeem(code), null);
    const fresh = s.issueCode();
    const session = s.redeem(fresh)!;
    assert.ok(session);
    assert.equal(s.find(session.id)?.csrf, session.csrf);
    assert.equal(s.find(session.id + "x"), null);
    assert.equal(s.find(undefined), null);
    for (let i = 0; i < 100; i++) s.redeem(s.issueCode());
    assert.equal(s.find(session.id), null, "the oldest session goes when too many are open");
  });
});

describe("streams and previews", () => {
  test("GET /status/stream sends the status as server-sent events", async () => {
    const res = await fetch(`${a.url}/status/stream`, { headers: a.auth });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
    for await (const m of readSse(res.body!)) {
      assert.equal(m.event, "status");
      const s = JSON.parse(m.data) as { inputs: Array<{ name: string }>; output: unknown; spool: unknown };
      assert.deepEqual(s.inputs.map((i) => i.name).sort(), ["desk", "other"]);
      break;
    }
  });

  test("GET /tap streams what an input hands to the spool, only that input's, as {input, event, ts}", async () => {
    const res = await fetch(`${a.url}/tap?input=desk`, { headers: a.auth });
    assert.equal(res.status, 200);
    const got: Array<{ input: string; event: unknown; ts: string }> = [];
    const reading = (async () => {
      for await (const m of readSse(res.body!)) {
        if (m.event !== "message") continue;
        got.push(JSON.parse(m.data));
        if (got.length === 3) return;
      }
    })();
    assert.equal((await a.control("/inputs/other/events", { method: "POST", headers: { "content-type": "text/plain" }, body: "not tapped\n" })).status, 202);
    const posted = await a.control("/inputs/desk/events", { method: "POST", headers: { "content-type": "application/x-ndjson" }, body: '{"ip":"198.51.100.7"}\n{"ip":"198.51.100.8"}\n' });
    assert.equal(posted.status, 202);
    assert.equal((await a.control("/inputs/desk/events", { method: "POST", headers: { "content-type": "text/plain" }, body: "evil.example.com\n" })).status, 202);
    await reading;
    assert.deepEqual(got.map((m) => [m.input, m.event]), [["desk", { ip: "198.51.100.7" }], ["desk", { ip: "198.51.100.8" }], ["desk", "evil.example.com"]]);
    assert.ok(got.every((m) => !Number.isNaN(Date.parse(m.ts))));
  });

  test("tapping an input that is not configured is a 404; a bad rate a 400; a closed tap leaves no subscriber", async () => {
    const res = await a.control<{ error: string }>("/tap?input=nope");
    assert.equal(res.status, 404);
    assert.match(res.body.error, /nope/);
    assert.equal((await a.control("/tap?rate=0")).status, 400);
    const status = await fetch(`${a.url}/tap`, { headers: a.auth });
    await status.body!.cancel();
  });

  test("?preview=1 counts the events a submission would make and takes none; a bad body is the same 400 as a real post", async () => {
    const before = ((await a.control<{ inputs: Array<{ name: string; events: number }> }>("/status")).body.inputs.find((i) => i.name === "desk"))!.events;
    const ok = await a.control<{ events: number }>("/inputs/desk/events?preview=1", { method: "POST", headers: { "content-type": "text/plain" }, body: "a\nb\nc\n" });
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.body, { events: 3 });
    const bad = await a.control<{ error: string }>("/inputs/desk/events?preview=1", { method: "POST", headers: { "content-type": "application/json" }, body: "{not json" });
    const real = await a.control<{ error: string }>("/inputs/desk/events", { method: "POST", headers: { "content-type": "application/json" }, body: "{not json" });
    assert.equal(bad.status, 400);
    assert.equal(real.status, 400);
    assert.equal(bad.body.error, real.body.error);
    const after = ((await a.control<{ inputs: Array<{ name: string; events: number }> }>("/status")).body.inputs.find((i) => i.name === "desk"))!.events;
    assert.equal(after, before);
  });
});
