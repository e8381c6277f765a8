import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { WebSocketServer } from "ws";
import type { WebSocket } from "ws";
import plugin from "./index.ts";
import { frameToJsonLine, frameToTextLines } from "./frames.ts";
import { redactUrl } from "./client.ts";
import { Spool } from "../../agent/spool.ts";
import { StateStore } from "../../agent/state.ts";
import { createInputContext } from "../../agent/context.ts";
import type { InputCounters } from "../../agent/context.ts";
import { createLogger } from "../../agent/log.ts";
import { drainSpool, runInput } from "../../test/plugin-harness.ts";

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "../../test/fixtures");
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- frames --------------------------------------------------------------------------------

test("json frames: an object stays as sent (pretty-printed ones made single-line); anything else gets parse_error", () => {
  assert.equal(frameToJsonLine('{"a": 1}'), '{"a": 1}');
  assert.equal(frameToJsonLine('{\n  "a": [1, 2]\n}\n'), '{"a":[1,2]}');
  for (const [frame, why] of [["[1,2]", /array/], ["plain text", /./], ['{"a": ', /./], ["null", /null/], ["42", /number/]] as const) {
    const ev = JSON.parse(frameToJsonLine(frame));
    assert.equal(ev.message, frame);
    assert.match(ev.parse_error, why);
  }
});

test("text frames: each non-empty line is an event", () => {
  const out: string[] = [];
  frameToTextLines("one\r\ntwo\n\nthree", out);
  frameToTextLines("four", out);
  assert.deepEqual(out, ["one", "two", "three", "four"]);
});

test("options: defaults, units, ws/wss only, unknown keys", () => {
  assert.deepEqual(plugin.options.parse({ url: "ws://127.0.0.1:3232/" }), {
    url: "ws://127.0.0.1:3232/", headers: {}, format: "json", ping_interval: 30_000, reconnect_min: 1000, reconnect_max: 60_000,
  });
  assert.equal(plugin.options.safeParse({ url: "wss://logstash.example:443/events", headers: { Authorization: "Bearer x" } }).success, true);
  assert.equal(plugin.options.safeParse({}).success, false);
  assert.equal(plugin.options.safeParse({ url: "http://example.com/" }).success, false);
  assert.equal(plugin.options.safeParse({ url: "not a url" }).success, false);
  assert.equal(plugin.options.safeParse({ url: "ws://h/", format: "xml" }).success, false);
  assert.equal(plugin.options.safeParse({ url: "ws://h/", ping_interval: "soon" }).success, false);
  assert.equal(plugin.options.safeParse({ url: "ws://h/", headers: { A: 1 } }).success, false);
  assert.equal(plugin.options.safeParse({ url: "ws://h/", retry: true }).success, false);
  assert.equal(redactUrl("wss://user:pw@h:1/p"), "wss://***@h:1/p");
});

// ---- the input against a real websocket server and the real spool ---------------------------

interface Env {
  wss: WebSocketServer;
  url: string;
  logs: string[];
  events: Array<{ kind: string; event: string }>;
  collect(): Array<{ kind: string; event: string }>;
  waitForCount(n: number, ms?: number): Promise<void>;
  start(raw: Record<string, unknown>): { stop(): Promise<void>; counters: InputCounters; done: Promise<void> };
}

async function withEnv(serverOpts: Record<string, unknown>, fn: (env: Env) => Promise<void>, spoolOpts: { maxBytes?: number; segmentBytes?: number } = {}) {
  const dir = await mkdtemp(join(tmpdir(), "websocket-input-"));
  const spool = await Spool.open({ dir: join(dir, "spool"), maxBytes: 64 << 20, whenFull: "block", fsync: 5, log: createLogger("error", { write() {} }), ...spoolOpts });
  const state = new StateStore(join(dir, "state"));
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, ...serverOpts });
  await new Promise<void>((r) => wss.once("listening", () => r()));
  const running: Array<() => Promise<void>> = [];
  const logs: string[] = [];
  const env: Env = {
    wss, logs, events: [],
    url: `ws://127.0.0.1:${(wss.address() as { port: number }).port}/events`,
    collect: () => drainSpool(spool, env.events),
    async waitForCount(n, ms = 5000) {
      const deadline = Date.now() + ms;
      while (env.collect().length < n) {
        if (Date.now() > deadline) assert.fail(`expected ${n} events, got ${env.events.length}`);
        await pause(5);
      }
    },
    start(raw) {
      const log = createLogger("debug", { write: (l) => { logs.push(l); } });
      let ctx!: ReturnType<typeof createInputContext>;
      const { stop, done } = runInput((signal) => {
        ctx = createInputContext({ name: "honeypot", spool, state, route: "honeypot", log, signal, hostname: "test" });
        return plugin.create(plugin.options.parse({ url: env.url, reconnect_min: "10ms", reconnect_max: "50ms", ...raw }), ctx).run();
      });
      running.push(stop);
      return { stop, counters: ctx.counters, done };
    },
  };
  try {
    await fn(env);
  } finally {
    for (const stop of running) await stop();
    for (const c of wss.clients) c.terminate();
    await new Promise<void>((r) => wss.close(() => r()));
    await spool.close();
    await rm(dir, { recursive: true, force: true });
  }
}

