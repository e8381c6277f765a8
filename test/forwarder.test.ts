// The forwarder against the real spool (in a temp dir) and the reference receiver over
// real sockets; a few special answers come from small servers made with agent/serve.ts.
import { afterEach, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BatchLimits } from "../agent/config.ts";
import { Forwarder, routeKey, type ForwarderOptions, type RetryOptions, type RouteMeta } from "../agent/forwarder.ts";
import { CybexApiTransport, type ApiOptions } from "../agent/output/http.ts";
import { parseRetryAfter } from "../agent/backoff.ts";
import { silentLogger } from "../agent/log.ts";
import { serve, type Served } from "../agent/serve.ts";
import { Spool } from "../agent/spool/index.ts";
import { startReceiver, type Receiver } from "../scripts/receiver.ts";
import { until } from "./testing/until.ts";

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

/** A forwarder to the Cybex-P API; setApi() changes its [api] settings as a config reload does. */
function forwarder(
  apiOpts: ApiOptions,
  limits: Partial<BatchLimits> = {},
  retry: RetryOptions = {},
  more: Partial<ForwarderOptions> = {},
): Forwarder & { setApi(next: ApiOptions): void } {
  const output = new CybexApiTransport(apiOpts, silentLogger);
  const f = new Forwarder({
    spool,
    output,
    batchFor: () => ({ maxEvents: 1000, maxBytes: 1 << 20, maxWaitMs: 20, ...limits }),
    deadLetterDir: join(dir, "dead-letter"),
    log: silentLogger,
    ...more,
    retry: { baseMs: 20, capMs: 100, unauthorizedMs: 100, ...retry },
  });
  cleanups.push(() => f.stop(1000));
  return Object.assign(f, {
    setApi(next: ApiOptions) {
      const changed = next.url !== output.options.url || next.token !== output.options.token;
      output.setApi(next);
      if (changed) f.retryNow();
    },
  });
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

/** Regular files in `path`: their names (sorted) and bytes. */
async function folder(path: string): Promise<{ names: string[]; bytes: number }> {
  const names = (await readdir(path)).sort();
  let bytes = 0;
  for (const n of names) bytes += (await stat(join(path, n))).size;
  return { names, bytes };
}

/** The requests a hand-written server saw: what probes and uploads carried. */
interface Seen {
  method: string;
  path: string;
  auth: string | null;
  at: number;
}

/** A TCP relay on 127.0.0.1 to `target`; while down it drops every connection at once, as an
 *  unreachable API does, and notes when each came. */
async function relay(target: string) {
  const port = Number(new URL(target).port);
  let down = true;
  const open = new Set<Socket>();
  const downConnections: number[] = [];
  const server = createServer((sock) => {
    if (down) {
      downConnections.push(Date.now());
      sock.destroy();
      return;
    }
    const upstream = connect(port, "127.0.0.1");
    for (const s of [sock, upstream]) {
      open.add(s);
      s.on("close", () => open.delete(s));
    }
    sock.on("error", () => upstream.destroy());
    upstream.on("error", () => sock.destroy());
    sock.pipe(upstream).pipe(sock);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const address = server.address() as { port: number };
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of open) s.destroy();
        server.close(() => r());
      }),
  );
  return {
    url: `http://127.0.0.1:${address.port}`,
    downConnections,
    setDown(v: boolean) {
      down = v;
      if (v) for (const s of open) s.destroy();
    },
  };
}

/** Backoff pinned near a minute, probes every 150 ms: without a probe nothing is retried for ~59 s. */
const LONG_BACKOFF: RetryOptions = { baseMs: 60_000, capMs: 60_000, random: () => 0.99, probeAfterMs: 1000, probeIntervalMs: 150, probeTimeoutMs: 1000 };

/** Mounting a tiny tmpfs for a real ENOSPC needs root with CAP_SYS_ADMIN; elsewhere that test is skipped. */
function mountTmpfs(path: string, size: string): boolean {
  return spawnSync("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", path], { stdio: "ignore" }).status === 0;
}
function unmount(path: string): void {
  spawnSync("umount", [path], { stdio: "ignore" });
}
const canMount = await (async () => {
  const probe = await mkdtemp(join(tmpdir(), "forwarder-mount-"));
  const ok = mountTmpfs(probe, "64k");
  if (ok) unmount(probe);
  await rm(probe, { recursive: true, force: true });
  return ok;
})();

