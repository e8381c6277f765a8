import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { connect, createServer } from "node:net";
import { createSocket } from "node:dgram";
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import fc from "fast-check";
import plugin from "./index.ts";
import { DEFAULT_LIMITS } from "./batcher.ts";
import { eventTail, parseSyslog, writeSyslogEvent, type SyslogEvent } from "./parse.ts";
import { JsonLineBuffer } from "./json-lines.ts";
import { SyslogFramer, type MessageSink } from "./framer.ts";
import { Spool } from "../../agent/spool/index.ts";
import { StateStore } from "../../agent/state.ts";
import { createInputContext } from "../../agent/context.ts";
import { createLogger, silentLogger } from "../../agent/log.ts";
import { LOGGEN, loggen, sendTcp, split, withInput, type EmitFault } from "./input.testutil.ts";
import { Throttled } from "./throttled.ts";
import { KernelUdpDrops, parseUdpTable } from "./kernel-drops.ts";
import { until } from "../../test/testing/until.ts";
import { isDeno } from "../../agent/runtime/detect.ts";

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "testdata");
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
/** A framer sink that keeps a copy of each message. */
const into = (out: Uint8Array[]): MessageSink => (buf, start, end) => void out.push(buf.slice(start, end));
const NOW = new Date("2026-11-27T21:00:00Z");
const ctx = { sourceIp: "192.0.2.7", transport: "udp", now: NOW };
const KEYS = ["facility", "severity", "timestamp", "hostname", "appname", "procid", "msgid", "structured_data", "message", "format", "source_ip", "transport"];

// ---- parsing --------------------------------------------------------------------------------

const EXPECTED_VARIANTS: Array<Partial<SyslogEvent>> = [
  { facility: 4, severity: 2, format: "rfc5424", timestamp: "2003-10-11T22:14:15.003Z", hostname: "mymachine.example.com", appname: "su", procid: null, msgid: "ID47", structured_data: null, message: "'su root' failed for lonvick on /dev/pts/8" },
  { facility: 20, severity: 5, format: "rfc5424", appname: "evntslog", msgid: "ID47", message: "An application event log entry",
    structured_data: { "exampleSDID@32473": { iut: "3", eventSource: "Application", eventID: "1011" }, "examplePriority@32473": { class: "high" } } },
  { facility: 1, severity: 5, format: "rfc5424", timestamp: "2019-02-13T19:48:34+00:00", hostname: "74794bfb6795", appname: "root", procid: "8449", msgid: null, structured_data: { meta: { sequenceId: "1" } }, message: "i am foobar" },
  { facility: 4, severity: 2, format: "rfc3164", timestamp: "2026-10-11T22:14:15+00:00", hostname: "mymachine", appname: "su", procid: null, message: "'su root' failed for lonvick on /dev/pts/8" },
  { facility: 1, severity: 5, format: "rfc3164", timestamp: "2026-02-05T17:32:18+00:00", hostname: "10.0.0.99", appname: null, message: "Use the BFG!" },
  { facility: 23, severity: 6, format: "rfc3164", timestamp: "2026-02-13T21:31:56+00:00", hostname: "74794bfb6795", appname: "liblogging-stdlog",
    message: '[origin software="rsyslogd" swVersion="8.24.0" x-pid="8979" x-info="http://www.rsyslog.com"] start' },
  { facility: 23, severity: 3, format: "rfc3164", timestamp: "2026-09-21T09:22:01.678+00:00", hostname: null, appname: null, message: "%LINK-3-UPDOWN: Interface GigabitEthernet1/0/12, changed state to up" },
  { facility: 23, severity: 5, format: "raw", timestamp: null, hostname: null },
  { facility: 4, severity: 6, format: "rfc3164", timestamp: "2026-11-27T18:20:19+00:00", hostname: "localhost", appname: "prg00000", procid: "1234",
    message: "seq: 0000000000, thread: 0000, runid: 1795803619, stamp: 2026-11-27T18:20:19" },
  { facility: 1, severity: 6, format: "rfc5424", timestamp: "2026-11-27T18:20:18.123456+02:00", hostname: "host.example", appname: "app", procid: "42", msgid: "MSG1",
    structured_data: { "sd@1": { k: 'a "quoted" ] value' } }, message: "message with escaped SD" },
];

test("parse: every line of variants.txt", async () => {
  const lines = (await readFile(join(FIXTURES, "variants.txt"), "utf8")).split("\n").filter((l) => l !== "");
  assert.equal(lines.length, EXPECTED_VARIANTS.length);
  lines.forEach((line, i) => {
    const ev = parseSyslog(line, ctx);
    assert.deepEqual(Object.keys(ev), KEYS, `line ${i + 1}: the keys, in this order`);
    assert.equal(ev.source_ip, "192.0.2.7");
    assert.equal(ev.transport, "udp");
    for (const [k, v] of Object.entries(EXPECTED_VARIANTS[i]!)) assert.deepEqual((ev as any)[k], v, `line ${i + 1} ${k}`);
    if (ev.format === "raw") assert.equal(ev.message, line);
  });
});

