// The spool on a real small filesystem: a full disk is "full" like spool.max_bytes (appends
// wait, drop_oldest drops), the disk is never filled past min_free, an append is all or
// nothing, and a cancelled or closed wait leaves nothing behind.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Spool, SpoolClosedError, type SpoolOptions } from "../agent/spool/index.ts";
import { silentLogger } from "../agent/log.ts";
import { cannotMount, mountSmallDisk, type SmallDisk } from "./testing/tmpfs.ts";
import { until } from "./testing/until.ts";

const MiB = 1 << 20;
const dec = new TextDecoder();
const disks: SmallDisk[] = [];
const spools: Spool[] = [];

after(async () => {
  for (const s of spools) await s.close().catch(() => {});
  for (const d of disks) d.unmount();
});

function smallDisk(mib: number): SmallDisk {
  const d = mountSmallDisk(mib);
  disks.push(d);
  return d;
}

async function openSpool(dir: string, opts: Partial<SpoolOptions>): Promise<Spool> {
  const s = await Spool.open({ dir, maxBytes: 1 << 30, whenFull: "block", fsync: "never", log: silentLogger, ...opts });
  spools.push(s);
  return s;
}

/** Every event the spool hands out now, acked. */
function drainEvents(spool: Spool): string[] {
  const out: string[] = [];
  for (let recs = spool.read(64 * MiB); recs.length > 0; recs = spool.read(64 * MiB)) {
    for (const r of recs) {
      out.push(...dec.decode(r.payload).split("\n").slice(0, -1));
      spool.ack(r.id);
    }
  }
  return out;
}

const lines = (prefix: string, n: number, width = 100) =>
  Array.from({ length: n }, (_, i) => `${prefix}-${i} `.padEnd(width, "x"));

/** Settles as "done" or "waiting" after `ms`: whether the promise resolved by then. */
async function settledWithin(p: Promise<unknown>, ms: number): Promise<"done" | "waiting"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const r = await Promise.race([p.then(() => "done" as const), new Promise<"waiting">((res) => (timer = setTimeout(() => res("waiting"), ms)))]);
  clearTimeout(timer);
  return r;
}