const nextConnection = (wss: WebSocketServer) =>
  new Promise<{ socket: WebSocket; headers: Record<string, unknown> }>((r) =>
    wss.once("connection", (socket, req) => r({ socket, headers: req.headers })));

async function waitFor(cond: () => boolean, what: string, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await pause(5);
  }
}

test("frames arrive as events: the Logstash fixture unchanged, a non-object as parse_error; headers sent, secrets not logged", async () => {
  await withEnv({}, async (env) => {
    const fixture = (await readFile(join(FIXTURES, "logstash/websocket-frame.json"), "utf8")).trimEnd();
    const conn = nextConnection(env.wss);
    const input = env.start({ headers: { Authorization: "Bearer s3cret-token" } });
    const { socket, headers } = await conn;
    assert.equal(headers.authorization, "Bearer s3cret-token");
    socket.send(fixture);
    socket.send("not json at all");
    socket.send('{"eventid":"cowrie.session.closed","session":"85a2e6c7746c"}');
    await env.waitForCount(3);
    const got = env.collect();
    assert.ok(got.every((e) => e.kind === "json"));
    assert.equal(got[0]!.event, fixture);
    assert.equal(JSON.parse(got[0]!.event).geoip.country_code2, "US");
    const bad = JSON.parse(got[1]!.event);
    assert.equal(bad.message, "not json at all");
    assert.equal(typeof bad.parse_error, "string");
    assert.equal(JSON.parse(got[2]!.event).eventid, "cowrie.session.closed");
    assert.equal(input.counters.detail.connected, true);
    assert.equal(typeof input.counters.detail.connected_since, "string");
    await input.stop();
    assert.ok(env.logs.some((l) => l.includes("websocket connected")));
    assert.ok(env.logs.every((l) => !l.includes("s3cret")));
  });
});

test("text format: each line of each frame is a text event", async () => {
  await withEnv({}, async (env) => {
    const conn = nextConnection(env.wss);
    env.start({ format: "text" });
    const { socket } = await conn;
    socket.send("Nov  4 11:47:02 ssh-arf sshd[1]: Failed password for root\nsecond line\n");
    socket.send(new TextEncoder().encode("binary frame line")); // binary frames are read as UTF-8 too
    await env.waitForCount(3);
    assert.deepEqual(env.collect(), [
      { kind: "text", event: "Nov  4 11:47:02 ssh-arf sshd[1]: Failed password for root" },
      { kind: "text", event: "second line" },
      { kind: "text", event: "binary frame line" },
    ]);
  });
});

test("a server that drops the connection halfway and accepts again: every frame it sent arrives", async () => {
  await withEnv({}, async (env) => {
    const frame = (i: number) => JSON.stringify({ eventid: "cowrie.command.input", n: i });
    let conn = nextConnection(env.wss);
    const input = env.start({});
    let { socket } = await conn;
    for (let i = 0; i < 500; i++) socket.send(frame(i));
    conn = nextConnection(env.wss);
    // Close after the frames are flushed, then cut the TCP connection without a close frame.
    await new Promise<void>((r) => socket.send(frame(500), () => r()));
    await pause(20);
    socket.terminate();
    ({ socket } = await conn);
    for (let i = 501; i < 1000; i++) socket.send(frame(i));
    await env.waitForCount(1000);
    await pause(50);
    const got = env.collect().map((e) => JSON.parse(e.event).n);
    assert.deepEqual(got, Array.from({ length: 1000 }, (_, i) => i));
    await waitFor(() => input.counters.detail.connected === true, "reconnected detail");
    assert.equal(input.counters.detail.disconnects, 1);
    assert.ok(env.logs.some((l) => l.includes("websocket disconnected")));
    const reconnected = env.logs.map((l) => JSON.parse(l)).find((l) => l.msg === "websocket reconnected");
    assert.equal(typeof reconnected?.disconnected_ms, "number");
  });
});

