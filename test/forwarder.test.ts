// The forwarder against the real spool (in a temp dir) and the reference receiver over
// real sockets; a few special answers come from small servers made with agent/serve.ts.
import { afterEach, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Forwarder, parseRetryAfter, routeKey, type ApiOptions, type BatchLimits, type RouteMeta } from "../agent/forwarder.ts";
import { silentLogger } from "../agent/log.ts";
import { serve, type Served } from "../agent/serve.ts";
import { Spool } from "../agent/spool.ts";
import { startReceiver, type Receiver } from "../scripts/receiver.ts";
import { until } from "./until.ts";

const untilNamed = (what: string, cond: () => boolean, ms = 5000) => until(cond, what, ms);

const TOKEN = "secret-api-token";
const dec = new TextDecoder();

const AUTH: RouteMeta = { input: "auth", name: "Auth Log", orgid: "org1", typetag: "syslog", timezone: "UTC" };
const COWRIE: RouteMeta = { input: "cowrie", name: "cowrie", orgid: "org2", typetag: "cowrie", timezone: "US/Pacific" };

let dir: string;
let spool: Spool;
const cleanups: Array<() => Promise<unknown> | unknown> = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "forwarder-test-"));
  spool = await Spool.open({ dir: join(dir, "spool"), maxBytes: 64 << 20, whenFull: "block", fsync: "never", log: silentLogger });
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await spool.close();
  await rm(dir, { recursive: true, force: true });
});

async function receiver(opts: Parameters<typeof startReceiver>[0] = {}): Promise<Receiver> {
  const r = await startReceiver({ token: TOKEN, keepFiles: true, ...opts });
  cleanups.push(() => r.close());
  return r;
}

/** A server with hand-written answers; records when each request arrived. */
async function special(answer: (n: number, req: Request) => Response | Promise<Response>) {
  const arrivals: number[] = [];
  const bodies: string[] = [];
  const server: Served = await serve(async (req) => {
    const n = arrivals.push(Date.now()) - 1;
    bodies.push(await req.text());
    return answer(n, req);
  }, { hostname: "127.0.0.1", port: 0 });
  cleanups.push(() => server.close());
  return { url: `http://127.0.0.1:${server.port}`, arrivals, bodies };
}

function api(url: string, over: Partial<ApiOptions> = {}): ApiOptions {
  return { url, token: TOKEN, timeoutMs: 5000, concurrency: 2, tlsVerify: true, ...over };
}

function forwarder(apiOpts: ApiOptions, limits: Partial<BatchLimits> = {}, retry = {}): Forwarder {
  const f = new Forwarder({
    spool,
    api: apiOpts,
    batchFor: () => ({ maxEvents: 1000, maxBytes: 1 << 20, maxWaitMs: 20, ...limits }),
    deadLetterDir: join(dir, "dead-letter"),
    log: silentLogger,
    retry: { baseMs: 20, capMs: 100, unauthorizedMs: 100, ...retry },
  });
  cleanups.push(() => f.stop(1000));
  return f;
}