test("parse: octet-counted.bin frames into RFC 5424 messages", async () => {
  const bytes = new Uint8Array(await readFile(join(FIXTURES, "octet-counted.bin")));
  const framer = new SyslogFramer(65536);
  const out: Uint8Array[] = [];
  framer.push(bytes, into(out));
  framer.flush(into(out));
  assert.equal(framer.framing, "octet");
  assert.equal(out.length, 3);
  const evs = out.map((m) => parseSyslog(dec(m), { ...ctx, transport: "tcp" }));
  assert.deepEqual(evs.map((e) => e.format), ["rfc5424", "rfc5424", "rfc5424"]);
  assert.equal(evs[0]!.message, "'su root' failed for lonvick on /dev/pts/8");
  assert.equal(evs[1]!.message, "i am foobar");
  assert.equal(evs[2]!.message, "An application event log entry", "BOM stripped");
  assert.deepEqual(evs[2]!.structured_data!["examplePriority@32473"], { class: "high" });
});

test("parse: RFC 3164 edge cases", () => {
  const p = (s: string, extra: Partial<typeof ctx> & { defaultTz?: string } = {}) => parseSyslog(s, { ...ctx, ...extra });
  // Missing hostname: the tag comes right after the timestamp.
  const sshd = p("<38>Nov 27 10:00:00 sshd[123]: Accepted password for root");
  assert.equal(sshd.hostname, null);
  assert.equal(sshd.appname, "sshd");
  assert.equal(sshd.procid, "123");
  // A December message read in early January belongs to last year.
  assert.equal(p("<13>Dec 31 23:59:59 h app: x", { now: new Date("2027-01-01T00:00:10Z") }).timestamp, "2026-12-31T23:59:59+00:00");
  // Zone for timestamps without one.
  assert.equal(p("<13>Jul  1 12:00:00 h app: x", { defaultTz: "+02:00" }).timestamp, "2026-07-01T12:00:00+02:00");
  assert.equal(p("<13>Jul  1 12:00:00 h app: x", { defaultTz: "Europe/Berlin" }).timestamp, "2026-07-01T12:00:00+02:00");
  assert.equal(p("<13>Jan  1 12:00:00 h app: x", { defaultTz: "Europe/Berlin" }).timestamp, "2026-01-01T12:00:00+01:00");
  // Cisco with "*" (clock not synchronised) and a zone word.
  const cisco = p("<189>12: *Mar  1 00:01:02.123 UTC: %SYS-5-CONFIG_I: Configured from console");
  assert.equal(cisco.format, "rfc3164");
  assert.equal(cisco.timestamp, "2026-03-01T00:01:02.123+00:00");
  assert.equal(cisco.message, "%SYS-5-CONFIG_I: Configured from console");
  // ISO timestamp with offset, as rsyslog forwards it.
  assert.equal(p("<30>2026-11-27T18:20:19.5+01:00 web nginx: hi").timestamp, "2026-11-27T18:20:19.5+01:00");
});

test("parse: RFC 5424 NILVALUEs, no message, malformed SD", () => {
  const ev = parseSyslog("<0>1 - - - - - -", ctx);
  assert.equal(ev.format, "rfc5424");
  assert.deepEqual([ev.facility, ev.severity, ev.timestamp, ev.hostname, ev.appname, ev.procid, ev.msgid, ev.structured_data, ev.message],
    [0, 0, null, null, null, null, null, null, null]);
  const sd = parseSyslog('<14>1 - h a - - [x@1 p="back\\\\slash" q="\\n"]', ctx);
  assert.deepEqual(sd.structured_data, { "x@1": { p: "back\\slash", q: "\\n" } });
  for (const bad of ['<14>1 - h a - - [x@1 p="unterminated]', "<14>1 - h a - - [x", "<14>1 notatime h a - - - m", "<999>1 - - - - - -", "no pri at all", "", "<14>"]) {
    const r = parseSyslog(bad, ctx);
    assert.equal(r.format, "raw", bad);
    assert.equal(r.message, bad);
  }
});

test("parse: arbitrary text never throws and is never lost", () => {
  fc.assert(fc.property(fc.oneof(fc.string(), fc.string().map((s) => "<13>" + s), fc.string().map((s) => "<13>1 " + s)), (s) => {
    const ev = parseSyslog(s, ctx);
    assert.deepEqual(Object.keys(ev).sort(), [...KEYS].sort());
    if (ev.format === "raw") assert.equal(ev.message, s);
  }), { numRuns: 2000 });
});

test("parse: structured data names act as JSON object keys, and __proto__ is a name like any other", () => {
  const plain = parseSyslog('<14>1 - h a - - [__proto__ polluted="yes"] m', ctx).structured_data!;
  assert.deepEqual(Object.keys(plain), ["__proto__"]);
  assert.deepEqual({ ...Object.getOwnPropertyDescriptor(plain, "__proto__")!.value }, { polluted: "yes" });
  // Repeated SD-IDs merge, a repeated name keeps its last value in its first place, array-index names come first.
  const merged = parseSyslog('<14>1 - h a - - [x@1 b="1" 5="2" b="3" 01="4"][__proto__ polluted="yes"][x@1 c="5" 0="6"] m', ctx).structured_data!;
  assert.deepEqual(Object.keys(merged), ["x@1", "__proto__"]);
  assert.deepEqual(Object.entries(merged["x@1"]!), [["0", "6"], ["5", "2"], ["b", "3"], ["01", "4"], ["c", "5"]]);
  assert.deepEqual({ ...Object.getOwnPropertyDescriptor(merged, "__proto__")!.value }, { polluted: "yes" });
  assert.equal(({} as Record<string, unknown>).polluted, undefined, "Object.prototype untouched");
});