test("a server that does not answer pings is left and dialled again", async () => {
  await withEnv({ autoPong: false }, async (env) => {
    let pings = 0;
    env.wss.on("connection", (s) => s.on("ping", () => pings++));
    const first = nextConnection(env.wss);
    const input = env.start({ ping_interval: "100ms" });
    await first;
    const second = nextConnection(env.wss);
    const { socket } = await second;
    assert.ok(pings >= 1, "the first connection was pinged");
    socket.send('{"after":"reconnect"}');
    await env.waitForCount(1);
    assert.ok((input.counters.detail.disconnects as number) >= 1);
    assert.match(input.counters.last_error ?? "", /no pong/);
  });
});

test("a server that answers pings keeps the connection", async () => {
  await withEnv({}, async (env) => {
    let connections = 0, pings = 0;
    env.wss.on("connection", (s) => { connections++; s.on("ping", () => pings++); });
    const input = env.start({ ping_interval: "150ms" });
    await waitFor(() => pings >= 3, "three pings");
    assert.equal(connections, 1);
    assert.equal(input.counters.detail.disconnects, 0);
  });
});

test("nothing listening: retries with backoff, connects once the server is there; stop is prompt", async () => {
  await withEnv({}, async (env) => {
    const port = (env.wss.address() as { port: number }).port;
    await new Promise<void>((r) => env.wss.close(() => r()));
    const input = env.start({});
    await waitFor(() => input.counters.errors >= 2, "failed attempts");
    assert.equal(input.counters.detail.connected, false);
    const again = new WebSocketServer({ host: "127.0.0.1", port });
    try {
      const { socket } = await nextConnection(again);
      socket.send('{"late":true}');
      await env.waitForCount(1);
      const t0 = Date.now();
      await input.stop();
      assert.ok(Date.now() - t0 < 1000, "stopped within a second");
      assert.equal(input.counters.detail.connected, false);
    } finally {
      for (const c of again.clients) c.terminate();
      await new Promise<void>((r) => again.close(() => r()));
    }
  });
});

test("stop is prompt while connected and while waiting to reconnect", async () => {
  await withEnv({}, async (env) => {
    const conn = nextConnection(env.wss);
    let input = env.start({});
    await conn;
    let t0 = Date.now();
    await input.stop();
    assert.ok(Date.now() - t0 < 1000);
    // A long reconnect delay: the stop must not wait for it.
    const conn2 = nextConnection(env.wss);
    input = env.start({ reconnect_min: "1m", reconnect_max: "1m" });
    (await conn2).socket.terminate();
    await waitFor(() => input.counters.detail.disconnects === 1, "the disconnect");
    t0 = Date.now();
    await input.stop();
    assert.ok(Date.now() - t0 < 1000);
  });
});

test("spool full (block): reading waits, the connection is kept (no ping timeout), nothing is lost", async () => {
  await withEnv({}, async (env) => {
    let connections = 0;
    env.wss.on("connection", () => connections++);
    const conn = nextConnection(env.wss);
    const input = env.start({ ping_interval: "100ms" });
    const { socket } = await conn;
    const pad = "x".repeat(100);
    // In pieces, so the input emits several batches and the spool fills up.
    for (let i = 0; i < 2000; i++) {
      socket.send(JSON.stringify({ n: i, pad }));
      if (i % 100 === 99) await pause(5);
    }
    // Nobody drains the spool for a while: the input's emit waits.
    await pause(300);
    assert.ok(env.events.length === 0);
    await env.waitForCount(2000);
    assert.deepEqual(env.collect().map((e) => JSON.parse(e.event).n), Array.from({ length: 2000 }, (_, i) => i));
    assert.equal(connections, 1);
    assert.equal(input.counters.detail.disconnects, 0);
  }, { maxBytes: 64 << 10, segmentBytes: 8 << 10 });
});
