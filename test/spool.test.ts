import { describe, it, afterEach } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawn } from "node:child_process";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Spool, HEADER_BYTES, type SpoolOptions, type SpoolRecord } from "../agent/spool/index.ts";
import { createLogger, silentLogger } from "../agent/log.ts";
import { crc32, crc32Table } from "../agent/spool/crc32.ts";
import { isDeno } from "../agent/runtime/detect.ts";

const dec = new TextDecoder();
const dirs: string[] = [];
const open: Spool[] = [];

function tmpDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "spool-test-"));
  dirs.push(d);
  return d;
}

async function openSpool(dir: string, opts: Partial<SpoolOptions> = {}): Promise<Spool> {
  const s = await Spool.open({ dir, maxBytes: 64 << 20, whenFull: "block", fsync: "never", log: silentLogger, ...opts });
  open.push(s);
  return s;
}

function captureLog() {
  const lines: Array<Record<string, any>> = [];
  const log = createLogger("debug", { write: (l) => void lines.push(JSON.parse(l)) });
  return { log, lines };
}

function text(r: SpoolRecord): string {
  return dec.decode(r.payload);
}

/** Read everything available, optionally acking it. */
function drain(spool: Spool, ack = true): SpoolRecord[] {
  const out: SpoolRecord[] = [];
  for (let recs = spool.read(1 << 20); recs.length > 0; recs = spool.read(1 << 20)) {
    for (const r of recs) {
      out.push(r);
      if (ack) spool.ack(r.id);
    }
  }
  return out;
}

function segFiles(dir: string): string[] {
  return fs.readdirSync(dir).filter((n) => n.endsWith(".seg")).sort();
}

const tick = () => new Promise<void>((r) => setTimeout(r, 0));

/** Segment files are unlinked in the background: wait (bounded) until the count settles at n. */
async function segCountBecomes(dir: string, n: (count: number) => boolean): Promise<number> {
  for (let i = 0; i < 400; i++) {
    const count = segFiles(dir).length;
    if (n(count)) return count;
    await new Promise((r) => setTimeout(r, 5));
  }
  return segFiles(dir).length;
}