// ---- event lines written from bytes -----------------------------------------------------------

/** Event lines of `bytes` decoded as one text, as the input emits them. */
function lineOf(buf: Uint8Array, start = 0, end = buf.length): string {
  const out = new JsonLineBuffer(64);
  writeSyslogEvent(out, buf, start, end, { tail: eventTail("192.0.2.7", "tcp"), now: NOW.getTime() });
  assert.equal(out.lines, 1);
  return out.take(1)[0]!;
}

const jsonChar = fc.oneof(
  fc.integer({ min: 0, max: 0x7f }).map((c) => String.fromCharCode(c)),
  fc.constantFrom("é", "\u2028", "\u2029", "\ufeff", "😀", "\ud800", "\udfff", "\u0085"),
);

test("json lines: strings are escaped exactly as JSON.stringify does, valid UTF-8 or not", () => {
  // A BOM inside a field is content: decode without dropping one.
  const text = new TextDecoder("utf-8", { ignoreBOM: true });
  const asJson = (bytes: Uint8Array) => {
    const out = new JsonLineBuffer(8);
    out.reserve(6 * bytes.length + 3);
    out.string(bytes, 0, bytes.length);
    out.endLine();
    return out.take(1)[0];
  };
  fc.assert(fc.property(fc.oneof(fc.string({ unit: jsonChar }), fc.string({ unit: "binary" })), (s) => {
    const bytes = enc(s);
    assert.equal(asJson(bytes), JSON.stringify(text.decode(bytes)));
  }), { numRuns: 3000 });
  fc.assert(fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
    assert.equal(asJson(bytes), JSON.stringify(text.decode(bytes)));
  }), { numRuns: 3000 });
});

test("json lines: an event line is the JSON of the event, and take() hands out whole lines in order", () => {
  const out = new JsonLineBuffer(16);
  const tail = eventTail("192.0.2.7", "udp");
  const msgs = ["<13>Nov 27 10:00:00 host app[1]: one", '<14>1 - h a - - [x@1 q="\\"é\\""] two', "three \u0001 \"raw\""];
  for (const m of msgs) {
    const b = enc(m);
    writeSyslogEvent(out, b, 0, b.length, { tail, now: NOW.getTime() });
  }
  assert.equal(out.lines, 3);
  const first = out.take(2);
  assert.equal(out.lines, 1);
  const rest = out.take(5);
  assert.equal(out.lines, 0);
  assert.deepEqual(out.take(5), []);
  const lines = [...first, ...rest];
  assert.equal(lines.length, 3);
  lines.forEach((line, i) => assert.equal(line, JSON.stringify(parseSyslog(msgs[i]!, ctx))));
  assert.deepEqual(JSON.parse(lines[1]!).structured_data, { "x@1": { q: '"é"' } });
  assert.equal(JSON.parse(lines[2]!).message, 'three \u0001 "raw"');
});

test("json lines: a message is read only within its range of the buffer", () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 30 }), fc.oneof(fc.uint8Array({ maxLength: 60 }), fc.string().map((s) => enc("<13>1 - h a p m [x y=\"" + s))), fc.uint8Array({ maxLength: 30 }), (before, msg, after) => {
    const buf = new Uint8Array(before.length + msg.length + after.length);
    buf.set(before);
    buf.set(msg, before.length);
    buf.set(after, before.length + msg.length);
    assert.equal(lineOf(buf, before.length, before.length + msg.length), lineOf(msg));
  }), { numRuns: 2000 });
});

// ---- framing --------------------------------------------------------------------------------

function frameAll(chunks: Uint8Array[], max = 65536): { msgs: string[]; framer: SyslogFramer } {
  const framer = new SyslogFramer(max);
  const out: Uint8Array[] = [];
  for (const c of chunks) framer.push(c, into(out));
  framer.flush(into(out));
  return { msgs: out.map(dec), framer };
}

const msgArb = fc.string({ minLength: 1, maxLength: 80 }).filter((s) => !/[\n\r\0]/.test(s));

test("framer: octet-counted messages survive any chunking", () => {
  fc.assert(fc.property(fc.array(msgArb, { minLength: 1, maxLength: 20 }), fc.array(fc.nat(), { maxLength: 30 }), (msgs, cuts) => {
    const stream = enc(msgs.map((m) => `${enc(m).length} ${m}`).join(""));
    const { msgs: got, framer } = frameAll(split(stream, cuts));
    assert.deepEqual(got, msgs);
    assert.equal(framer.truncated, 0);
  }), { numRuns: 500 });
});

test("framer: LF, CRLF and NUL terminated messages survive any chunking", () => {
  const sep = fc.constantFrom("\n", "\r\n", "\0");
  fc.assert(fc.property(fc.array(fc.tuple(msgArb.filter((s) => !/^[1-9]/.test(s)), sep), { minLength: 1, maxLength: 20 }), fc.array(fc.nat(), { maxLength: 30 }), (pairs, cuts) => {
    const stream = enc(pairs.map(([m, s]) => m + s).join(""));
    const { msgs: got } = frameAll(split(stream, cuts));
    assert.deepEqual(got, pairs.map(([m]) => m));
  }), { numRuns: 500 });
});

