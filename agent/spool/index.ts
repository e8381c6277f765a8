// The durable spool: an on-disk, append-only queue of checksummed records in segment files,
// between the inputs (append) and the forwarder (read, then ack or release).
//
// This module is the spool's public face: the Spool class, its options and the types it hands
// out. It wires the parts, each in a file of its own:
//   record.ts     the on-disk record: layout, encoding and checking a header
//   segment.ts    one segment file: names, descriptors, reading records through a window
//   windowpool.ts read buffers, reused once no handed-out record needs them
//   ledger.ts     the segments in order, the unacked totals, creating and deleting segments
//   recovery.ts   what open() finds on disk: verifying, skipping torn or corrupt records
//   writer.ts     appends: batching into records, waiting for room, writing
//   fsync.ts      when writes reach the disk: the fsync policy, group commit, waiters
//   space.ts      free space on the filesystem (spool.min_free)
//   reader.ts     the read cursor, records in flight and released ones
//   acks.ts       ack files, so that a restart does not deliver acked records again
//   crc32.ts      the checksum
import * as fs from "node:fs";
import type { Logger } from "../plugin.ts";
import { WindowPool } from "./windowpool.ts";
import { MAX_SEGMENT_BYTES } from "./segment.ts";
import { Ledger } from "./ledger.ts";
import { recover } from "./recovery.ts";
import { SpoolWriter, type AppendOptions, type FramedEvents, type FullReason } from "./writer.ts";
import { Durability } from "./fsync.ts";
import { FreeSpace, type MinFree } from "./space.ts";
import { SpoolReader, type SpoolRecord } from "./reader.ts";
import { AckWriter } from "./acks.ts";

export type { MinFree } from "./space.ts";
export type { FullReason, AppendOptions, FramedEvents } from "./writer.ts";
export type { SpoolRecord } from "./reader.ts";
export { HEADER_BYTES } from "./record.ts";

export interface SpoolOptions {
  dir: string;
  /** Bound on unacknowledged record bytes (payload + headers). */
  maxBytes: number;
  /** Below this much free space on the filesystem the spool is full, as at maxBytes. Default none. */
  minFree?: MinFree;
  whenFull: "block" | "drop_oldest";
  /** "always", "never", or an interval in ms (group commit). */
  fsync: "always" | "never" | number;
  /** Roll segments at this size; default min(16 MiB, max(64 KiB, maxBytes/8)). */
  segmentBytes?: number;
  log: Logger;
}

export interface SpoolStats {
  events: number;
  bytes: number;
  max_bytes: number;
  oldest_event_age_s: number;
  dropped: number;
  /** Appends are waiting for space. */
  blocked: boolean;
  /** What the waiting appends wait for (null when none wait). */
  full: FullReason | null;
  /** Free bytes on the spool's filesystem at the last look (null if it cannot be asked). */
  free_bytes: number | null;
  min_free_bytes: number;
  /** Bytes and (where their headers were readable) events of torn or corrupt records skipped. */
  skipped_bytes: number;
  skipped_events: number;
  /** Segments in which records were skipped, most recent last (at most 10). */
  skipped_segments: string[];
}

/** The spool was closed while an append waited (or before it was asked): nothing was taken. */
export class SpoolClosedError extends Error {
  constructor() {
    super("spool is closed");
    this.name = "SpoolClosedError";
  }
}

export class Spool {
  private readonly maxBytes: number;
  private readonly log: Logger;
  private readonly pool = new WindowPool();
  private readonly ledger: Ledger;
  private readonly space: FreeSpace;
  private readonly durability: Durability;
  private readonly reader: SpoolReader;
  private readonly writer: SpoolWriter;
  private readonly acks: AckWriter;
  private closed = false;

  private constructor(opts: SpoolOptions) {
    if (!(opts.maxBytes > 0)) throw new Error(`spool maxBytes must be positive, got ${opts.maxBytes}`);
    this.maxBytes = opts.maxBytes;
    this.log = opts.log;
    const seg = opts.segmentBytes ?? Math.min(16 << 20, Math.max(64 << 10, Math.floor(opts.maxBytes / 8)));
    const segmentBytes = Math.max(1, Math.min(seg, MAX_SEGMENT_BYTES));
    this.ledger = new Ledger(opts.dir, this.pool, opts.log, {
      started: () => {
        this.durability.dirChanged();
        this.reader.segmentStarted();
      },
      deleted: (s, index) => {
        this.reader.segmentDeleted(s, index);
        this.durability.forget(s);
        this.acks.forget(s);
      },
      filesRemoved: () => {
        if (!this.closed) this.writer.diskFreed();
      },
    });
    this.space = new FreeSpace(opts.dir, opts.minFree, opts.log);
    this.durability = new Durability(opts.fsync, opts.dir, opts.log);
    this.reader = new SpoolReader(this.ledger, this.pool, opts.log);
    this.acks = new AckWriter(opts.log);
    this.writer = new SpoolWriter(
      { maxBytes: opts.maxBytes, whenFull: opts.whenFull, segmentBytes, dir: opts.dir, log: opts.log },
      this.ledger, this.reader, this.space, this.durability,
    );
  }

