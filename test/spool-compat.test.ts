// A spool left by an earlier version is delivered completely by the current code: the fixture
// test/fixtures/spool-1c1431c/ was written by the spool of commit 1c1431c (see its README.md).
import { describe, it, afterEach } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { Spool, type SpoolRecord } from "../agent/spool/index.ts";
import { routeKey } from "../agent/forwarder.ts";
import { createLogger, silentLogger } from "../agent/log.ts";
import type { Logger } from "../agent/plugin.ts";

const fixture = path.join(path.dirname(fileURLToPath(import.meta.url)), "fixtures", "spool-1c1431c");

interface ExpectedRecord { route: string; kind: "text" | "json"; count: number; appendedAt: number; events: string[] }
const expected: {
  segment_bytes: number;
  torn: { segment: string; offset: number; bytes_on_disk: number };
  records: ExpectedRecord[];
} = JSON.parse(fs.readFileSync(path.join(fixture, "expected.json"), "utf8"));

const dec = new TextDecoder();
const dirs: string[] = [];
const open: Spool[] = [];

/** A copy of the fixture's spool directory, so the test may change it. */
function copyOfFixture(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "spool-compat-"));
  dirs.push(d);
  fs.cpSync(path.join(fixture, "spool"), d, { recursive: true });
  return d;
}

async function openSpool(dir: string, log: Logger = silentLogger): Promise<Spool> {
  const s = await Spool.open({ dir, maxBytes: 64 << 20, whenFull: "block", fsync: "never", segmentBytes: expected.segment_bytes, log });
  open.push(s);
  return s;
}

async function closeSpool(s: Spool): Promise<void> {
  await s.close();
  open.splice(open.indexOf(s), 1);
}

function readAll(spool: Spool): SpoolRecord[] {
  const out: SpoolRecord[] = [];
  for (let recs = spool.read(1 << 20); recs.length > 0; recs = spool.read(1 << 20)) out.push(...recs);
  return out;
}

/** What a record says, in expected.json's terms. */
function described(r: SpoolRecord): ExpectedRecord {
  const text = dec.decode(r.payload);
  assert.ok(text.endsWith("\n"), `payload of a ${r.route} record ends in a newline`);
  return { route: r.route, kind: r.kind, count: r.count, appendedAt: r.appendedAt, events: text.slice(0, -1).split("\n") };
}

const oldFiles = (dir: string) => fs.readdirSync(dir).filter((n) => /^0000000[123]\.(seg|ack)$/.test(n)).sort();

afterEach(async () => {
  for (const s of open.splice(0)) await s.close().catch(() => {});
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

describe("a spool written by commit 1c1431c", () => {
  it("the fixture is what its README says: segments with ack files, records acked and not, a torn tail", () => {
    assert.deepEqual(fs.readdirSync(path.join(fixture, "spool")).sort(), [
      "00000001.ack", "00000001.seg", "00000002.ack", "00000002.seg", "00000003.ack", "00000003.seg",
    ]);
    assert.equal(expected.records.length, 13);
    assert.deepEqual(new Set(expected.records.map((r) => r.kind)), new Set(["text", "json"]));
    assert.equal(new Set(expected.records.map((r) => r.route)).size, 4);
  });

  it("is delivered completely and in order: every unacked record, with its route, kind, count and time, nothing else", async () => {
    const dir = copyOfFixture();
    const lines: Array<Record<string, any>> = [];
    const spool = await openSpool(dir, createLogger("debug", { write: (l) => void lines.push(JSON.parse(l)) }));
    const recs = readAll(spool);
    assert.deepEqual(recs.map(described), expected.records);
    for (const r of recs) assert.equal(routeKey(JSON.parse(r.route)), r.route, "the forwarder reads the route as one of its own");

    const st = spool.stats();
    assert.equal(st.events, expected.records.reduce((n, r) => n + r.count, 0));
    assert.equal(st.skipped_bytes, expected.torn.bytes_on_disk);
    assert.deepEqual(st.skipped_segments, [expected.torn.segment]);
    const torn = lines.filter((l) => l.msg === "spool: torn record at segment tail skipped (interrupted write)");
    assert.equal(torn.length, 1);
    assert.equal(torn[0]!.segment, expected.torn.segment);
    assert.equal(torn[0]!.offset, expected.torn.offset);
    assert.deepEqual(lines.filter((l) => l.level === "error"), []);
  });

  it("takes acks: acked records are not delivered after a reopen, the rest are, and once all are acked the old segments go", async () => {
    const dir = copyOfFixture();
    const first = await openSpool(dir);
    const recs = readAll(first);
    assert.equal(recs.length, expected.records.length);
    // Ack every other record: the acks go into the old ack files, after the entries already there.
    recs.forEach((r, i) => {
      if (i % 2 === 0) first.ack(r.id);
    });
    await closeSpool(first);
    const rest = expected.records.filter((_, i) => i % 2 === 1);

    const second = await openSpool(dir);
    await second.append(expected.records[0]!.route, "json", ['{"after":"reopen"}']);
    const again = readAll(second);
    assert.deepEqual(again.slice(0, -1).map(described), rest);
    assert.deepEqual(described(again.at(-1)!).events, ['{"after":"reopen"}'], "a new append comes after the old records");
    for (const r of again) second.ack(r.id);
    assert.equal(second.stats().events, 0);
    assert.equal(second.stats().bytes, 0);
    await closeSpool(second);
    assert.deepEqual(oldFiles(dir), [], "fully acked segments are deleted with their ack files");

    const third = await openSpool(dir);
    assert.deepEqual(readAll(third), []);
    assert.equal(third.stats().events, 0);
  });
});