test("framer: arbitrary bytes never throw, and chunking never changes the result", () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 400 }), fc.array(fc.nat(), { maxLength: 40 }), fc.integer({ min: 1, max: 64 }), (bytes, cuts, max) => {
    const whole = frameAll([bytes], max);
    const pieces = frameAll(split(bytes, cuts), max);
    assert.deepEqual(pieces.msgs, whole.msgs);
    // No invented bytes: every message is at most max bytes and all of them fit in the input.
    let total = 0;
    const framer = new SyslogFramer(max);
    const raw: Uint8Array[] = [];
    for (const c of split(bytes, cuts)) framer.push(c, into(raw));
    framer.flush(into(raw));
    for (const m of raw) {
      assert.ok(m.length <= max);
      total += m.length;
    }
    assert.ok(total <= bytes.length);
  }), { numRuns: 1000 });
});

test("framer: trailing LF, CR and NUL of an octet-counted message are not part of it", () => {
  const frames = ["<13>1 - h a - - - one\n", "<13>1 - h a - - - two\r\n", "<13>1 - h a - - - three\0", "\n", "<13>1 - h a - - - four"];
  const stream = enc(frames.map((f) => `${enc(f).length} ${f}`).join(""));
  const { msgs } = frameAll(split(stream, [7, 30, 31, 55]));
  assert.deepEqual(msgs, ["<13>1 - h a - - - one", "<13>1 - h a - - - two", "<13>1 - h a - - - three", "<13>1 - h a - - - four"]);
  assert.equal(parseSyslog(msgs[0]!, ctx).message, "one");
});

test("framer: oversize messages are cut to max_message_bytes and counted", () => {
  const long = "x".repeat(100);
  const lf = frameAll([enc(`${long}\nshort\n`)], 10);
  assert.deepEqual(lf.msgs, ["x".repeat(10), "short"]);
  assert.equal(lf.framer.truncated, 1);
  const octet = frameAll(split(enc(`100 ${long}5 short`), [3, 7, 50, 90]), 10);
  assert.deepEqual(octet.msgs, ["x".repeat(10), "short"]);
  assert.equal(octet.framer.truncated, 1);
});

// ---- the input over real sockets ------------------------------------------------------------

test("input: TCP octet counting, split across writes", async () => {
  await withInput({ listen: ["tcp://127.0.0.1:0"] }, async (t) => {
    const bytes = new Uint8Array(await readFile(join(FIXTURES, "octet-counted.bin")));
    await sendTcp(t.addr("tcp").port, split(bytes, [5, 100, 101, 250]));
    const evs = await t.events(3);
    assert.deepEqual(evs.map((e) => e.format), ["rfc5424", "rfc5424", "rfc5424"]);
    assert.equal(evs[0]!.source_ip, "127.0.0.1");
    assert.equal(evs[0]!.transport, "tcp");
    assert.equal(evs[1]!.message, "i am foobar");
  });
});

test("input: TCP LF framing with every fixture variant, and UDP", async () => {
  const lines = (await readFile(join(FIXTURES, "variants.txt"), "utf8")).split("\n").filter((l) => l !== "");
  await withInput({ listen: ["tcp://127.0.0.1:0", "udp://127.0.0.1:0"] }, async (t) => {
    await sendTcp(t.addr("tcp").port, [enc(lines.join("\r\n") + "\r\n")]);
    const tcp = await t.events(lines.length);
    assert.deepEqual(tcp.map((e) => e.format), EXPECTED_VARIANTS.map((e) => e.format));
    assert.equal(tcp[7]!.message, lines[7]);

    const udp = createSocket("udp4");
    const { port } = t.addr("udp");
    for (const l of lines.slice(0, 3)) await new Promise<void>((r) => udp.send(enc(l + "\n"), port, "127.0.0.1", () => r()));
    const all = await t.events(lines.length + 3);
    udp.close();
    const viaUdp = all.slice(lines.length);
    assert.ok(viaUdp.every((e) => e.transport === "udp" && e.source_ip === "127.0.0.1"));
    assert.deepEqual(viaUdp.map((e) => e.appname).sort(), ["evntslog", "root", "su"]);
  });
});

test("input: random bytes do not crash it; it keeps serving afterwards", async () => {
  await withInput({ listen: ["tcp://127.0.0.1:0", "udp://127.0.0.1:0"], max_message_bytes: 256 }, async (t) => {
    const junk = fc.sample(fc.uint8Array({ minLength: 1, maxLength: 2000 }), 20);
    const udp = createSocket("udp4");
    const { port } = t.addr("udp");
    for (const j of junk.slice(0, 10)) await new Promise<void>((r) => udp.send(j, port, "127.0.0.1", () => r()));
    udp.close();
    for (const j of junk.slice(10)) await sendTcp(t.addr("tcp").port, [j]);
    await sendTcp(t.addr("tcp").port, [enc("<13>Nov 27 10:00:00 alive app: still here\n")]);
    const deadline = Date.now() + 3000;
    let evs: SyslogEvent[] = [];
    while (!evs.some((e) => e.message === "still here")) {
      if (Date.now() > deadline) assert.fail("the input stopped serving");
      evs = await t.events(evs.length + 1);
    }
    assert.ok(evs.every((e) => e.message === null || enc(e.message).length <= 256 * 3));
  });
});

