// Writes a spool directory with a given version of the spool module, as a fixture for the test
// that a spool left by that version is delivered completely by the current code
// (test/spool-compat.test.ts).
//
// Usage: bun scripts/make-spool-fixture.ts <spool module> [out dir]
//   <spool module>  the old version's spool module (it must export Spool with open/append/read/
//                   ack/release/close, as agent/spool.ts of commit 1c1431c does)
//   [out dir]       default test/fixtures/spool-1c1431c; gets spool/ (the spool directory) and
//                   expected.json (the records a reader must get from it, in order)
//
// What it writes: appends of four inputs (text and json, one append split into several records,
// multi-byte text, an empty event) into 4 KiB segments, so they span several segments; then it
// reads everything and acks some records, releases some and leaves the rest in flight, as a
// forwarder stopped mid-delivery would; one more record is appended and the file cut in the
// middle of it, as a crash during the write leaves it. The clock is fixed, so running it again
// with the same module writes the same bytes. At the end the directory is opened again with the
// same module, and what it delivers must be expected.json's records, or the script fails.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { Buffer } from "node:buffer";

const modulePath = process.argv[2];
if (modulePath === undefined) {
  console.error("usage: make-spool-fixture.ts <spool module> [out dir]");
  process.exit(2);
}
const outDir = path.resolve(process.argv[3] ?? "test/fixtures/spool-1c1431c");
const spoolDir = path.join(outDir, "spool");
const SEGMENT_BYTES = 4096;

// appendedAt values are ms since epoch: a fixed start, one ms more at each look.
let now = Date.UTC(2026, 10, 30, 12, 0, 0);
Date.now = () => now++;