  /** Create the directory if needed, recover existing segments, start a fresh active segment. */
  static async open(opts: SpoolOptions): Promise<Spool> {
    const spool = new Spool(opts);
    fs.mkdirSync(opts.dir, { recursive: true });
    const fsBytes = spool.space.ask();
    // A segment is freed only once all of it is delivered: on a small filesystem, smaller
    // segments give the space back sooner.
    if (fsBytes !== null && opts.segmentBytes === undefined)
      spool.writer.segmentBytes = Math.max(64 << 10, Math.min(spool.writer.segmentBytes, Math.floor(fsBytes / 32)));
    recover(spool.ledger, spool.log);
    spool.ledger.start();
    return spool;
  }

  /**
   * Add events as records of at most maxEventsPerRecord events / maxBytesPerRecord bytes. All or
   * nothing: the records are written in one piece once there is room for all of them, so a
   * failure or a cancelled wait leaves none of them behind. While the spool is full (maxBytes,
   * or less than minFree free on its filesystem) `block` makes the append wait; `drop_oldest`
   * discards the oldest records instead.
   */
  append(route: string, kind: "text" | "json", events: string[] | FramedEvents, opts?: AppendOptions): Promise<void> {
    if (this.closed) return Promise.reject(new SpoolClosedError());
    return this.writer.append(route, kind, events, opts);
  }

  whenDurable(): Promise<void> {
    return this.durability.whenDurable();
  }

  sync(): Promise<void> {
    return this.durability.sync();
  }

  /** Hand out records, released ones first, up to maxBytes of payload but at least one if there is any. */
  read(maxBytes: number): SpoolRecord[] {
    if (this.closed) return [];
    return this.reader.read(maxBytes);
  }

  waitForData(signal?: AbortSignal): Promise<void> {
    if (this.closed) return Promise.resolve();
    return this.reader.waitForData(signal);
  }

  /** The record was delivered: it is never handed out again and no longer counts against maxBytes. */
  ack(id: number): void {
    const r = this.reader.take(id);
    if (r === undefined) return;
    const seg = r.seg;
    if (seg.deleted) return;
    if (this.ledger.acked(seg, r.count, r.total)) this.ledger.delete(seg);
    else this.acks.add(seg, r.offset);
    this.writer.roomFreed();
  }

  /** The records were not delivered: read() hands them out again, before newer ones. */
  release(ids: number[]): void {
    this.reader.release(ids);
  }

  stats(): SpoolStats {
    const ledger = this.ledger;
    const oldest = ledger.totalEvents > 0 && !this.closed ? this.reader.oldestAppendedAt() : Infinity;
    const age = oldest === Infinity ? 0 : Math.max(0, Math.round(Date.now() - oldest) / 1000);
    const free = this.space.freeBytes;
    return {
      events: ledger.totalEvents,
      bytes: ledger.totalBytes,
      max_bytes: this.maxBytes,
      oldest_event_age_s: age,
      dropped: this.writer.droppedEvents,
      blocked: this.writer.blocked,
      full: this.writer.full,
      free_bytes: free === null ? null : Math.max(0, free),
      min_free_bytes: this.space.minFreeBytes,
      skipped_bytes: ledger.skippedBytes,
      skipped_events: ledger.skippedEvents,
      skipped_segments: [...ledger.skippedSegments],
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.durability.stop();
    this.writer.close(new SpoolClosedError());
    this.reader.wakeAll();
    this.acks.flush();
    try {
      await this.durability.syncWritten();
    } finally {
      const running = this.durability.running;
      if (running) await running.catch(() => {});
      for (const seg of this.ledger.segments) {
        seg.needsSync = false; // a failed final fsync was reported; do not leak the fd for it
        seg.releaseFd();
        seg.closeAckFd();
        if (seg.active && seg.size === 0) this.ledger.removeFiles(seg);
      }
      await this.ledger.unlinked();
      this.reader.clear();
      this.pool.clear();
    }
  }
}