describe("forwarder: failing output, bounded dead letters, probes", () => {
  test("an API rejecting everything: failing within a few uploads, ok once uploads succeed again, then last_error is cleared", async () => {
    const r = await receiver();
    r.failFor(600_000, 400);
    for (let i = 0; i < 6; i++) await spool.append(routeKey(AUTH), "text", events(`bad${i}`, 5));
    const f = forwarder(api(r.url), { maxEvents: 5, maxWaitMs: 0 }, { lastErrorKeepMs: 300 });
    f.start();
    await untilNamed("failing", () => f.status().state === "failing");
    const st = f.status();
    assert.ok(st.dead_lettered >= 3, `failing after ${st.dead_lettered} dead letters`);
    assert.match(st.last_error!, /^the API rejected \d+ of the last \d+ uploads \(moved to dead letters\); last error: HTTP 400 from http:\/\/127\.0\.0\.1:\d+\/raw: /);
    await untilNamed("all six dead-lettered", () => f.status().dead_lettered === 6 && spool.stats().events === 0);
    const rejectedAt = f.status().last_error_at!;
    assert.ok(Math.abs(Date.now() - Date.parse(rejectedAt)) < 10_000, `last_error_at ${rejectedAt}`);
    assert.equal(f.status().state, "failing");

    r.failFor(0);
    for (let i = 0; i < 6; i++) await spool.append(routeKey(AUTH), "text", events(`good${i}`, 5));
    await untilNamed("ok again", () => f.status().state === "ok");
    await untilNamed("all delivered", () => f.status().sent_events === 30);
    assert.equal(f.status().state, "ok");
    await untilNamed("last_error cleared", () => f.status().last_error === null);
    assert.ok(Date.now() - Date.parse(rejectedAt) >= 300, "kept in view for lastErrorKeepMs");
    assert.equal(f.status().last_error_at, null);
    assert.equal(f.status().dead_lettered, 6);
  });

  test("one rejection among accepted uploads does not make the output failing", async () => {
    const r = await receiver();
    const f = forwarder(api(r.url, { concurrency: 1 }), { maxEvents: 5, maxWaitMs: 0 });
    f.start();
    for (let i = 0; i < 8; i++) {
      // Two of every five uploads rejected: a bad input among good ones.
      if (i % 5 === 1 || i % 5 === 3) r.failNext(1, 400);
      await spool.append(routeKey(AUTH), "text", events(`mix${i}`, 5));
      await untilNamed(`upload ${i}`, () => f.status().sent_uploads + f.status().dead_lettered === i + 1);
      assert.equal(f.status().state, "ok", `after upload ${i}`);
    }
    assert.equal(f.status().dead_lettered, 3);
  });

  test("dead letters are bounded by max_bytes: the oldest removed and counted, what is there at start counted and trimmed", async () => {
    const dl = join(dir, "dead-letter");
    await mkdir(dl, { recursive: true });
    // Ten dead letters of an earlier run, 1100 bytes each.
    for (let i = 0; i < 10; i++) {
      const base = join(dl, `2000-01-01T00-00-0${i}-000Z-old-${i}`);
      await writeFile(`${base}.txt`, "x".repeat(1000));
      await writeFile(`${base}.json`, "y".repeat(100));
    }
    const r = await receiver();
    r.failFor(600_000, 400);
    const f = forwarder(api(r.url, { concurrency: 1 }), { maxEvents: 5, maxWaitMs: 0 }, {}, { deadLetterDir: dl, deadLetterMaxBytes: 8000 });
    f.start();
    // 11000 bytes found: the three oldest go at once.
    await untilNamed("the start-up scan", () => f.status().dead_letter_removed === 3);
    assert.equal(f.status().dead_letter_bytes, 7700);
    assert.equal((await folder(dl)).names[0], "2000-01-01T00-00-03-000Z-old-3.json");

    const records = Array.from({ length: 20 }, (_, i) => events(`rec${i}`, 5, 100));
    for (const rec of records) await spool.append(routeKey(AUTH), "text", rec);
    await untilNamed("twenty dead letters", () => f.status().dead_lettered === 20 && spool.stats().events === 0);
    const { names, bytes } = await folder(dl);
    const st = f.status();
    assert.ok(bytes <= 8000, `the folder holds ${bytes} bytes`);
    assert.equal(st.dead_letter_bytes, bytes);
    assert.ok(!names.some((n) => n.includes("-old-")), "the earlier run's dead letters went first");
    const kept = names.filter((n) => n.endsWith(".txt"));
    assert.equal(names.length, kept.length * 2, "each body with its .json");
    assert.equal(st.dead_letter_removed, 30 - kept.length);
    assert.ok(kept.length >= 3, `${kept.length} kept`);
    // What stays is the newest: the last records, in order.
    const contents = await Promise.all(kept.map((n) => readFile(join(dl, n), "utf8")));
    assert.deepEqual(contents, records.slice(20 - kept.length).map((rec) => rec.map((l) => l + "\n").join("")));

    // A lower bound from a config reload applies at once.
    await f.setDeadLetterMaxBytes(2500);
    const smaller = await folder(dl);
    assert.ok(smaller.bytes <= 2500 && smaller.bytes > 0, `the folder holds ${smaller.bytes} bytes`);
    assert.equal(f.status().dead_letter_bytes, smaller.bytes);
    assert.equal(f.status().dead_letter_removed, 30 - smaller.names.length / 2);
    assert.equal(smaller.names.at(-1), names.at(-1), "the newest stays");
  });

  test("a dead letter that cannot be written keeps the upload in the spool and retries it; written once the folder can be made", async () => {
    const r = await receiver();
    r.failFor(600_000, 400);
    const blocker = join(dir, "blocker");
    await writeFile(blocker, "a regular file where the dead-letter folder's parent should be\n");
    await spool.append(routeKey(COWRIE), "json", ['{"a":1}', '{"b":2}']);
    const f = forwarder(api(r.url), { maxWaitMs: 0 }, {}, { deadLetterDir: join(blocker, "dead-letter") });
    f.start();
    await untilNamed("retried uploads", () => r.rejected >= 3 && /^cannot write/.test(f.status().last_error ?? ""));
    const st = f.status();
    assert.match(st.last_error!, /^cannot write dead letter in \S+\/blocker\/dead-letter: .*; the upload stays in the spool \(HTTP 400 from /);
    assert.equal(st.dead_lettered, 0);
    assert.notEqual(st.state, "ok");
    assert.equal(spool.stats().events, 2);

    await rm(blocker);
    await untilNamed("the dead letter", () => f.status().dead_lettered === 1 && spool.stats().events === 0);
    const files = await readdir(join(blocker, "dead-letter"));
    const ndjson = files.find((n) => n.endsWith(".ndjson"))!;
    assert.equal(await readFile(join(blocker, "dead-letter", ndjson), "utf8"), '{"a":1}\n{"b":2}\n');
  });

  test("ENOSPC writing a dead letter: nothing dropped, no torn file left, last_error says the disk is full", { skip: canMount ? false : "needs to mount a tmpfs (root with CAP_SYS_ADMIN)" }, async () => {
    const mnt = join(dir, "small");
    await mkdir(mnt);
    assert.ok(mountTmpfs(mnt, "64k"), "mount a 64 KiB tmpfs");
    cleanups.push(() => unmount(mnt));
    const dl = join(mnt, "dead-letter");
    await mkdir(dl);
    const filler = join(mnt, "filler");
    const chunk = new Uint8Array(4096).fill(0x66);
    let data = new Uint8Array(0);
    // Grow the filler until the filesystem refuses more.
    for (;;) {
      const next = new Uint8Array(data.byteLength + chunk.byteLength);
      next.set(data);
      next.set(chunk, data.byteLength);
      try {
        await writeFile(filler, next);
        data = next;
      } catch (err) {
        assert.equal((err as NodeJS.ErrnoException).code, "ENOSPC");
        await writeFile(filler, data);
        break;
      }
    }
    // The last page may still hold a few bytes; take them too.
    await writeFile(join(mnt, "crumbs"), "").catch(() => {});
    for (let n = 1024; n >= 1; n >>= 1) {
      try {
        await writeFile(join(mnt, "crumbs"), new Uint8Array(n), { flag: "a" });
        n <<= 1;
      } catch {}
    }

    const r = await receiver();
    r.failFor(600_000, 400);
    await spool.append(routeKey(COWRIE), "json", ['{"a":1}', '{"b":2}']);
    const f = forwarder(api(r.url), { maxWaitMs: 0 }, {}, { deadLetterDir: dl });
    f.start();
    await untilNamed("retried uploads", () => r.rejected >= 3 && /^cannot write/.test(f.status().last_error ?? ""));
    const st = f.status();
    assert.match(st.last_error!, /^cannot write dead letter in \S+\/dead-letter: the disk is full \(.*ENOSPC.*\); the upload stays in the spool/);
    assert.equal(st.dead_lettered, 0);
    assert.equal(spool.stats().events, 2);
    assert.deepEqual(await readdir(dl), [], "no torn dead letter left behind");

    await rm(filler);
    await untilNamed("the dead letter", () => f.status().dead_lettered === 1 && spool.stats().events === 0);
    const ndjson = (await readdir(dl)).find((n) => n.endsWith(".ndjson"))!;
    assert.equal(await readFile(join(dl, ndjson), "utf8"), '{"a":1}\n{"b":2}\n');
    assert.equal(f.status().dead_letter_bytes, (await folder(dl)).bytes);
  });

  test("after a network outage the first retry comes within a probe interval of the API's return; probes carry no credentials and come one at a time", async () => {
    const seen: Seen[] = [];
    const s = await special((_, req) => {
      seen.push({ method: req.method, path: new URL(req.url).pathname, auth: req.headers.get("authorization"), at: Date.now() });
      return req.method === "POST"
        ? new Response('{"message":"File uploaded successfully!"}', { status: 201 })
        : new Response('{"message":"Not found"}', { status: 404 });
    });
    const link = await relay(s.url);
    await spool.append(routeKey(AUTH), "text", events("outage", 5));
    const f = forwarder(api(link.url), { maxWaitMs: 0 }, LONG_BACKOFF);
    f.start();
    await untilNamed("a network error", () => /^network error posting to /.test(f.status().last_error ?? ""));
    await untilNamed("probes while the API is away", () => link.downConnections.length >= 6);
    const gaps = link.downConnections.slice(1).map((t, i) => t - link.downConnections[i]!);
    assert.ok(gaps.every((g) => g >= 100), `connections while the API was away came ${gaps.join(", ")} ms apart`);
    assert.equal(f.status().sent_events, 0);

    link.setDown(false);
    const back = Date.now();
    await untilNamed("delivery after the API's return", () => f.status().sent_events === 5, 5000);
    const post = seen.find((r) => r.method === "POST")!;
    assert.ok(post.at - back < 2000, `first retry ${post.at - back} ms after the API came back (the backoff was about 59 s)`);
    assert.equal(post.auth, `Bearer ${TOKEN}`);
    const probes = seen.filter((r) => r.method === "HEAD");
    assert.ok(probes.length >= 1, "a probe noticed the API");
    assert.deepEqual([...new Set(probes.map((p) => `${p.path} ${p.auth}`))], ["/ null"]);
    assert.equal(f.status().state, "ok");
  });

  test("after the API answered 503 (probes too), the first retry comes within a probe interval of its return", async () => {
    let down = true;
    const seen: Seen[] = [];
    const s = await special((_, req) => {
      seen.push({ method: req.method, path: new URL(req.url).pathname, auth: req.headers.get("authorization"), at: Date.now() });
      if (down) return new Response('{"message":"Service unavailable"}', { status: 503 });
      return req.method === "POST"
        ? new Response('{"message":"File uploaded successfully!"}', { status: 201 })
        : new Response('{"message":"Not found"}', { status: 404 });
    });
    await spool.append(routeKey(AUTH), "text", events("five-oh-three", 5));
    const f = forwarder(api(s.url), { maxWaitMs: 0 }, LONG_BACKOFF);
    f.start();
    await untilNamed("probes answered 503", () => seen.filter((r) => r.method === "HEAD").length >= 2);
    assert.match(f.status().last_error!, /^HTTP 503 from /);
    down = false;
    const back = Date.now();
    await untilNamed("delivery after the API's return", () => f.status().sent_events === 5, 5000);
    const posts = seen.filter((r) => r.method === "POST");
    assert.equal(posts.length, 2);
    assert.ok(posts[1]!.at - back < 2000, `first retry ${posts[1]!.at - back} ms after the API came back`);
  });

  test("a probe does not cut short the backoff of an API that answers but fails uploads", async () => {
    // POST /raw fails while the API's root answers 404 all along: probes learn nothing.
    const seen: Seen[] = [];
    const s = await special((_, req) => {
      seen.push({ method: req.method, path: new URL(req.url).pathname, auth: req.headers.get("authorization"), at: Date.now() });
      return req.method === "POST" ? new Response('{"message":"Internal server error"}', { status: 500 }) : new Response("", { status: 404 });
    });
    await spool.append(routeKey(AUTH), "text", events("fivehundred", 5));
    const f = forwarder(api(s.url), { maxWaitMs: 0 }, LONG_BACKOFF);
    f.start();
    await untilNamed("several probes", () => seen.filter((r) => r.method === "HEAD").length >= 5);
    assert.equal(seen.filter((r) => r.method === "POST").length, 1);
  });

  test("a probe does not cut short a Retry-After", async () => {
    // Down for 400 ms and up after that, which probes would take for the API's return; but
    // it asked for 30 s.
    let downUntil = 0;
    const t = await special((n, req) => {
      if (n === 0) downUntil = Date.now() + 400;
      if (n === 0) return new Response('{"message":"slow down"}', { status: 503, headers: { "retry-after": "30" } });
      if (Date.now() < downUntil) return new Response('{"message":"Service unavailable"}', { status: 503 });
      return req.method === "POST" ? new Response('{"message":"File uploaded successfully!"}', { status: 201 }) : new Response("", { status: 404 });
    });
    await spool.append(routeKey(COWRIE), "json", ['{"x":1}']);
    const f = forwarder(api(t.url), { maxWaitMs: 0 }, LONG_BACKOFF);
    f.start();
    await untilNamed("the 503", () => t.arrivals.length === 1);
    await new Promise((res) => setTimeout(res, 1000));
    assert.equal(t.arrivals.length, 1, "nothing before the Retry-After, not even a probe");
  });
});
