// The spool's ledger: its segments in queue order, which one takes appends, what they hold
// that is not yet acknowledged (the totals that bound the spool), and what had to be skipped as
// torn or corrupt. Creating, rolling and deleting segment files happens here, so that the
// totals and the list never disagree; the reader, the fsync scheduler and the ack files are
// told through SegmentHooks, since each keeps per-segment state of its own.
import * as fs from "node:fs";
import type { Logger } from "../plugin.ts";
import { errorMessage } from "../errortext.ts";
import type { WindowPool } from "./windowpool.ts";
import { Segment, unlinkIfExists } from "./segment.ts";
import { HEADER_BYTES, believableEventCount } from "./record.ts";

/** What the other parts of the spool do when a segment comes or goes. */
export interface SegmentHooks {
  /** A new active segment was created (its directory entry is not yet fsynced). */
  started(seg: Segment): void;
  /** The segment was taken out of the list at `index`; it is about to be closed and unlinked. */
  deleted(seg: Segment, index: number): void;
  /** A background unlink finished (successfully or not): disk space may have come back. */
  filesRemoved(): void;
}

export class Ledger {
  /** Oldest first; the last one is the active (append) segment. */
  readonly segments: Segment[] = [];
  active!: Segment;
  nextSegmentId = 1;

  /** Unacknowledged events and record bytes (payload + headers) in all segments. */
  totalEvents = 0;
  totalBytes = 0;

  skippedBytes = 0;
  skippedEvents = 0;
  /** Segments in which records were skipped, most recent last (at most 10). */
  skippedSegments: string[] = [];

  private unlinking = new Set<Promise<void>>();

  constructor(
    readonly dir: string,
    readonly pool: WindowPool,
    private readonly log: Logger,
    private readonly hooks: SegmentHooks,
  ) {}

  /** A segment found by recovery that still holds unacked records. */
  adopt(seg: Segment): void {
    this.segments.push(seg);
    this.totalEvents += seg.liveEvents;
    this.totalBytes += seg.liveBytes;
  }

  /** Create a fresh active segment after the others. */
  start(): void {
    const seg = new Segment(this.nextSegmentId++, this.dir, this.pool);
    // "wx+": a fresh file, never appended after whatever an earlier run left behind.
    seg.fd = fs.openSync(seg.file, "wx+");
    seg.active = true;
    this.segments.push(seg);
    this.active = seg;
    this.hooks.started(seg);
  }

  roll(): void {
    const old = this.active;
    this.start(); // first: if it fails, the old segment stays the active one
    old.active = false;
    if (old.liveRecords === 0) this.delete(old);
  }

  /** Records written to `seg`: `bytes` of them holding `events` events in `records` records. */
  written(seg: Segment, bytes: number, records: number, events: number): void {
    seg.size += bytes;
    seg.liveRecords += records;
    seg.liveEvents += events;
    seg.liveBytes += bytes;
    this.totalEvents += events;
    this.totalBytes += bytes;
  }

  /**
   * A record of `seg` was acknowledged. Returns true when that was the segment's last live
   * record and it no longer takes appends, so it can be deleted.
   */
  acked(seg: Segment, events: number, bytes: number): boolean {
    seg.liveRecords--;
    seg.liveEvents -= events;
    seg.liveBytes -= bytes;
    this.totalEvents -= events;
    this.totalBytes -= bytes;
    return seg.liveRecords === 0 && !seg.active;
  }

  delete(seg: Segment, background = true): void {
    if (seg.deleted) return;
    seg.deleted = true;
    const i = this.segments.indexOf(seg);
    if (i >= 0) this.segments.splice(i, 1);
    this.totalEvents -= seg.liveEvents;
    this.totalBytes -= seg.liveBytes;
    seg.liveRecords = seg.liveEvents = seg.liveBytes = 0;
    this.hooks.deleted(seg, i);
    seg.releaseFd();
    seg.closeAckFd();
    this.removeFiles(seg, background);
  }

  /**
   * Unlink a segment and its ack file. The segment goes first: a crash in between leaves an
   * orphan ack file, which open() removes. At run time the unlinks run off the event loop
   * (dropping a 16 MiB file from the page cache takes milliseconds); a crash before they finish
   * only re-delivers the segment's records whose acks were not yet in its ack file.
   */
  removeFiles(seg: Segment, background = true): void {
    const failed = (err: unknown) =>
      this.log.error("spool: cannot delete segment", { segment: seg.name, dir: this.dir, error: errorMessage(err) });
    if (!background) {
      try {
        unlinkIfExists(seg.file);
        unlinkIfExists(seg.ackFile);
      } catch (err) {
        failed(err);
      }
      return;
    }
    const unlink = (file: string) => new Promise<void>((resolve, reject) =>
      fs.unlink(file, (err) => (err && err.code !== "ENOENT" ? reject(err) : resolve())));
    const p: Promise<void> = unlink(seg.file)
      .then(() => unlink(seg.ackFile))
      .catch(failed)
      .finally(() => {
        this.unlinking.delete(p);
        this.hooks.filesRemoved();
      });
    this.unlinking.add(p);
  }

  /** Resolves once the background unlinks started so far are done. */
  unlinked(): Promise<unknown> {
    return Promise.all([...this.unlinking]);
  }

  /**
   * Count a skipped range [from, to) of `seg` for status and metrics; returns the events it held
   * as far as its first header tells (a torn or damaged header tells nothing).
   */
  noteSkipped(seg: Segment, from: number, to: number): number {
    let events = 0;
    if (seg.ensure(from, HEADER_BYTES, HEADER_BYTES)) events = believableEventCount(seg.winView!, from - seg.winStart);
    this.skippedBytes += to - from;
    this.skippedEvents += events;
    if (this.skippedSegments.at(-1) !== seg.name) {
      this.skippedSegments.push(seg.name);
      if (this.skippedSegments.length > 10) this.skippedSegments.shift();
    }
    return events;
  }
}