for (const [bound, limits] of [["events", DEFAULT_LIMITS], ["bytes", { ...DEFAULT_LIMITS, tcpPauseEvents: 1_000_000, tcpPauseBytes: 64 << 10 }]] as const) {
  test(`input: a full spool pauses TCP reading (bound by ${bound}), and nothing is lost once it drains`, async () => {
  await withInput({ listen: ["tcp://127.0.0.1:0"] }, async (t) => {
    const n = 30_000;
    const body: string[] = [];
    for (let i = 0; i < n; i++) body.push(`<13>Nov 27 10:00:00 host app[1]: message number ${i}`);
    const sent = sendTcp(t.addr("tcp").port, [enc(body.join("\n") + "\n")]);
    const deadline = Date.now() + 3000;
    while (t.counters.detail.tcp_paused !== true) {
      if (Date.now() > deadline) assert.fail("TCP reading never paused while the spool was full");
      await new Promise((r) => setTimeout(r, 5));
    }
    const evs = await t.events(n);
    await sent;
    assert.equal(evs.length, n);
    evs.forEach((e, i) => assert.equal(e.message, `message number ${i}`));
    // The last batch can be read back from the spool a moment before its write resolves.
    await until(() => t.counters.detail.tcp_paused === false, "TCP reading to resume", 3000);
  }, { spoolBytes: 256 << 10, limits });
  });
}