function events(prefix: string, n: number, width = 0): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix} ${i}`.padEnd(width, "."));
}

async function filesOf(r: Receiver, meta: RouteMeta): Promise<string[]> {
  const out: string[] = [];
  for (const u of r.uploads) if (u.name === meta.name) out.push(dec.decode(await r.file(u.seq)));
  return out;
}

describe("forwarder", () => {
  test("uploads carry the route's parts, one input per upload, files as .txt / .ndjson", async () => {
    const r = await receiver();
    const text = events("sshd: failed password", 30);
    const json = Array.from({ length: 20 }, (_, i) => JSON.stringify({ eventid: "cowrie.login.failed", n: i }));
    await spool.append(routeKey(AUTH), "text", text.slice(0, 15));
    await spool.append(routeKey(COWRIE), "json", json);
    await spool.append(routeKey(AUTH), "text", text.slice(15));
    const f = forwarder(api(r.url));
    f.start();
    await untilNamed("all events", () => r.totalLines() === 50);

    const authUploads = r.uploads.filter((u) => u.name === AUTH.name);
    const cowrieUploads = r.uploads.filter((u) => u.name === COWRIE.name);
    assert.equal(authUploads.length + cowrieUploads.length, r.uploads.length);
    for (const u of authUploads) {
      assert.deepEqual([u.orgid, u.typetag, u.timezone, u.filename, u.contentType], ["org1", "syslog", "UTC", "auth.txt", "text/plain"]);
    }
    for (const u of cowrieUploads) {
      assert.deepEqual(
        [u.orgid, u.typetag, u.timezone, u.filename, u.contentType],
        ["org2", "cowrie", "US/Pacific", "cowrie.ndjson", "application/x-ndjson"],
      );
    }
    assert.equal((await filesOf(r, AUTH)).join(""), text.map((l) => l + "\n").join(""));
    assert.equal((await filesOf(r, COWRIE)).join(""), json.map((l) => l + "\n").join(""));
    await untilNamed("acks", () => spool.stats().events === 0);
    const st = f.status();
    assert.deepEqual(
      [st.state, st.sent_events, st.sent_uploads, st.dead_lettered, st.last_error],
      ["ok", 50, r.uploads.length, 0, null],
    );
    assert.deepEqual(f.metrics().per_input.get("cowrie"), { events: 20, uploads: cowrieUploads.length, bytes: cowrieUploads.reduce((n, u) => n + u.bytes, 0) });
  });

  test("batches hold whole records up to max_events, and a backlog past max_wait still combines", async () => {
    const r = await receiver();
    // Seven records of 3 events: 3+3+3 fits in 10, a fourth record would not.
    for (let i = 0; i < 7; i++) await spool.append(routeKey(AUTH), "text", events(`r${i}`, 3));
    // A record larger than the limit goes alone.
    await spool.append(routeKey(COWRIE), "json", events("{}", 25).map((_, i) => `{"i":${i}}`), { maxEventsPerRecord: 25 });
    // max_wait 0: every record is overdue when read, as after an outage.
    const f = forwarder(api(r.url), { maxEvents: 10, maxWaitMs: 0 });
    f.start();
    await untilNamed("all events", () => r.totalLines() === 46);
    assert.deepEqual(r.uploads.filter((u) => u.name === AUTH.name).map((u) => u.lines), [9, 9, 3]);
    assert.deepEqual(r.uploads.filter((u) => u.name === COWRIE.name).map((u) => u.lines), [25]);
  });

  test("a backlog larger than one spool read combines into full uploads across reads", async () => {
    const r = await receiver({ keepFiles: false });
    // 8000 small records, about 2.5 MB: more than the forwarder reads from the spool at once.
    const route = routeKey(AUTH);
    const three = events("backlog", 3, 100);
    for (let i = 0; i < 8000; i++) await spool.append(route, "text", three);
    const f = forwarder(api(r.url), { maxEvents: 999, maxWaitMs: 0 });
    f.start();
    await untilNamed("all events", () => f.status().sent_events === 24_000, 20_000);
    const lines = r.uploads.map((u) => u.lines);
    assert.deepEqual(lines, [...Array(24).fill(999), 24]);
  });

  test("batches are cut at max_bytes", async () => {
    const r = await receiver();
    // 101-byte records (100 characters + newline): nine fit in 1000 bytes.
    await spool.append(routeKey(AUTH), "text", events("e", 20, 100), { maxEventsPerRecord: 1 });
    const f = forwarder(api(r.url), { maxBytes: 1000, maxWaitMs: 50 });
    f.start();
    await untilNamed("all events", () => r.totalLines() === 20);
    assert.deepEqual(r.uploads.map((u) => u.lines), [9, 9, 2]);
    assert.ok(r.uploads.every((u) => u.bytes <= 1000));
  });

  test("a partial batch waits for max_wait after its first event", async () => {
    const r = await receiver();
    const f = forwarder(api(r.url), { maxEvents: 1000, maxWaitMs: 400 });
    f.start();
    const t0 = Date.now();
    await spool.append(routeKey(AUTH), "text", events("a", 3));
    await new Promise((res) => setTimeout(res, 100));
    await spool.append(routeKey(AUTH), "text", events("b", 2));
    await untilNamed("the partial batch", () => r.uploads.length === 1);
    const waited = r.uploads[0]!.receivedAt - t0;
    assert.ok(waited >= 380, `sent after ${waited} ms`);
    assert.equal(r.uploads[0]!.lines, 5);
  });

  test("503 for a while: retried with backoff, nothing lost, back to ok", async () => {
    const r = await receiver();
    r.failFor(400);
    for (let i = 0; i < 5; i++) await spool.append(routeKey(AUTH), "text", events(`batch${i}`, 10));
    const f = forwarder(api(r.url, { concurrency: 4 }), { maxEvents: 10, maxWaitMs: 0 });
    f.start();
    await untilNamed("retrying state", () => f.status().state === "retrying");
    assert.match(f.status().last_error!, /^HTTP 503 from http:\/\/127\.0\.0\.1:\d+\/raw: /);
    await untilNamed("all events", () => r.totalLines() === 50);
    const all = (await filesOf(r, AUTH)).join("").split("\n").filter(Boolean).sort();
    assert.deepEqual(all, Array.from({ length: 5 }, (_, i) => events(`batch${i}`, 10)).flat().sort());
    await untilNamed("acks", () => spool.stats().events === 0);
    const st = f.status();
    assert.equal(st.state, "ok");
    assert.ok(st.retries > 0);
    assert.equal(st.sent_events, 50);
    assert.ok(r.rejected > 0);
  });

  test("while the API fails only one upload at a time probes it", async () => {
    let failing = true;
    let inflight = 0;
    let maxAfterFailure = 0;
    let sawFailure = false;
    const s = await special(async () => {
      const counted = sawFailure && failing;
      if (counted) maxAfterFailure = Math.max(maxAfterFailure, ++inflight);
      await new Promise((res) => setTimeout(res, 30));
      if (counted) inflight--;
      if (failing) {
        sawFailure = true;
        return new Response("down", { status: 502 });
      }
      return new Response('{"message":"File uploaded successfully!"}', { status: 201 });
    });
    for (let i = 0; i < 8; i++) await spool.append(routeKey(AUTH), "text", events(`b${i}`, 5));
    const f = forwarder(api(s.url, { concurrency: 4 }), { maxEvents: 5, maxWaitMs: 0 });
    f.start();
    await untilNamed("several probes", () => s.arrivals.length >= 8);
    failing = false;
    await untilNamed("delivery", () => f.status().sent_events === 40);
    assert.equal(maxAfterFailure, 1);
  });

  test("Retry-After is honoured", async () => {
    const s = await special((n) =>
      n === 0
        ? new Response('{"message":"slow down"}', { status: 429, headers: { "retry-after": "1" } })
        : new Response('{"message":"File uploaded successfully!"}', { status: 201 }),
    );
    await spool.append(routeKey(AUTH), "text", events("x", 3));
    const f = forwarder(api(s.url), { maxWaitMs: 0 });
    f.start();
    await untilNamed("delivery", () => f.status().sent_events === 3);
    assert.equal(s.arrivals.length, 2);
    const gap = s.arrivals[1]! - s.arrivals[0]!;
    assert.ok(gap >= 950, `retried after ${gap} ms`);
  });

  test("Retry-After values: seconds, HTTP date, garbage", () => {
    const now = Date.parse("2024-05-01T12:00:00Z");
    assert.equal(parseRetryAfter("120", now), 120_000);
    assert.equal(parseRetryAfter("Wed, 01 May 2024 12:00:30 GMT", now), 30_000);
    assert.equal(parseRetryAfter("Wed, 01 May 2024 11:00:00 GMT", now), 0);
    assert.equal(parseRetryAfter("soon", now), undefined);
    assert.equal(parseRetryAfter(null, now), undefined);
  });

  test("a timeout or a network error is retried", async () => {
    const s = await special(async (n) => {
      if (n === 0) await new Promise((res) => setTimeout(res, 500));
      return new Response('{"message":"File uploaded successfully!"}', { status: 201 });
    });
    await spool.append(routeKey(AUTH), "text", events("t", 4));
    // Nothing listens on the first URL: connection refused until the config points elsewhere.
    const closed = await serve(() => new Response(""), { hostname: "127.0.0.1", port: 0 });
    await closed.close();
    const f = forwarder(api(`http://127.0.0.1:${closed.port}`, { timeoutMs: 200 }), { maxWaitMs: 0 });
    f.start();
    await untilNamed("network error", () => /^network error posting to /.test(f.status().last_error ?? ""));
    assert.equal(f.status().state, "retrying");
    f.setApi(api(s.url, { timeoutMs: 200 }));
    await untilNamed("delivery", () => f.status().sent_events === 4);
    assert.match(f.status().last_error!, /^timeout after 200 ms posting to /);
    assert.ok(s.arrivals.length >= 2);
  });

  test("a redirect is not followed (it would turn the POST into a GET) but reported and retried", async () => {
    const methods: string[] = [];
    const s = await special((n, req) => {
      methods.push(`${req.method} ${new URL(req.url).pathname}`);
      return n === 0
        ? new Response("", { status: 301, headers: { location: "https://api.example/raw" } })
        : new Response('{"message":"File uploaded successfully!"}', { status: 201 });
    });
    await spool.append(routeKey(AUTH), "text", events("r", 2));
    const f = forwarder(api(s.url), { maxWaitMs: 0 });
    f.start();
    await untilNamed("delivery", () => f.status().sent_events === 2);
    assert.deepEqual(methods, ["POST /raw", "POST /raw"]);
    assert.match(f.status().last_error!, /^HTTP 301 from .* \(redirected to https:\/\/api\.example\/raw; set \[api\] url/);
  });

  test("413 splits the batch by records, then a record by lines; a lone oversized event goes to dead letters", async () => {
    const r = await receiver({ maxBodyBytes: 1500 });
    // Four records of ten 50-byte events: 2 KB in one batch, far over the limit with the parts.
    for (let i = 0; i < 4; i++) await spool.append(routeKey(AUTH), "text", events(`rec${i}`, 10, 50));
    // One record of 24 events (1.2 KB + parts): must be split inside the record.
    await spool.append(routeKey(COWRIE), "json", Array.from({ length: 24 }, (_, i) => JSON.stringify({ i, pad: "p".repeat(40) })), { maxEventsPerRecord: 100 });
    const big = "B".repeat(3000);
    await spool.append(routeKey({ ...AUTH, input: "big", name: "big" }), "text", [big]);
    const f = forwarder(api(r.url), { maxWaitMs: 0 });
    f.start();
    await untilNamed("delivery and the dead letter", () => r.totalLines() === 64 && f.status().dead_lettered === 1);
    assert.equal((await filesOf(r, AUTH)).join("").split("\n").filter(Boolean).length, 40);
    const cowrie = (await filesOf(r, COWRIE)).join("").split("\n").filter(Boolean).map((l) => JSON.parse(l).i);
    assert.deepEqual(cowrie.sort((a, b) => a - b), Array.from({ length: 24 }, (_, i) => i));
    await untilNamed("acks", () => spool.stats().events === 0);
    const dead = await readdir(join(dir, "dead-letter"));
    const txt = dead.find((n) => n.endsWith(".txt"))!;
    assert.match(txt, /^\d{4}-\d\d-\d\dT[\d-]+Z-big-\d+\.txt$/);
    assert.equal(await readFile(join(dir, "dead-letter", txt), "utf8"), big + "\n");
    const info = JSON.parse(await readFile(join(dir, "dead-letter", txt.replace(/\.txt$/, ".json")), "utf8"));
    assert.equal(info.status, 413);
    assert.equal(info.input, "big");
  });

  test("400 sends the upload to dead letters with the API's answer, and goes on", async () => {
    const r = await receiver();
    const answer = '{"message":"Invalid \'orgid\'=org1!"}';
    r.failNext(1, 400, answer);
    await spool.append(routeKey(COWRIE), "json", ['{"a":1}', '{"b":2}']);
    const f = forwarder(api(r.url), { maxWaitMs: 0 });
    f.start();
    await untilNamed("dead letter", () => f.status().dead_lettered === 1);
    await untilNamed("ack", () => spool.stats().events === 0);
    const files = (await readdir(join(dir, "dead-letter"))).sort();
    assert.equal(files.length, 2);
    const [json, ndjson] = files;
    assert.match(ndjson!, /-cowrie-\d+\.ndjson$/);
    assert.equal(json, ndjson!.replace(/\.ndjson$/, ".json"));
    assert.equal(await readFile(join(dir, "dead-letter", ndjson!), "utf8"), '{"a":1}\n{"b":2}\n');
    const info = JSON.parse(await readFile(join(dir, "dead-letter", json!), "utf8"));
    assert.deepEqual([info.status, info.answer, info.input, info.name, info.orgid, info.typetag, info.timezone], [400, answer, "cowrie", "cowrie", "org2", "cowrie", "US/Pacific"]);
    assert.match(f.status().last_error!, /^HTTP 400 from /);

    await spool.append(routeKey(COWRIE), "json", ['{"c":3}']);
    await untilNamed("next upload", () => f.status().sent_events === 1);
    assert.equal(r.totalLines(), 1);
    assert.equal(f.status().state, "ok");
  });

  test("401: unauthorized, data kept and retried; delivered once the API accepts the token", async () => {
    const r = await receiver({ token: "the-right-token" });
    await spool.append(routeKey(AUTH), "text", events("u", 6));
    const f = forwarder(api(r.url), { maxWaitMs: 0 });
    f.start();
    await untilNamed("unauthorized", () => f.status().state === "unauthorized");
    const refusedBefore = r.rejected;
    await untilNamed("a retry", () => r.rejected >= refusedBefore + 2);
    assert.equal(r.uploads.length, 0);
    assert.equal(spool.stats().events, 6);
    assert.match(f.status().last_error!, /^HTTP 401 from .*Invalid\/missing token in auth header!/);
    r.setToken(TOKEN);
    await untilNamed("delivery", () => f.status().sent_events === 6);
    assert.equal(r.totalLines(), 6);
    assert.equal(f.status().state, "ok");
  });

  test("401 then a new token from a config reload: delivered at once; the token never shows in errors", async () => {
    const good = "fixed-token";
    const s = await special((_, req) => {
      const auth = req.headers.get("authorization") ?? "";
      // A careless API that echoes the credentials it refused.
      if (auth !== `Bearer ${good}`) return new Response(`bad credentials: ${auth}`, { status: 403 });
      return new Response('{"message":"File uploaded successfully!"}', { status: 201 });
    });
    await spool.append(routeKey(AUTH), "text", events("v", 2));
    const f = forwarder(api(s.url), { maxWaitMs: 0 }, { unauthorizedMs: 60_000 });
    f.start();
    await untilNamed("unauthorized", () => f.status().state === "unauthorized");
    assert.match(f.status().last_error!, /^HTTP 403 from .*bad credentials: Bearer \*\*\*$/);
    assert.ok(!f.status().last_error!.includes(TOKEN));
    f.setApi(api(s.url, { token: good }));
    await untilNamed("delivery", () => f.status().sent_events === 2, 2000);
    assert.equal(f.status().state, "ok");
  });

  test("stop() aborts uploads in flight after the deadline and releases unsent records to the spool", async () => {
    // Answers only after the test is over (Deno's server does not notice the client leaving).
    let answer!: () => void;
    const answered = new Promise<void>((res) => (answer = res));
    const s = await special(async () => {
      await answered;
      return new Response("", { status: 500 });
    });
    cleanups.push(() => answer());
    for (let i = 0; i < 3; i++) await spool.append(routeKey(AUTH), "text", events(`s${i}`, 10));
    const f = forwarder(api(s.url, { concurrency: 1 }), { maxEvents: 10, maxWaitMs: 0 });
    f.start();
    await untilNamed("an upload on the wire", () => s.arrivals.length === 1);
    const t0 = Date.now();
    await f.stop(200);
    assert.ok(Date.now() - t0 < 2000);
    assert.equal(f.status().sent_events, 0);
    // Everything is readable again, and a new forwarder delivers all of it.
    const r = await receiver();
    const g = forwarder(api(r.url), { maxEvents: 10, maxWaitMs: 0 });
    g.start();
    await untilNamed("delivery", () => r.totalLines() === 30);
    await untilNamed("acks", () => spool.stats().events === 0);
  });
});