afterEach(async () => {
  for (const s of open.splice(0)) await s.close().catch(() => {});
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

describe("crc32", () => {
  it("matches the standard check value and the table implementation", () => {
    const check = new TextEncoder().encode("123456789");
    assert.equal(crc32(check), 0xcbf43926);
    assert.equal(crc32Table(check), 0xcbf43926);
    const data = new Uint8Array(10_000).map((_, i) => (i * 131) & 255);
    assert.equal(crc32(data), crc32Table(data));
  });
});

describe("spool append/read/ack", () => {
  it("framed events (bytes of \\n-ended lines) make the same records as the same events as strings, cut by events and bytes", async () => {
    const lines = Array.from({ length: 2500 }, (_, i) => `ev ${i} ${"é".repeat(i % 7)}`);
    const bytes = new TextEncoder().encode(lines.map((l) => `${l}\n`).join(""));
    for (const opts of [{ maxEventsPerRecord: 1000 }, { maxEventsPerRecord: 5000, maxBytesPerRecord: 4096 }]) {
      const asStrings = await openSpool(tmpDir());
      const asBytes = await openSpool(tmpDir());
      await asStrings.append("r", "text", lines, opts);
      await asBytes.append("r", "text", { bytes, count: lines.length }, opts);
      const a = drain(asStrings).map((r) => [r.count, text(r)]);
      const b = drain(asBytes).map((r) => [r.count, text(r)]);
      assert.deepEqual(b, a, JSON.stringify(opts));
      assert.ok(a.length > 1);
    }
    const one = await openSpool(tmpDir());
    await one.append("r", "json", { bytes: new TextEncoder().encode('{"a":1}\n{"b":2}\n'), count: 2 }, { maxBytesPerRecord: 3 });
    assert.deepEqual(drain(one).map((r) => [r.kind, r.count, text(r)]), [["json", 1, '{"a":1}\n'], ["json", 1, '{"b":2}\n']], "a line longer than the byte limit is a record of its own");
  });

  it("returns records in append order with their route, kind, count and payload", async () => {
    const spool = await openSpool(tmpDir());
    await spool.append("r1", "text", ["a", "b"]);
    await spool.append("r2", "json", ['{"x":1}']);
    await spool.append("r1", "text", ["héllo wörld ✓"]);
    const st = spool.stats();
    assert.equal(st.events, 4);
    assert.ok(st.bytes > 0);
    const recs = spool.read(1 << 20);
    assert.deepEqual(recs.map((r) => [r.route, r.kind, r.count, text(r)]), [
      ["r1", "text", 2, "a\nb\n"],
      ["r2", "json", 1, '{"x":1}\n'],
      ["r1", "text", 1, "héllo wörld ✓\n"],
    ]);
    assert.equal(new Set(recs.map((r) => r.id)).size, 3);
    assert.ok(recs.every((r) => Math.abs(r.appendedAt - Date.now()) < 60_000));
    assert.deepEqual(spool.read(1 << 20), [], "handed-out records are not returned again");
    for (const r of recs) spool.ack(r.id);
    assert.equal(spool.stats().events, 0);
    assert.equal(spool.stats().bytes, 0);
    spool.ack(recs[0]!.id); // a second ack of the same id is ignored
    spool.ack(987654); // unknown ids are ignored
    assert.equal(spool.stats().events, 0);
  });

  it("read(maxBytes) limits payload bytes but returns at least one record", async () => {
    const spool = await openSpool(tmpDir());
    for (let i = 0; i < 5; i++) await spool.append("r", "text", ["x".repeat(99)]); // 100-byte payloads
    assert.equal(spool.read(250).length, 2);
    assert.equal(spool.read(10).length, 1);
    assert.equal(spool.read(1 << 20).length, 2);
  });

  it("splits an append into records by max events and max bytes", async () => {
    const spool = await openSpool(tmpDir());
    const events = Array.from({ length: 2500 }, (_, i) => `event ${i}`);
    await spool.append("r", "text", events);
    const recs = drain(spool);
    assert.deepEqual(recs.map((r) => r.count), [1000, 1000, 500]);
    assert.equal(recs.map(text).join(""), events.join("\n") + "\n");

    await spool.append("r", "text", events.slice(0, 10), { maxEventsPerRecord: 3 });
    assert.deepEqual(drain(spool).map((r) => r.count), [3, 3, 3, 1]);

    // 100-byte events (with newline) and a 250-byte cap: two per record; a 1000-byte event alone.
    const mixed = ["a".repeat(99), "b".repeat(99), "c".repeat(99), "d".repeat(999), "e".repeat(99)];
    await spool.append("r", "text", mixed, { maxBytesPerRecord: 250 });
    const split = drain(spool);
    assert.deepEqual(split.map((r) => r.count), [2, 1, 1, 1]);
    assert.ok(split.every((r) => r.payload.length <= 250 || r.count === 1));
    assert.equal(split.map(text).join(""), mixed.join("\n") + "\n");

    // Multi-byte characters count as their UTF-8 bytes: 3 bytes each, so 34 + 1 newline = 103.
    const wide = Array.from({ length: 6 }, () => "€".repeat(34));
    await spool.append("r", "text", wide, { maxBytesPerRecord: 210 });
    const wideRecs = drain(spool);
    assert.deepEqual(wideRecs.map((r) => r.payload.length), [206, 206, 206]);
    assert.equal(wideRecs.map(text).join(""), wide.join("\n") + "\n");
  });

  it("release() puts handed-out records back in order", async () => {
    const spool = await openSpool(tmpDir());
    for (let i = 0; i < 4; i++) await spool.append("r", "text", [`e${i}`]);
    const first = spool.read(1 << 20);
    assert.equal(first.length, 4);
    spool.ack(first[0]!.id);
    spool.release([first[2]!.id, first[1]!.id]);
    const again = spool.read(1 << 20);
    assert.deepEqual(again.map(text), ["e1\n", "e2\n"]);
    for (const r of again) spool.ack(r.id);
    spool.ack(first[3]!.id);
    assert.equal(spool.stats().events, 0);
  });

  it("a payload stays intact until its record is acked or released, while later reads reuse read buffers", async () => {
    const spool = await openSpool(tmpDir());
    // 10 KB records: many read-buffer refills (at least 256 KiB each) over 2 MB.
    const body = (i: number) => `record ${i} `.padEnd(10_000, String.fromCharCode(97 + (i % 26)));
    for (let i = 0; i < 200; i++) await spool.append("r", "text", [body(i)]);
    const held: SpoolRecord[] = [];
    const releasedIds: number[] = [];
    const releasedIdx: number[] = [];
    for (let i = 0; i < 200; i++) {
      const [r] = spool.read(1);
      assert.ok(r, `record ${i} read`);
      assert.equal(text(r), body(i) + "\n", `record ${i} as read`);
      // Every 7th record is held to the end, every 11th released (read again below), the rest acked at once.
      if (i % 7 === 0) held.push(r);
      else if (i % 11 === 0) {
        releasedIds.push(r.id);
        releasedIdx.push(i);
      }
      else spool.ack(r.id);
    }
    for (const r of held) assert.equal(text(r), body(Number(text(r).split(" ")[1])) + "\n");
    assert.deepEqual(held.map((r) => text(r).split(" ")[1]), Array.from({ length: 29 }, (_, k) => String(k * 7)));
    spool.release(releasedIds);
    const again = drain(spool, false);
    assert.deepEqual(again.map((r) => text(r)), releasedIdx.map((i) => body(i) + "\n"));
    for (const r of held) assert.equal(text(r), body(Number(text(r).split(" ")[1])) + "\n", "held payloads survive the re-reads");
  });

  it("waitForData resolves on append and on abort", async () => {
    const spool = await openSpool(tmpDir());
    let woke = false;
    const waiting = spool.waitForData().then(() => { woke = true; });
    await tick();
    assert.equal(woke, false);
    await spool.append("r", "text", ["x"]);
    await waiting;
    assert.equal(woke, true);
    await spool.waitForData(); // data is there: immediate
    drain(spool);
    const ac = new AbortController();
    const aborted = spool.waitForData(ac.signal);
    ac.abort();
    await aborted;
  });

  it("reports the age of the oldest unacked record", async () => {
    const spool = await openSpool(tmpDir());
    assert.equal(spool.stats().oldest_event_age_s, 0);
    await spool.append("r", "text", ["old"]);
    await new Promise((r) => setTimeout(r, 60));
    await spool.append("r", "text", ["new"]);
    assert.ok(spool.stats().oldest_event_age_s >= 0.05);
    const [oldRec, newRec] = spool.read(1 << 20);
    assert.ok(spool.stats().oldest_event_age_s >= 0.05, "in-flight records still count");
    spool.ack(oldRec!.id);
    assert.ok(spool.stats().oldest_event_age_s < 0.05);
    spool.ack(newRec!.id);
    assert.equal(spool.stats().oldest_event_age_s, 0);
  });

  it("rejects appends after close", async () => {
    const spool = await openSpool(tmpDir());
    await spool.close();
    await assert.rejects(spool.append("r", "text", ["x"]), /closed/);
  });
});

describe("spool segments and space", () => {
  it("deletes segments (and their ack files) once every record in them is acked", async () => {
    const dir = tmpDir();
    const spool = await openSpool(dir, { segmentBytes: 4096 });
    for (let i = 0; i < 40; i++) await spool.append("r", "text", ["y".repeat(500)]);
    const before = segFiles(dir).length;
    assert.ok(before >= 5, `expected several segments, got ${before}`);
    const recs = spool.read(1 << 20);
    assert.equal(recs.length, 40);
    // Ack only the first half: the segments holding it go, the rest stay.
    for (const r of recs.slice(0, 20)) spool.ack(r.id);
    const middle = await segCountBecomes(dir, (c) => c < before);
    assert.ok(middle < before && middle > 1, `segments ${before} -> ${middle}`);
    for (const r of recs.slice(20)) spool.ack(r.id);
    assert.equal(await segCountBecomes(dir, (c) => c === 1), 1, "only the active segment remains");
    await spool.close(); // also waits for the background unlinks
    assert.equal(segFiles(dir).length, 1);
    assert.ok(fs.readdirSync(dir).filter((n) => n.endsWith(".ack")).length <= 1, "ack files go with their segments");
  });

  it("block mode waits while full and resumes after acks", async () => {
    const spool = await openSpool(tmpDir(), { maxBytes: 2000, whenFull: "block" });
    await spool.append("r", "text", ["a".repeat(900)]);
    await spool.append("r", "text", ["b".repeat(900)]);
    let done = false;
    const third = spool.append("r", "text", ["c".repeat(900)]).then(() => { done = true; });
    // Appends queue behind a blocked one, even small ones.
    let smallDone = false;
    const small = spool.append("r", "text", ["d"]).then(() => { smallDone = true; });
    await tick();
    assert.equal(done, false);
    assert.equal(smallDone, false);
    assert.equal(spool.stats().blocked, true);
    const recs = spool.read(1 << 20);
    assert.equal(recs.length, 2);
    spool.ack(recs[0]!.id);
    await third;
    await small;
    assert.equal(spool.stats().blocked, false);
    assert.deepEqual(drain(spool).map((r) => text(r)[0]), ["c", "d"]);
    spool.ack(recs[1]!.id);
    assert.equal(spool.stats().bytes, 0);

    // A blocked append is rejected when the spool closes.
    await spool.append("r", "text", ["e".repeat(1500)]);
    const stuck = assert.rejects(spool.append("r", "text", ["f".repeat(900)]), /closed/);
    await tick();
    assert.equal(spool.stats().blocked, true);
    await spool.close();
    await stuck;
  });

  it("a record larger than maxBytes is still taken when the spool is empty", async () => {
    const spool = await openSpool(tmpDir(), { maxBytes: 1000, whenFull: "block" });
    await spool.append("r", "text", ["z".repeat(5000)]);
    assert.equal(drain(spool)[0]!.payload.length, 5001);
  });

  it("drop_oldest discards the oldest records and counts their events", async () => {
    const dir = tmpDir();
    const spool = await openSpool(dir, { maxBytes: 20_000, segmentBytes: 4000, whenFull: "drop_oldest" });
    const total = 200;
    for (let i = 0; i < total; i++) await spool.append("r", "text", [`${i} `.padEnd(300, "x")], { maxEventsPerRecord: 1 });
    const st = spool.stats();
    assert.ok(st.dropped > 0);
    assert.ok(st.bytes <= 20_000);
    assert.equal(st.blocked, false);
    const left = drain(spool);
    assert.equal(left.length + st.dropped, total);
    const firstLeft = Number(text(left[0]!).split(" ")[0]);
    assert.equal(firstLeft, st.dropped, "the newest events survive, in order");
    assert.deepEqual(left.map((r) => Number(text(r).split(" ")[0])), Array.from({ length: left.length }, (_, i) => firstLeft + i));
  });

  it("drop_oldest does not count in-flight records as dropped", async () => {
    const spool = await openSpool(tmpDir(), { maxBytes: 5000, segmentBytes: 2000, whenFull: "drop_oldest" });
    await spool.append("r", "text", ["a".repeat(900)]);
    const [inFlight] = spool.read(1 << 20);
    for (let i = 0; i < 10; i++) await spool.append("r", "text", ["b".repeat(900)]);
    const st = spool.stats();
    assert.ok(st.dropped > 0);
    const left = drain(spool);
    assert.equal(left.length + st.dropped, 10);
    spool.ack(inFlight!.id); // late ack of a dropped segment's record is harmless
    assert.equal(spool.stats().events, 0);
  });
});

describe("spool durability", () => {
  it("fsync never: whenDurable resolves at once", async () => {
    const spool = await openSpool(tmpDir(), { fsync: "never" });
    await spool.append("r", "text", ["x"]);
    await spool.whenDurable();
    await spool.append("r", "text", ["y"], { sync: true });
    await spool.sync();
  });

  it("fsync interval: whenDurable waits for the periodic fsync (or a forced one)", async () => {
    const slow = await openSpool(tmpDir(), { fsync: 600_000 });
    await slow.append("r", "text", ["x"]);
    let durable = false;
    const p = slow.whenDurable().then(() => { durable = true; });
    await tick();
    await tick();
    assert.equal(durable, false, "not before an fsync");
    await slow.sync();
    await p;
    assert.equal(durable, true);
    await slow.whenDurable(); // nothing new since: immediate

    // An append with sync does not wait for the interval.
    await slow.append("r", "text", ["y"], { sync: true });
    await slow.whenDurable();

    const fast = await openSpool(tmpDir(), { fsync: 10 });
    await fast.append("r", "text", ["x"]);
    await fast.whenDurable(); // resolved by the timer alone
  });

  it("fsync always: an awaited append is already durable", async () => {
    const spool = await openSpool(tmpDir(), { fsync: "always" });
    await Promise.all([1, 2, 3].map((i) => spool.append("r", "text", [`e${i}`])));
    let durable = false;
    const p = spool.whenDurable().then(() => { durable = true; });
    await tick();
    assert.equal(durable, true);
    await p;
  });
});

describe("spool recovery", () => {
  it("delivers unacked records after reopen, and not acked ones", async () => {
    const dir = tmpDir();
    const a = await openSpool(dir, { segmentBytes: 2048 });
    for (let i = 0; i < 12; i++) await a.append(`route${i % 2}`, i % 2 ? "json" : "text", [`ev${i}`.padEnd(300, ".")]);
    const recs = a.read(1 << 20);
    assert.equal(recs.length, 12);
    for (const i of [0, 1, 2, 5, 6, 9]) a.ack(recs[i]!.id);
    await a.close();

    const b = await openSpool(dir, { segmentBytes: 2048 });
    assert.equal(b.stats().events, 6);
    const again = drain(b, false);
    assert.deepEqual(again.map((r) => text(r).slice(0, 4).replace(/\.+$/, "")), ["ev3", "ev4", "ev7", "ev8", "ev10", "ev11"]);
    assert.deepEqual(again.map((r) => [r.route, r.kind]), [
      ["route1", "json"], ["route0", "text"], ["route1", "json"], ["route0", "text"], ["route0", "text"], ["route1", "json"],
    ]);
    b.ack(again[0]!.id);
    b.ack(again[5]!.id);
    await b.close();

    const c = await openSpool(dir, { segmentBytes: 2048 });
    assert.deepEqual(drain(c).map((r) => text(r).slice(0, 4).replace(/\.+$/, "")), ["ev4", "ev7", "ev8", "ev10"]);
    await c.close();
    const d = await openSpool(dir, { segmentBytes: 2048 });
    assert.equal(d.stats().events, 0);
    assert.equal(segFiles(dir).length, 1, "fully acked segments are removed on open");
  });

  it("recovers without close() (acks written, process gone)", async () => {
    const dir = tmpDir();
    const a = await openSpool(dir);
    await a.append("r", "text", ["one", "two"], { maxEventsPerRecord: 1 });
    await a.append("r", "text", ["three"]);
    const [first] = a.read(1);
    a.ack(first!.id);
    await tick(); // ack sidecar write happens at the end of the tick
    // `a` is never closed before `b` opens, like a crashed process.
    const b = await openSpool(dir);
    assert.deepEqual(drain(b).map(text), ["two\n", "three\n"]);
  });

  it("ignores a torn entry at the end of an ack file", async () => {
    const dir = tmpDir();
    const a = await openSpool(dir);
    await a.append("r", "text", ["1", "2", "3"], { maxEventsPerRecord: 1 });
    const recs = a.read(1 << 20);
    a.ack(recs[0]!.id);
    await a.close();
    const ackFile = fs.readdirSync(dir).find((n) => n.endsWith(".ack"))!;
    fs.appendFileSync(path.join(dir, ackFile), new Uint8Array([1, 2, 3])); // torn write
    const b = await openSpool(dir);
    const left = b.read(1 << 20);
    assert.deepEqual(left.map(text), ["2\n", "3\n"]);
    b.ack(left[0]!.id);
    await b.close();
    const c = await openSpool(dir);
    assert.deepEqual(drain(c).map(text), ["3\n"], "acks appended after the torn entry still count");
  });

  /** Three records in one segment; returns the segment path and each record's [start, end). */
  async function threeRecords(dir: string, n = 3): Promise<{ seg: string; bounds: Array<[number, number]> }> {
    const s = await openSpool(dir);
    const bounds: Array<[number, number]> = [];
    let seg = "";
    for (let i = 0; i < n; i++) {
      await s.append("route", "text", [`record ${i} `.padEnd(200, "z")]);
      seg = path.join(dir, segFiles(dir).at(-1)!);
      const end = fs.statSync(seg).size;
      bounds.push([i === 0 ? 0 : bounds[i - 1]![1], end]);
    }
    await s.close();
    return { seg, bounds };
  }

  it("detects, logs and skips a torn tail; everything before it is delivered", async () => {
    const dir = tmpDir();
    const { seg, bounds } = await threeRecords(dir);
    const [start, end] = bounds[2]!;
    fs.truncateSync(seg, end - 37); // the process died in the middle of writing record 2
    const { log, lines } = captureLog();
    const s = await openSpool(dir, { log });
    const warn = lines.find((l) => l.level === "warn");
    assert.ok(warn, "a warning is logged");
    assert.match(warn.msg, /torn/);
    assert.equal(warn.segment, path.basename(seg));
    assert.equal(warn.offset, start);
    assert.equal(warn.bytes_skipped, end - 37 - start);
    assert.deepEqual(drain(s, false).map((r) => text(r).slice(0, 8)), ["record 0", "record 1"]);

    // New writes never go after the garbage: they start a new segment.
    await s.append("route", "text", ["after"]);
    assert.equal(fs.statSync(seg).size, end - 37);
    assert.equal(segFiles(dir).length, 2);
    assert.deepEqual(drain(s, false).map(text), ["after\n"]);
  });

  it("detects, logs and skips a header cut short at the tail", async () => {
    const dir = tmpDir();
    const { seg, bounds } = await threeRecords(dir);
    fs.truncateSync(seg, bounds[2]![0] + HEADER_BYTES - 5);
    const { log, lines } = captureLog();
    const s = await openSpool(dir, { log });
    assert.ok(lines.some((l) => l.level === "warn" && /torn/.test(l.msg) && l.offset === bounds[2]![0]));
    assert.equal(drain(s).length, 2);
  });

  it("detects, logs and skips a corrupt record in the middle; the records around it are delivered", async () => {
    const dir = tmpDir();
    const { seg, bounds } = await threeRecords(dir, 4);
    const [start, end] = bounds[1]!;
    const fd = fs.openSync(seg, "r+");
    fs.writeSync(fd, new Uint8Array([0x41 ^ 0x20]), 0, 1, start + 100); // one flipped bit in the payload
    fs.closeSync(fd);
    const { log, lines } = captureLog();
    const s = await openSpool(dir, { log });
    const warn = lines.find((l) => l.level === "warn");
    assert.ok(warn);
    assert.match(warn.msg, /corrupt record/);
    assert.equal(warn.segment, path.basename(seg));
    assert.equal(warn.offset, start);
    assert.equal(warn.bytes_skipped, end - start);
    assert.equal(warn.events_skipped, 1);
    // What was skipped is counted where operators look: status and metrics.
    const st = s.stats();
    assert.equal(st.skipped_bytes, end - start);
    assert.equal(st.skipped_events, 1);
    assert.deepEqual(st.skipped_segments, [path.basename(seg)]);
    assert.deepEqual(drain(s).map((r) => text(r).slice(0, 8)), ["record 0", "record 2", "record 3"]);
  });

  it("resyncs after a damaged header", async () => {
    const dir = tmpDir();
    const { seg, bounds } = await threeRecords(dir, 4);
    const fd = fs.openSync(seg, "r+");
    fs.writeSync(fd, new Uint8Array([0, 0, 0, 0, 0, 0]), 0, 6, bounds[2]![0]); // magic and length gone
    fs.closeSync(fd);
    const { log, lines } = captureLog();
    const s = await openSpool(dir, { log });
    assert.ok(lines.some((l) => l.level === "warn" && l.offset === bounds[2]![0] && l.bytes_skipped === bounds[2]![1] - bounds[2]![0]));
    assert.deepEqual(drain(s).map((r) => text(r).slice(0, 8)), ["record 0", "record 1", "record 3"]);
  });

  it("survives kill -9 of a writer: every record reported written is recovered intact", async () => {
    const dir = tmpDir();
    const spoolUrl = pathToFileURL(path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "agent", "spool", "index.ts")).href;
    const script = path.join(dir, "writer.ts");
    fs.writeFileSync(script, `
import { Spool } from ${JSON.stringify(spoolUrl)};
const log = { debug() {}, info() {}, warn() {}, error() {}, child() { return log; } };
const spool = await Spool.open({ dir: process.argv[process.argv.length - 1], maxBytes: 1 << 30,
  whenFull: "block", fsync: 20, segmentBytes: 64 << 10, log });
for (let i = 0; ; i++) {
  const events = [];
  for (let j = 0; j <= i % 25; j++) events.push("rec " + i + " ev " + j + " " + "p".repeat((i * 7 + j) % 300));
  await spool.append("route-" + (i % 3), i % 2 ? "json" : "text", events, { sync: true });
  process.stdout.write(i + "\\n");
}
`);
    const spoolDir = path.join(dir, "spool");
    const args = isDeno() ? ["run", "-A", script, spoolDir] : [script, spoolDir];
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
    let lastReported = -1;
    let buffered = "";
    let stderr = "";
    const killAt = 150 + Math.floor(Math.random() * 150);
    const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
    child.stderr!.on("data", (d) => { stderr += d; });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`writer made no progress: ${stderr}`)), 20_000);
      child.stdout!.on("data", (d: Uint8Array) => {
        buffered += dec.decode(d);
        const lines = buffered.split("\n");
        buffered = lines.pop()!;
        for (const l of lines) lastReported = Number(l);
        if (lastReported >= killAt) {
          clearTimeout(timer);
          child.kill("SIGKILL");
          resolve();
        }
      });
      child.on("exit", () => { clearTimeout(timer); resolve(); });
    });
    await exited;
    assert.ok(lastReported >= killAt, `writer died early: ${stderr}`);

    const s = await openSpool(spoolDir);
    const recs = drain(s);
    assert.ok(recs.length >= lastReported + 1, `recovered ${recs.length} records, writer reported ${lastReported + 1}`);
    assert.ok(recs.length <= lastReported + 2, "at most the one record written but not yet reported");
    recs.forEach((r, i) => {
      const expected: string[] = [];
      for (let j = 0; j <= i % 25; j++) expected.push(`rec ${i} ev ${j} ` + "p".repeat((i * 7 + j) % 300));
      assert.equal(r.route, `route-${i % 3}`);
      assert.equal(r.kind, i % 2 ? "json" : "text");
      assert.equal(r.count, expected.length);
      assert.equal(text(r), expected.join("\n") + "\n");
    });
  });
});