test("input: a full spool drops UDP datagrams and counts them", async () => {
  await withInput({ listen: ["udp://127.0.0.1:0"] }, async (t) => {
    const udp = createSocket("udp4");
    const { port } = t.addr("udp");
    const n = 3000;
    for (let i = 0; i < n; i++) {
      await new Promise<void>((r) => udp.send(enc(`<13>Nov 27 10:00:00 host app: datagram ${i} ${"p".repeat(200)}`), port, "127.0.0.1", () => r()));
      // Paced, so the kernel's socket buffers do not drop them before the input sees them.
      if (i % 20 === 19) await new Promise((r) => setTimeout(r, 1));
    }
    const deadline = Date.now() + 3000;
    while (!((t.counters.detail.udp_dropped as number) > 0)) {
      if (Date.now() > deadline) assert.fail(`no UDP drop counted while the spool was full: ${JSON.stringify(t.counters)}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.ok(t.counters.errors >= 1);
    assert.match(t.counters.last_error ?? "", /UDP datagrams dropped/);
    // Once the spool drains, datagrams are taken again.
    const before = (await t.events(1)).length;
    udp.send(enc("<13>Nov 27 10:00:00 host app: after the drain"), port, "127.0.0.1");
    let evs: SyslogEvent[] = [];
    while (!evs.some((e) => e.message === "after the drain")) evs = await t.events(Math.max(before, evs.length) + 1);
    udp.close();
    assert.ok(evs.length + (t.counters.detail.udp_dropped as number) <= n + 1);
  }, { spoolBytes: 128 << 10, limits: { ...DEFAULT_LIMITS, tcpPauseEvents: 100, udpDropEvents: 200 } });
});

test("input: max_connections refuses extra connections; idle connections are closed", async () => {
  await withInput({ listen: ["tcp://127.0.0.1:0"], max_connections: 1, idle_timeout: "150ms" }, async (t) => {
    const { port } = t.addr("tcp");
    const open = () => new Promise<{ closed: Promise<number> }>((resolve, reject) => {
      const started = Date.now();
      const s = connect(port, "127.0.0.1", () => resolve({ closed: new Promise((r) => s.on("close", () => r(Date.now() - started))) }));
      s.on("error", reject);
    });
    const first = await open();
    const deadline = Date.now() + 2000;
    while (t.counters.detail.connections !== 1) {
      if (Date.now() > deadline) assert.fail("first connection not seen");
      await new Promise((r) => setTimeout(r, 5));
    }
    const second = await open();
    await second.closed;
    assert.equal(t.counters.detail.rejected_connections, 1);
    const idleFor = await first.closed;
    assert.ok(idleFor >= 100, `closed after ${idleFor} ms`);
  });
});

/** A logger that keeps its lines, parsed. */
function captureLog() {
  const lines: Array<Record<string, any>> = [];
  return { lines, log: createLogger("debug", { write: (l) => void lines.push(JSON.parse(l)) }) };
}

test("input: a refused emit is kept and retried with TCP paused; 10 connections x 1,000 messages each arrive once, in order", async () => {
  const fault: EmitFault = { failing: true, rejected: 0 };
  const { lines, log } = captureLog();
  const conns = 10, perConn = 1000;
  await withInput({ listen: ["tcp://127.0.0.1:0"] }, async (t) => {
    // Before the first refusal, so "less than 10 s since" holds for the first line too.
    const refusedAt = Date.now();
    const { port } = t.addr("tcp");
    const senders = Array.from({ length: conns }, (_, c) => {
      const body: string[] = [];
      for (let i = 0; i < perConn; i++) body.push(`<13>Nov 27 10:00:00 host app[${c}]: conn ${c} seq ${i}\n`);
      // In several writes, so the input reads (and emits) each connection in several batches.
      return sendTcp(port, Array.from({ length: 10 }, (_, k) => enc(body.slice(k * 100, (k + 1) * 100).join(""))));
    });
    // Awaited below; a failed assertion before that must not leave their rejections unhandled.
    for (const s of senders) s.catch(() => {});
    await until(() => fault.rejected >= 3, "three refused emits");
    const d = t.counters.detail;
    assert.equal(d.tcp_paused, true, "TCP reading paused while the spool refuses");
    assert.equal(d.emit_retrying, true);
    assert.ok((d.emit_failures as number) >= 3);
    assert.ok(t.counters.errors >= 1);
    assert.match(t.counters.last_error ?? "", /spool refused events \(EIO/);
    fault.failing = false;
    const evs = await t.events(conns * perConn);
    await Promise.all(senders);
    await until(() => t.counters.detail.emit_retrying === false && t.counters.detail.tcp_paused === false, "retry over, reading resumed", 3000);
    const all = await t.events(0);
    assert.equal(all.length, conns * perConn, "nothing twice");
    const next = new Array<number>(conns).fill(0);
    for (const e of evs) {
      const [, c, i] = /^conn (\d+) seq (\d+)$/.exec(e.message!)!.map(Number);
      assert.equal(i, next[c!], `connection ${c}: seq ${i} in order`);
      next[c!]!++;
    }
    assert.deepEqual(next, new Array(conns).fill(perConn));
    assert.equal(t.counters.detail.emit_failures, fault.rejected);
    const refusedLines = lines.filter((l) => l.msg.startsWith("the spool refused events"));
    assert.match(refusedLines[0]!.error, /EIO/);
    // One line at the first refusal, the next no sooner than 10 s later.
    if (Date.now() - refusedAt < 10_000) assert.equal(refusedLines.length, 1, "one line, not one per refusal");
    const recovered = lines.filter((l) => l.msg === "the spool takes events again");
    assert.equal(recovered.length, 1);
    assert.equal(recovered[0]!.refusals, fault.rejected);
  }, { emitFault: fault, log });
  // Every refusal is in some line: the first at once, the rest as a count at most every 10 s or at stop.
  const counted = lines.filter((l) => l.msg.startsWith("the spool refused events")).reduce((n, l) => n + l.refusals, 0);
  assert.equal(counted, fault.rejected);
});

test("input: a stop while the spool refuses ends the retries promptly and logs what was not spooled", async () => {
  const fault: EmitFault = { failing: true, rejected: 0 };
  const { lines, log } = captureLog();
  await withInput({ listen: ["tcp://127.0.0.1:0"] }, async (t) => {
    await sendTcp(t.addr("tcp").port, [enc("<13>Nov 27 10:00:00 host app: one\n<13>Nov 27 10:00:00 host app: two\n")]);
    await until(() => fault.rejected >= 2, "refused emits");
  }, { emitFault: fault, log });
  const lost = lines.filter((l) => l.msg.startsWith("events not spooled"));
  assert.equal(lost.reduce((n, l) => n + l.events, 0), 2);
});

test("input: the unterminated last message of a connection cut by idle_timeout is kept", async () => {
  await withInput({ listen: ["tcp://127.0.0.1:0"], idle_timeout: "150ms" }, async (t) => {
    const closed = new Promise<void>((resolve, reject) => {
      const s = connect(t.addr("tcp").port, "127.0.0.1", () => s.write("<13>Nov 27 10:00:00 host app: complete\n<13>Nov 27 10:00:00 host app: no newline yet"));
      s.on("error", reject);
      s.on("close", () => resolve());
    });
    await closed;
    const evs = await t.events(2);
    assert.deepEqual(evs.map((e) => e.message), ["complete", "no newline yet"]);
  });
});

test("input: connections over max_connections are counted and logged, one line per 10 s with the count since the last", async () => {
  const { lines, log } = captureLog();
  let quick = false;
  await withInput({ listen: ["tcp://127.0.0.1:0"], max_connections: 1 }, async (t) => {
    const { port } = t.addr("tcp");
    const open = () => new Promise<{ closed: Promise<void>; socket: ReturnType<typeof connect> }>((resolve, reject) => {
      const s = connect(port, "127.0.0.1", () => resolve({ socket: s, closed: new Promise((r) => s.on("close", () => r())) }));
      s.on("error", () => {});
      s.once("error", reject);
    });
    const first = await open();
    await until(() => t.counters.detail.connections === 1, "the first connection");
    const t0 = Date.now();
    for (let i = 0; i < 5; i++) await (await open()).closed;
    assert.equal(t.counters.detail.rejected_connections, 5);
    const refused = lines.filter((l) => l.msg === "TCP connections refused: max_connections reached");
    assert.deepEqual([refused[0]!.refused, refused[0]!.max_connections, refused[0]!.source_ip], [1, 1, "127.0.0.1"]);
    if (Date.now() - t0 < 10_000) assert.equal(refused.length, 1, "the next line no sooner than 10 s later");
    quick = Date.now() - t0 < 10_000;
    first.socket.destroy();
  }, { log });
  const refused = lines.filter((l) => l.msg === "TCP connections refused: max_connections reached");
  assert.equal(refused.reduce((n, l) => n + l.refused, 0), 5, "every refusal in some line, at the latest when the input stops");
  if (quick) assert.deepEqual(refused.map((l) => l.refused), [1, 4]);
});

test("throttled: the first occurrence at once, then one line per interval with the count, the rest at close", async () => {
  const got: number[] = [];
  const th = new Throttled((n) => got.push(n), 60);
  th.hit();
  th.hit();
  th.hit(3);
  assert.deepEqual(got, [1]);
  await until(() => got.length === 2, "the second line");
  assert.deepEqual(got, [1, 4]);
  await new Promise((r) => setTimeout(r, 150));
  assert.deepEqual(got, [1, 4], "nothing more to say: no line");
  th.hit();
  assert.deepEqual(got, [1, 4, 1], "after a quiet interval, at once again");
  th.hit(2);
  th.close();
  assert.deepEqual(got, [1, 4, 1, 2]);
});

test("kernel drops: /proc/net/udp rows are parsed (port, inode, drops)", () => {
  const text = [
    "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops             ",
    "  123: 0100007F:A1B2 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17         ",
    "  124: 00000000:0202 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 99 2 0000000000000000 0",
    "garbage",
  ].join("\n");
  assert.deepEqual(parseUdpTable(text), [{ port: 0xa1b2, inode: "4242", drops: 17 }, { port: 514, inode: "99", drops: 0 }]);
  const v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n" +
    "   88: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 777 2 0000000000000000 3\n";
  assert.deepEqual(parseUdpTable(v6), [{ port: 8080, inode: "777", drops: 3 }]);
});

const NO_PROC = existsSync("/proc/net/udp") && existsSync("/proc/self/fd") ? false : "no /proc/net/udp (not Linux)";
/** Sends `n` datagrams of `size` bytes to 127.0.0.1:`port` as fast as it can; prints how many were sent. */
const UDP_BURST = `
const [port, n, size] = process.argv.slice(1).map(Number);
const s = require("node:dgram").createSocket("udp4");
let sent = 0, done = 0;
for (let i = 0; i < n; i++) {
  const head = "<13>Nov 27 10:00:00 host app: datagram " + i + " ";
  s.send(Buffer.from(head + "p".repeat(size - head.length)), port, "127.0.0.1", (err) => {
    if (!err) sent++;
    if (++done === n) { console.log(sent); s.close(); }
  });
}`;

test("input: datagrams the kernel drops while the input is busy count in udp_dropped; sent = spooled + dropped", { skip: NO_PROC }, async () => {
  await withInput({ listen: ["udp://127.0.0.1:0"] }, async (t) => {
    const { port } = t.addr("udp");
    // spawnSync holds this process, and with it the input, while the child sends: the socket's
    // receive buffer (8 MiB at most) overflows and the kernel drops the rest.
    const r = spawnSync("node", ["-e", UDP_BURST, String(port), "4000", "8000"], { encoding: "utf8", timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    const sent = Number(r.stdout.trim());
    assert.ok(sent > 0, r.stdout);
    let spooled = 0;
    await until(async () => {
      spooled = (await t.events(0)).length;
      return spooled + ((t.counters.detail.udp_dropped as number) ?? 0) >= sent;
    }, "every datagram spooled or counted as dropped", 30_000).catch((err) => {
      throw new Error(`${err.message}: sent ${sent}, spooled ${spooled}, ${JSON.stringify(t.counters.detail)}`);
    });
    const d = t.counters.detail;
    assert.ok((d.udp_dropped_kernel as number) > 0, `kernel drops counted: ${JSON.stringify(d)}`);
    assert.equal(d.udp_dropped, d.udp_dropped_kernel, "none dropped by the input's own queue");
    assert.equal(spooled + (d.udp_dropped as number), sent, `sent ${sent} = spooled ${spooled} + dropped ${d.udp_dropped}`);
    assert.match(t.counters.last_error ?? "", /dropped by the kernel/);
  });
});

test("kernel drops: another process's socket on the port is not counted", { skip: NO_PROC }, async () => {
  // A child binds a UDP port and then never reads, so the kernel drops what it is sent.
  const child = spawn("node", ["-e", `const s = require("node:dgram").createSocket("udp4");
    s.bind(0, "127.0.0.1", () => { console.log(s.address().port); const end = Date.now() + 20000; while (Date.now() < end); });`], { stdio: ["ignore", "pipe", "inherit"] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout!.once("data", (d: Buffer) => resolve(Number(d.toString().trim())));
      child.once("exit", (code) => reject(new Error(`the child exited (${code})`)));
    });
    const udp = createSocket("udp4");
    const table = async () => parseUdpTable(await readFile("/proc/net/udp", "utf8")).filter((r) => r.port === port);
    for (let i = 0; i < 2000 && !(await table()).some((r) => r.drops > 0); i += 100) {
      for (let k = 0; k < 100; k++) udp.send(enc("x".repeat(1000)), port, "127.0.0.1");
      await new Promise((r) => setTimeout(r, 5));
    }
    udp.close();
    assert.ok((await table()).some((r) => r.drops > 0), "the child's socket dropped datagrams");
    assert.equal(await new KernelUdpDrops(() => [port]).read(), 0);
  } finally {
    child.kill();
  }
});

test("input: a port already in use fails run() instead of hanging", async () => {
  const busy = createServer();
  await new Promise<void>((r) => busy.listen(0, "127.0.0.1", () => r()));
  const port = (busy.address() as { port: number }).port;
  const dir = await mkdtemp(join(tmpdir(), "syslog-input-"));
  const spool = await Spool.open({ dir: join(dir, "spool"), maxBytes: 1 << 20, whenFull: "block", fsync: 5, log: silentLogger });
  const ac = new AbortController();
  try {
    const c = createInputContext({ name: "sys", spool, state: new StateStore(join(dir, "state")), route: "sys", log: silentLogger, signal: ac.signal, hostname: "test" });
    const input = plugin.create(plugin.options.parse({ listen: ["udp://127.0.0.1:0", `tcp://127.0.0.1:${port}`] }), c);
    await assert.rejects(input.run(), /EADDRINUSE|in use/i);
  } finally {
    ac.abort();
    await new Promise<void>((r) => busy.close(() => r()));
    await spool.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test("options: defaults, units and bad listen addresses", () => {
  const o = plugin.options.parse({ listen: ["udp://0.0.0.0:514"] });
  assert.equal(o.max_message_bytes, 65536);
  assert.equal(o.idle_timeout, 300_000);
  assert.equal(o.max_connections, 1000);
  assert.equal(plugin.options.parse({ listen: ["tcp://[::1]:6514"], idle_timeout: "30s", max_message_bytes: "1KiB" }).idle_timeout, 30_000);
  for (const bad of [{ listen: ["http://x:1"] }, { listen: [] }, { listen: ["udp://host"] }, { listen: ["udp://h:1"], nope: 1 }]) {
    assert.equal(plugin.options.safeParse(bad).success, false, JSON.stringify(bad));
  }
});

test("loggen: 20,000 RFC 5424 octet-counted over TCP, 5,000 RFC 3164 LF over TCP, 2,000 over UDP", { skip: LOGGEN ? false : "loggen is not installed (apt-get install syslog-ng-core)" }, async () => {
  await withInput({ listen: ["tcp://127.0.0.1:0", "udp://127.0.0.1:0"] }, async (t) => {
    const tcp = String(t.addr("tcp").port);
    const udp = String(t.addr("udp").port);
    // Deno's node:dgram receives only a few hundred datagrams a second (a known limit of the
    // input under Deno, see README), so there the UDP part is smaller and slower.
    const deno = isDeno();
    const udpCount = deno ? 200 : 2000;
    await loggen(["--inet", "--dgram", "--rate", deno ? "100" : "20000", "--number", String(udpCount), "127.0.0.1", udp]);
    await loggen(["--inet", "--stream", "--syslog-proto", "--sdata", '[origin@32473 ip="192.0.2.1" software="loggen"]', "--size", "200", "--rate", "200000", "--number", "20000", "127.0.0.1", tcp]);
    await loggen(["--inet", "--stream", "--rate", "200000", "--number", "5000", "127.0.0.1", tcp]);
    const evs = await t.events(25_000 + udpCount).catch(async (err) => {
      const partial = await t.events(0);
      const by = (p: (e: SyslogEvent) => boolean) => partial.filter(p).length;
      throw new Error(`${err.message} (tcp 5424 ${by((e) => e.format === "rfc5424")}, tcp 3164 ${by((e) => e.transport === "tcp" && e.format === "rfc3164")}, udp ${by((e) => e.transport === "udp")}, ${JSON.stringify(t.counters.detail)})`);
    });
    assert.equal(evs.length, 25_000 + udpCount);
    const r5424 = evs.filter((e) => e.format === "rfc5424" && e.transport === "tcp");
    const r3164tcp = evs.filter((e) => e.format === "rfc3164" && e.transport === "tcp");
    const viaUdp = evs.filter((e) => e.transport === "udp");
    assert.deepEqual([r5424.length, r3164tcp.length, viaUdp.length], [20_000, 5_000, udpCount]);
    for (const e of [...r5424, ...r3164tcp, ...viaUdp]) {
      assert.match(e.appname ?? "", /^prg\d+$/);
      assert.match(e.procid ?? "", /^\d+$/);
      assert.ok(e.hostname, "hostname parsed");
      assert.match(e.message ?? "", /seq: \d+/);
      assert.match(e.timestamp ?? "", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)$/);
      assert.equal(e.source_ip, "127.0.0.1");
    }
    for (const e of r5424) assert.deepEqual(e.structured_data?.["origin@32473"], { ip: "192.0.2.1", software: "loggen" });
    // loggen ends each octet-counted frame with a newline, which is not part of the message.
    for (const e of evs) assert.doesNotMatch(e.message!, /[\r\n\0]$/);
    // every sequence number of the 5424 run arrived once
    const seqs = new Set(r5424.map((e) => /seq: (\d+)/.exec(e.message!)![1]));
    assert.equal(seqs.size, 20_000);
  });
});