describe("spool on a small filesystem", { skip: cannotMount }, () => {
  it("min_free: appends wait once free space would fall below it, the disk keeps it free, and deliveries give space back", async () => {
    const disk = smallDisk(8);
    const minFree = 2 * MiB;
    const spool = await openSpool(path.join(disk.dir, "spool"), { minFree: { bytes: minFree } });
    let appended = 0;
    let waiting: Promise<void> | undefined;
    for (let i = 0; i < 200 && !waiting; i++) {
      const p = spool.append("r", "text", lines(`b${i}`, 1000));
      if ((await settledWithin(p, 50)) === "waiting") waiting = p;
      else appended += 1000;
    }
    assert.ok(waiting, "an append waits once the disk is at min_free");
    assert.ok(appended > 0);
    assert.ok(disk.free() >= minFree - 64 * 1024, `free ${disk.free()} stays at about min_free ${minFree}`);
    const st = spool.stats();
    assert.equal(st.blocked, true);
    assert.equal(st.full, "min_free");
    assert.equal(st.min_free_bytes, minFree);
    assert.ok(st.free_bytes !== null && st.free_bytes >= minFree - 64 * 1024);
    // Deliveries free the space: the waiting append goes in, whole.
    const events = drainEvents(spool);
    await until(async () => (await settledWithin(waiting!, 10)) === "done", "the waiting append to be written", 5000);
    events.push(...drainEvents(spool));
    assert.equal(events.length, appended + 1000);
    assert.equal(new Set(events).size, events.length, "each event once");
    assert.equal(spool.stats().full, null);
  });

  it("ENOSPC waits like a full spool instead of failing, and nothing of the append is visible until it is written whole", async () => {
    const disk = smallDisk(8);
    const spool = await openSpool(path.join(disk.dir, "spool"), { minFree: { bytes: 0 } });
    await spool.append("r", "text", ["before"]);
    const filler = disk.fill(300 * 1024);
    // 5,000 events in 5 records of 1,000: ~1 MiB, more than is free.
    const big = lines("big", 5000, 200);
    const p = spool.append("r", "text", big, { maxEventsPerRecord: 1000 });
    let failed: unknown;
    p.catch((err) => (failed = err));
    assert.equal(await settledWithin(p, 600), "waiting");
    assert.equal(failed, undefined, "a full disk is not an append failure");
    assert.equal(spool.stats().full, "min_free");
    assert.deepEqual(drainEvents(spool), ["before"], "no part of the waiting append can be read");
    const segs = fs.readdirSync(path.join(disk.dir, "spool")).filter((n) => n.endsWith(".seg"));
    // A delivered segment may be removed between the listing and its stat (the blocked spool gives its space back).
    const sizeOf = (f: string) => {
      try {
        return fs.statSync(path.join(disk.dir, "spool", f)).size;
      } catch {
        return 0;
      }
    };
    const onDisk = segs.reduce((n, f) => n + sizeOf(f), 0);
    assert.ok(onDisk < 64 * 1024, `no torn part of the append stays on disk (${onDisk} bytes)`);
    fs.unlinkSync(filler); // space comes back by itself (another process freed it)
    await until(async () => (await settledWithin(p, 10)) === "done", "the append once space is back", 5000);
    assert.deepEqual(drainEvents(spool), big);
  });

  it("a waiting append whose caller gives up leaves nothing behind; the one queued after it goes in", async () => {
    const disk = smallDisk(8);
    const spool = await openSpool(path.join(disk.dir, "spool"), { minFree: { bytes: 0 } });
    const filler = disk.fill(100 * 1024);
    const ac = new AbortController();
    const cancelled = spool.append("r", "text", lines("cancelled", 3000, 200), { signal: ac.signal });
    const next = spool.append("r", "text", ["after"]);
    assert.equal(await settledWithin(cancelled, 300), "waiting");
    ac.abort();
    await assert.rejects(cancelled, (err: Error) => err.name === "AbortError");
    // The small one fits in what is free: it no longer waits behind the cancelled one.
    await until(async () => (await settledWithin(next, 10)) === "done", "the next append", 3000);
    fs.unlinkSync(filler);
    assert.deepEqual(drainEvents(spool), ["after"]);
    // An already aborted signal: written if it fits at once, refused rather than waiting otherwise.
    await spool.append("r", "text", ["fits"], { signal: AbortSignal.abort() });
    assert.deepEqual(drainEvents(spool), ["fits"]);
  });

  it("drop_oldest: below min_free the oldest segments are dropped (counted) and the disk keeps min_free", async () => {
    const disk = smallDisk(8);
    const minFree = 2 * MiB;
    const spool = await openSpool(path.join(disk.dir, "spool"), { minFree: { bytes: minFree }, whenFull: "drop_oldest", segmentBytes: 256 * 1024 });
    for (let i = 0; i < 150; i++) {
      assert.equal(await settledWithin(spool.append("r", "text", lines(`d${i}`, 500)), 1000), "done", "drop_oldest never waits while it has something to drop");
      assert.ok(disk.free() >= minFree - 64 * 1024, `free ${disk.free()} after append ${i}`);
    }
    const st = spool.stats();
    assert.ok(st.dropped > 0, "oldest events were dropped");
    const kept = drainEvents(spool);
    assert.equal(kept.length + st.dropped, 150 * 500, "every event is either kept or counted as dropped");
    assert.equal(kept.at(-1), lines("d149", 500).at(-1), "the newest are kept");
  });

  it("a percentage min_free is of the filesystem's size", async () => {
    const disk = smallDisk(20);
    const spool = await openSpool(path.join(disk.dir, "spool"), { minFree: { percent: 5, capBytes: 1 << 30 } });
    assert.equal(spool.stats().min_free_bytes, Math.floor((20 * MiB * 5) / 100));
  });
});

describe("spool close", () => {
  it("rejects waiting appends with SpoolClosedError and keeps none of their events", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "spool-close-"));
    const spool = await Spool.open({ dir, maxBytes: 64 * 1024, whenFull: "block", fsync: "never", log: silentLogger });
    await spool.append("r", "text", lines("kept", 500));
    const waiting = spool.append("r", "text", lines("waiting", 2000), { maxEventsPerRecord: 100 });
    assert.equal(await settledWithin(waiting, 100), "waiting");
    await spool.close();
    await assert.rejects(waiting, SpoolClosedError);
    const again = await Spool.open({ dir, maxBytes: 64 << 20, whenFull: "block", fsync: "never", log: silentLogger });
    const events = drainEvents(again);
    await again.close();
    fs.rmSync(dir, { recursive: true, force: true });
    assert.deepEqual(events, lines("kept", 500));
  });
});
