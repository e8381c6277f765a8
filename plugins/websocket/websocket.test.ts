import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createServer } from "node:net";
import type { Server, Socket } from "node:net";
import { createHash } from "node:crypto";
import { WebSocketServer } from "ws";
import type { WebSocket } from "ws";
import plugin from "./index.ts";
import { frameToJsonLine, frameToTextLines } from "./frames.ts";
import { redactUrl } from "../../agent/redact.ts";
import { HeldFrames, HOLD_MAX_BYTES, HOLD_MAX_FRAMES } from "./held.ts";
import { Spool } from "../../agent/spool/index.ts";
import { StateStore } from "../../agent/state.ts";
import { createInputContext } from "../../agent/context.ts";
import type { InputCounters } from "../../agent/context.ts";
import { createLogger } from "../../agent/log.ts";
import { drainSpool, runInput } from "../../test/testing/plugin-harness.ts";

const TESTDATA = join(dirname(fileURLToPath(import.meta.url)), "testdata");
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
    max_message_size: 16 << 20,
  });
  assert.equal(plugin.options.parse({ url: "ws://h/", max_message_size: "64KiB" }).max_message_size, 64 << 10);
  assert.equal(plugin.options.safeParse({ url: "ws://h/", max_message_size: "big" }).success, false);
  assert.equal(plugin.options.safeParse({ url: "ws://h/", max_message_size: 10 }).success, false);
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
  start(raw: Record<string, unknown>, fault?: EmitFault): { stop(): Promise<void>; counters: InputCounters; done: Promise<void> };
}

/**
 * Failure injection for the spool's write path: while `failing`, the input's emits reject with
 * an EIO error (as a failing disk would) without reaching the spool, which stays real, as does
 * the connection. `rejected` counts the refusals.
 */
interface EmitFault {
  failing: boolean;
  rejected: number;
}