const problems: string[] = [];
const logged: Array<{ level: string; msg: string }> = [];
function makeLogger(): any {
  const at = (level: string) => (msg: string) => void logged.push({ level, msg });
  const log = { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error"), child: () => log };
  return log;
}

const { Spool } = await import(pathToFileURL(path.resolve(modulePath)).href);
const openSpool = (dir: string) =>
  Spool.open({ dir, maxBytes: 64 << 20, whenFull: "block", fsync: "never", segmentBytes: SEGMENT_BYTES, log: makeLogger() });

/** A spool route as the forwarder writes it: its upload metadata as JSON, in a fixed key order. */
function route(input: string, typetag: string, timezone: string): string {
  return JSON.stringify({ input, name: `${input} on the edge`, orgid: "org-7f3a", typetag, timezone });
}
const syslog = route("syslog-edge", "syslog", "UTC");
const cowrie = route("cowrie-honeypot", "cowrie", "UTC");
const authLog = route("file-auth", "auth_log", "Europe/Berlin");
const misp = route("misp-feed", "misp", "UTC");

function syslogLine(i: number): string {
  return `<34>Nov 30 12:00:${String(i % 60).padStart(2, "0")} sensor01 sshd[${4000 + i}]: Failed password for root from 203.0.113.${i % 250} port ${50000 + i} ssh2`;
}
function cowrieEvent(i: number): string {
  return JSON.stringify({ eventid: "cowrie.login.failed", src_ip: `198.51.100.${i % 250}`, username: "admin", password: `pw${i}`, session: `s${1000 + i}` });
}
function authLine(i: number): string {
  return `Nov 30 13:00:${String(i % 60).padStart(2, "0")} gateway sudo: user${i} : TTY=pts/${i % 4} ; PWD=/home/über ; COMMAND=/usr/bin/ls — ✓`;
}
function mispEvent(i: number): string {
  return JSON.stringify({ Event: { id: String(700 + i), info: `Phishing campaign ${i}`, Attribute: [{ type: "url", value: `https://phish-${i}.example/login` }] } });
}

type Kind = "text" | "json";
interface Append { route: string; kind: Kind; events: string[]; maxEventsPerRecord?: number }
const appends: Append[] = [];
for (let round = 0; round < 6; round++) {
  appends.push({ route: syslog, kind: "text", events: Array.from({ length: 5 }, (_, i) => syslogLine(round * 5 + i)) });
  appends.push({ route: cowrie, kind: "json", events: Array.from({ length: 3 }, (_, i) => cowrieEvent(round * 3 + i)) });
  if (round % 2 === 0) appends.push({ route: authLog, kind: "text", events: Array.from({ length: 4 }, (_, i) => authLine(round * 4 + i)) });
  if (round === 2) appends.push({ route: misp, kind: "json", events: Array.from({ length: 7 }, (_, i) => mispEvent(i)), maxEventsPerRecord: 2 });
}
appends.push({ route: authLog, kind: "text", events: ["", "an event after an empty one"] });

interface ExpectedRecord { route: string; kind: Kind; count: number; appendedAt: number; events: string[] }

fs.rmSync(spoolDir, { recursive: true, force: true });
fs.mkdirSync(outDir, { recursive: true });
const spool = await openSpool(spoolDir);
for (const a of appends) await spool.append(a.route, a.kind, a.events, a.maxEventsPerRecord ? { maxEventsPerRecord: a.maxEventsPerRecord } : undefined);

// Read everything, as a forwarder would, then ack every third record, release every fifth of the
// others and leave the rest in flight.
const read: Array<{ id: number; rec: ExpectedRecord }> = [];
const dec = new TextDecoder();
for (let recs = spool.read(1 << 20); recs.length > 0; recs = spool.read(1 << 20)) {
  for (const r of recs) {
    const text = dec.decode(r.payload);
    const events = text.slice(0, -1).split("\n");
    if (!text.endsWith("\n") || events.length !== r.count) problems.push(`record ${r.id} reads back as ${JSON.stringify(text)}`);
    read.push({ id: r.id, rec: { route: r.route, kind: r.kind, count: r.count, appendedAt: r.appendedAt, events } });
  }
}
const writtenEvents = appends.reduce((n, a) => n + a.events.length, 0);
const readEvents = read.reduce((n, r) => n + r.rec.count, 0);
if (readEvents !== writtenEvents) problems.push(`read ${readEvents} events of ${writtenEvents} appended`);
const expected: ExpectedRecord[] = [];
const released: number[] = [];
let ackedRecords = 0;
read.forEach(({ id, rec }, i) => {
  if (i % 3 === 1) {
    spool.ack(id);
    ackedRecords++;
    return;
  }
  if (i % 5 === 0) released.push(id);
  expected.push(rec);
});
spool.release(released);

// A record cut short by a crash: append it, then cut the segment it went to in its middle.
const tornEvents = ["this record is torn: only its first half reached the disk before the crash"];
await spool.append(syslog, "text", tornEvents);
const segs = () => fs.readdirSync(spoolDir).filter((n) => n.endsWith(".seg")).sort();
const tornSegment = segs().at(-1)!;
await spool.close();
const tornBytes = 28 + Buffer.byteLength(syslog) + Buffer.byteLength(tornEvents.join("\n") + "\n");
const tornFile = path.join(spoolDir, tornSegment);
const tornAt = fs.statSync(tornFile).size - tornBytes;
fs.truncateSync(tornFile, tornAt + Math.floor(tornBytes / 2));

fs.writeFileSync(path.join(outDir, "expected.json"), JSON.stringify({
  segment_bytes: SEGMENT_BYTES,
  appended_events: writtenEvents + tornEvents.length,
  acked_records: ackedRecords,
  torn: { segment: tornSegment, offset: tornAt, bytes_on_disk: Math.floor(tornBytes / 2) },
  records: expected,
}, null, 1) + "\n");

// Check the fixture with the module that wrote it: a copy reopened delivers exactly `expected`.
const check = fs.mkdtempSync(path.join(os.tmpdir(), "spool-fixture-check-"));
try {
  fs.cpSync(spoolDir, check, { recursive: true });
  logged.length = 0;
  const again = await openSpool(check);
  const got: ExpectedRecord[] = [];
  for (let recs = again.read(1 << 20); recs.length > 0; recs = again.read(1 << 20)) {
    for (const r of recs) got.push({ route: r.route, kind: r.kind, count: r.count, appendedAt: r.appendedAt, events: dec.decode(r.payload).slice(0, -1).split("\n") });
  }
  await again.close();
  if (JSON.stringify(got) !== JSON.stringify(expected)) problems.push(`reopened, the spool delivers ${got.length} records, not the ${expected.length} expected`);
  const warned = logged.filter((l) => l.level === "warn" || l.level === "error").map((l) => l.msg);
  if (warned.length !== 1 || !warned[0]!.includes("torn record at segment tail")) problems.push(`reopened, the spool logged ${JSON.stringify(warned)}`);
} finally {
  fs.rmSync(check, { recursive: true, force: true });
}

const files = fs.readdirSync(spoolDir).sort();
const bytes = files.reduce((n, f) => n + fs.statSync(path.join(spoolDir, f)).size, 0);
if (problems.length > 0) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log(JSON.stringify({ dir: spoolDir, files, bytes, records_expected: expected.length, acked_records: ackedRecords, released: released.length, torn: tornSegment }));