function injectEmitFault(ctx: ReturnType<typeof createInputContext>, fault: EmitFault): void {
  const refuse = () => {
    fault.rejected++;
    return Promise.reject(Object.assign(new Error("EIO: i/o error, write"), { code: "EIO", errno: -5, syscall: "write" }));
  };
  const { emitJsonLines, emitText } = ctx;
  ctx.emitJsonLines = (lines, opts) => (fault.failing ? refuse() : emitJsonLines(lines, opts));
  ctx.emitText = (lines, opts) => (fault.failing ? refuse() : emitText(lines, opts));
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
    start(raw, fault) {
      const log = createLogger("debug", { write: (l) => { logs.push(l); } });
      let ctx!: ReturnType<typeof createInputContext>;
      const { stop, done } = runInput((signal) => {
        ctx = createInputContext({ name: "honeypot", spool, state, route: "honeypot", log, signal, hostname: "test" });
        if (fault) injectEmitFault(ctx, fault);
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
    const fixture = (await readFile(join(TESTDATA, "logstash-frame.json"), "utf8")).trimEnd();
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

test("held frames: counted until the spool takes them; pause above the mark, resume below half of it", () => {
  const held = new HeldFrames(1000, 10);
  for (let i = 0; i < 4; i++) held.add("x".repeat(200), 200);
  assert.equal(held.aboveHighWaterMark(), false);
  const first = held.take();
  assert.equal(first.frames.length, 4);
  assert.equal(held.queued, 0);
  held.add("y".repeat(200), 200);
  assert.equal(held.aboveHighWaterMark(), true, "the batch still waiting for the spool counts");
  held.release(first);
  assert.deepEqual([held.frames, held.bytes, held.belowResumeMark()], [1, 200, true]);
  assert.deepEqual([held.framesMax, held.bytesMax], [5, 1000]);
  for (let i = 0; i < 9; i++) held.add("z", 1);
  assert.equal(held.aboveHighWaterMark(), true, "the frame count has a mark of its own");
});

test("spool full (block): reading stops, the server backs up, memory stays bounded; then 100,000 frames arrive in order, once", async () => {
  await withEnv({}, async (env) => {
    const conn = nextConnection(env.wss);
    const input = env.start({ ping_interval: "300ms" });
    const { socket } = await conn;
    // Sending 100,000 frames holds this process's event loop: let the client see the open first.
    await waitFor(() => input.counters.detail.connected === true, "connected");
    const N = 100_000;
    const frame = (i: number) => {
      const head = `{"n":${i},"pad":"`;
      return head + "x".repeat(200 - head.length - 2) + '"}';
    };
    assert.equal(frame(12345).length, 200);
    for (let i = 0; i < N; i++) socket.send(frame(i));
    const sentBytes = N * 200;
    await waitFor(() => input.counters.detail.reading_paused === true, "reading paused");
    // Nobody drains the spool: the input must not read on, so once the kernel's socket buffers
    // are full (a few MiB) the rest waits on the server's side and stays there.
    await pause(300);
    const backlog = socket.bufferedAmount;
    await pause(300);
    assert.equal(env.events.length, 0);
    assert.equal(input.counters.detail.reading_paused, true);
    assert.ok(socket.bufferedAmount > 4 << 20 && backlog - socket.bufferedAmount < 1 << 20,
      `the server could not send: ${socket.bufferedAmount} of ${sentBytes} bytes still queued on its side (${backlog} before)`);
    // Drain as a forwarder would: the input resumes and everything arrives.
    const deadline = Date.now() + 60_000;
    while (env.collect().length < N) {
      if (Date.now() > deadline) assert.fail(`expected ${N} events, got ${env.events.length}`);
      await pause(1);
    }
    await pause(50);
    const got = env.collect().map((e) => JSON.parse(e.event).n as number);
    assert.equal(got.length, N);
    for (let i = 0; i < N; i++) if (got[i] !== i) assert.fail(`event ${i} is n=${got[i]}`);
    const d = input.counters.detail;
    assert.equal(d.disconnects, 0);
    assert.equal(d.reading_paused, false);
    // Held at once: the high-water mark plus what one socket read had already brought in.
    assert.ok((d.held_frames_max as number) >= 1 && (d.held_frames_max as number) < HOLD_MAX_FRAMES + 5000, `held_frames_max ${d.held_frames_max}`);
    assert.ok((d.held_bytes_max as number) < HOLD_MAX_BYTES + (2 << 20), `held_bytes_max ${d.held_bytes_max}`);
  }, { maxBytes: 64 << 10, segmentBytes: 8 << 10 });
});

test("stop is prompt while reading is paused on a full spool", async () => {
  await withEnv({}, async (env) => {
    const conn = nextConnection(env.wss);
    const input = env.start({});
    const { socket } = await conn;
    await waitFor(() => input.counters.detail.connected === true, "connected");
    const frame = JSON.stringify({ pad: "x".repeat(200) });
    for (let i = 0; i < 20_000; i++) socket.send(frame);
    await waitFor(() => input.counters.detail.reading_paused === true, "reading paused");
    const t0 = Date.now();
    await input.stop();
    assert.ok(Date.now() - t0 < 1000, "stopped within a second");
    assert.equal(input.counters.detail.reading_paused, false);
    assert.equal(input.counters.detail.connected, false);
  }, { maxBytes: 64 << 10, segmentBytes: 8 << 10 });
});

const logLines = (env: Env, prefix: string) => env.logs.map((l) => JSON.parse(l)).filter((l) => l.msg.startsWith(prefix));

test("a spool that refuses writes: frames kept, reading paused, connection kept; then 10 x 1,000 frames arrive in order, once", async () => {
  await withEnv({}, async (env) => {
    let connections = 0;
    env.wss.on("connection", () => connections++);
    const fault: EmitFault = { failing: true, rejected: 0 };
    const conn = nextConnection(env.wss);
    // Before the first refusal, so "less than 10 s since" holds for the first line too.
    const refusedAt = Date.now();
    const input = env.start({ ping_interval: "100ms" }, fault);
    const { socket } = await conn;
    await waitFor(() => input.counters.detail.connected === true, "connected");
    const N = 10_000;
    for (let burst = 0; burst < 10; burst++) {
      for (let i = burst * 1000; i < (burst + 1) * 1000; i++) socket.send(JSON.stringify({ n: i }));
      await pause(5);
    }
    await waitFor(() => fault.rejected >= 3, "three refused emits");
    const d = input.counters.detail;
    assert.equal(d.reading_paused, true, "reading paused while the spool refuses");
    assert.equal(d.emit_retrying, true);
    assert.ok(input.counters.errors >= 1);
    assert.match(input.counters.last_error ?? "", /spool refused events \(EIO/);
    // Longer than ping_interval: a connection paused for a refusing spool is not taken as dead.
    await pause(300);
    assert.equal(input.counters.detail.connected, true);
    fault.failing = false;
    await env.waitForCount(N);
    await pause(50);
    const got = env.collect().map((e) => JSON.parse(e.event).n as number);
    assert.equal(got.length, N, "nothing twice");
    for (let i = 0; i < N; i++) if (got[i] !== i) assert.fail(`event ${i} is n=${got[i]}`);
    await waitFor(() => input.counters.detail.reading_paused === false && input.counters.detail.emit_retrying === false, "reading resumed");
    assert.equal(input.counters.detail.disconnects, 0);
    assert.equal(connections, 1);
    assert.equal(input.counters.detail.emit_failures, fault.rejected);
    const refused = logLines(env, "the spool refused events");
    assert.match(refused[0].error, /EIO/);
    // One line at the first refusal, the next no sooner than 10 s later.
    if (Date.now() - refusedAt < 10_000) assert.equal(refused.length, 1, "one line, not one per refusal");
    const recovered = logLines(env, "the spool takes events again");
    assert.deepEqual(recovered.map((l) => l.refusals), [fault.rejected]);
  });
});

test("the server drops the connection while the spool refuses: the frames received are kept; once reading resumes the close is seen and it is dialled again", async () => {
  await withEnv({}, async (env) => {
    const fault: EmitFault = { failing: true, rejected: 0 };
    let conn = nextConnection(env.wss);
    const input = env.start({}, fault);
    let { socket } = await conn;
    for (let i = 0; i < 500; i++) socket.send(JSON.stringify({ n: i }));
    await waitFor(() => fault.rejected >= 2, "refused emits");
    conn = nextConnection(env.wss);
    socket.terminate();
    // Reading is paused, so the close waits unread in the socket until the spool takes the frames.
    await pause(100);
    fault.failing = false;
    ({ socket } = await conn);
    socket.send(JSON.stringify({ n: 500 }));
    await env.waitForCount(501);
    assert.deepEqual(env.collect().map((e) => JSON.parse(e.event).n), Array.from({ length: 501 }, (_, i) => i));
    assert.equal(input.counters.detail.disconnects, 1);
  });
});

test("a stop while the spool refuses is prompt, and the frames not spooled are logged", async () => {
  await withEnv({}, async (env) => {
    const fault: EmitFault = { failing: true, rejected: 0 };
    const conn = nextConnection(env.wss);
    const input = env.start({}, fault);
    const { socket } = await conn;
    for (let i = 0; i < 100; i++) socket.send(JSON.stringify({ n: i }));
    await waitFor(() => fault.rejected >= 2, "refused emits");
    const t0 = Date.now();
    await input.stop();
    assert.ok(Date.now() - t0 < 1000, "stopped within a second");
    assert.deepEqual(logLines(env, "frames not spooled").map((l) => l.frames), [100]);
    assert.match(input.counters.last_error ?? "", /frames not spooled at stop/);
  });
});

// ---- a hand-made server: malformed frames, failed handshakes ---------------------------------

const acceptFor = (key: string) => createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");

/** A TCP server that reads the opening handshake and leaves the answer to `onRequest`. */
async function rawServer(onRequest: (sock: Socket, key: string, n: number) => void): Promise<{ server: Server; url: string; closeCodes: number[] }> {
  const closeCodes: number[] = [];
  let n = 0;
  const server = createServer((sock) => {
    sock.on("error", () => {});
    let head = Buffer.alloc(0);
    let upgraded = false;
    let frames = Buffer.alloc(0);
    sock.on("data", (d: Buffer) => {
      if (!upgraded) {
        head = Buffer.concat([head, d]);
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) return;
        upgraded = true;
        const key = /^sec-websocket-key: *(\S+)/im.exec(head.subarray(0, end).toString())?.[1] ?? "";
        onRequest(sock, key, n++);
        return;
      }
      // The client's frames are masked and small here: note the codes of its close frames.
      frames = Buffer.concat([frames, d]);
      while (frames.length >= 6) {
        const len = frames[1]! & 0x7f;
        if (len > 125 || frames.length < 6 + len) break;
        const payload = Buffer.from(frames.subarray(6, 6 + len));
        for (let i = 0; i < len; i++) payload[i]! ^= frames[2 + (i & 3)]!;
        if ((frames[0]! & 0x0f) === 8 && len >= 2) closeCodes.push(payload.readUInt16BE(0));
        frames = frames.subarray(6 + len);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, url: `ws://127.0.0.1:${(server.address() as { port: number }).port}/`, closeCodes };
}

const upgrade = (sock: Socket, accept: string) =>
  sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
const textFrame = (s: string) => Buffer.concat([Buffer.from([0x81, Buffer.byteLength(s)]), Buffer.from(s)]);

test("malformed frames from the server close the connection with the right code, logged, and it is dialled again", async () => {
  const bad: Array<[string, Buffer, number, RegExp]> = [
    ["unknown opcode", Buffer.from([0x83, 0x01, 0x41]), 1002, /protocol error.*opcode/],
    ["reserved bits", Buffer.from([0xc1, 0x01, 0x41]), 1002, /protocol error.*RSV/],
    ["masked server frame", Buffer.from([0x81, 0x81, 1, 2, 3, 4, 0x40]), 1002, /protocol error.*MASK/],
    ["64-bit length with the top bit set", Buffer.from([0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1, 0x41]), 1009, /payload length.*1009/],
    ["fragmented ping", Buffer.from([0x09, 0x01, 0x41]), 1002, /protocol error.*FIN/],
    ["continuation without a start", Buffer.from([0x80, 0x01, 0x41]), 1002, /protocol error/],
    ["text that is not UTF-8", Buffer.from([0x81, 0x02, 0xc3, 0x28]), 1007, /UTF-8.*1007/],
    ["message over max_message_size in fragments", Buffer.concat([
      Buffer.from([0x01, 126, 0x02, 0x00]), Buffer.alloc(512, 0x41), Buffer.from([0x80, 126, 0x02, 0x01]), Buffer.alloc(513, 0x41),
    ]), 1009, /larger than max_message_size \(1024 bytes\).*1009/],
  ];
  const raw = await rawServer((sock, key, n) => {
    upgrade(sock, acceptFor(key));
    sock.write(textFrame(JSON.stringify({ before: n })));
    if (n < bad.length) sock.write(bad[n]![1]);
  });
  await withEnv({}, async (env) => {
    env.url = raw.url;
    const input = env.start({ max_message_size: "1KiB" });
    await env.waitForCount(bad.length + 1);
    // Every frame sent before a bad one was kept.
    assert.deepEqual(env.collect().map((e) => JSON.parse(e.event).before), Array.from({ length: bad.length + 1 }, (_, i) => i));
    await waitFor(() => raw.closeCodes.length >= bad.length, "the client's close frames");
    assert.deepEqual(raw.closeCodes, bad.map((b) => b[2]));
    const reasons = env.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "websocket disconnected").map((l) => l.reason as string);
    bad.forEach(([what, , , reason], i) => assert.match(reasons[i] ?? "", reason, what));
    assert.equal(input.counters.detail.connected, true);
    assert.equal(input.counters.detail.disconnects, bad.length);
  });
  await new Promise<void>((r) => raw.server.close(() => r()));
});

test("a failed handshake (403, wrong Sec-WebSocket-Accept, not HTTP) is logged and retried", async () => {
  const raw = await rawServer((sock, key, n) => {
    if (n === 0) sock.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
    else if (n === 1) upgrade(sock, acceptFor(key + "x"));
    else if (n === 2) sock.end("nonsense\r\n\r\n");
    else { upgrade(sock, acceptFor(key)); sock.write(textFrame('{"finally":true}')); }
  });
  await withEnv({}, async (env) => {
    env.url = raw.url;
    const input = env.start({});
    await env.waitForCount(1);
    assert.equal(JSON.parse(env.collect()[0]!.event).finally, true);
    const failures = env.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "websocket connection failed");
    assert.equal(failures.length, 3);
    assert.match(failures[0].reason, /403/);
    assert.match(failures[1].reason, /Sec-WebSocket-Accept/);
    assert.equal(typeof failures[2].reason, "string");
    assert.equal(input.counters.errors, 3);
    assert.equal(input.counters.detail.connected, true);
  });
  await new Promise<void>((r) => raw.server.close(() => r()));
});
