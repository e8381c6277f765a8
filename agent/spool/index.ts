// The durable spool: an on-disk, append-only queue of checksummed records in segment files.
//
// A record holds events of one route and one kind; its payload is exactly the bytes of a future
// upload body (each event followed by "\n"), so the forwarder only concatenates payloads.
//
// Record layout (little-endian), HEADER_BYTES fixed bytes then the route and the payload:
//   0  u32 magic          FE FF 53 31 on disk; 0xFE/0xFF never occur in UTF-8 text, so event
//                         data cannot imitate the start of a header
//   4  u32 payload length
//   8  u32 CRC-32 of every byte after this field (rest of header + route + payload)
//  12  f64 appendedAt     ms since epoch
//  20  u32 event count
//  24  u8  kind           0 text, 1 json
//  25  u8  flags          0 (reserved)
//  26  u16 route length
//
// Acknowledged records are remembered in a sidecar file per segment (NNNNNNNN.ack) holding
// (offset, ~offset) u32 pairs: the complement makes a zero-filled or torn tail harmless. A lost
// ack only means a re-delivery, so the sidecar is never fsynced on the hot path.
//
// Memory stays small for huge backlogs: unread records are not held in memory; a read cursor
// walks the segment files (the page cache makes re-reading cheap) and only records handed out
// to the forwarder get a small in-memory entry.
import * as fs from "node:fs";
import * as path from "node:path";
import { Buffer } from "node:buffer";
import type { Logger } from "../plugin.ts";
import { crc32 } from "./crc32.ts";
import { isNoSpace } from "../fserrors.ts";
import { errorMessage } from "../log.ts";

/** Free space to keep on the spool's filesystem: bytes, or a percentage of its size (capped). */
export type MinFree = { bytes: number } | { percent: number; capBytes: number };

/** Why appends wait: the spool's own bound, or the free space on its filesystem. */
export type FullReason = "max_bytes" | "min_free";

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

export interface SpoolRecord {
  /** Unique within this process; used to ack. */
  id: number;
  /** Opaque grouping key (the forwarder keeps JSON route metadata here). */
  route: string;
  kind: "text" | "json";
  /** Number of events. */
  count: number;
  /**
   * The events, each ending in "\n". A view of a read buffer that is reused once the record
   * is acked or released: copy it to keep it longer.
   */
  payload: Uint8Array;
  /** ms since epoch when appended. */
  appendedAt: number;
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

export interface AppendOptions {
  maxEventsPerRecord?: number;
  maxBytesPerRecord?: number;
  /** Resolve only after an fsync that covers these events. */
  sync?: boolean;
  /**
   * Give up waiting for space when aborted (already aborted: do not wait at all): the append
   * rejects with an AbortError and none of its events are in the spool.
   */
  signal?: AbortSignal;
}

/** The spool was closed while an append waited (or before it was asked): nothing was taken. */
export class SpoolClosedError extends Error {
  constructor() {
    super("spool is closed");
    this.name = "SpoolClosedError";
  }
}

function abortError(signal: AbortSignal): unknown {
  return signal.reason instanceof Error ? signal.reason : new DOMException("the append was cancelled", "AbortError");
}



const MAGIC = 0x3153fffe;
const MAGIC_FIRST_BYTE = 0xfe;
export const HEADER_BYTES = 28;
const CRC_FROM = 12;
const KIND_TEXT = 0;
const KIND_JSON = 1;
/** Largest payload a record may declare; keeps offsets and lengths inside u32 arithmetic. */
const MAX_PAYLOAD = 0x7fff0000;
/** Segment offsets are stored as u32 in ack files, so a segment never starts a record past 2^31. */
const MAX_SEGMENT_BYTES = 1 << 30;
const ACK_ENTRY_BYTES = 8;
const DEFAULT_EVENTS_PER_RECORD = 1000;
const DEFAULT_BYTES_PER_RECORD = 1 << 20;
const RECOVERY_CHUNK = 1 << 20;
const MIN_READ_CHUNK = 256 << 10;
const SCRATCH_INITIAL_BYTES = 256 << 10;
const SCRATCH_KEEP_BYTES = 8 << 20;
/** One append is written in one piece, so it is either wholly in the spool or not at all. */
const MAX_APPEND_BYTES = 256 << 20;
/** While appends wait for free space, the filesystem is asked again this often. */
const SPACE_RECHECK_MS = 250;
/** Within this distance of min_free every append asks the filesystem instead of estimating. */
const SPACE_NEAR_BYTES = 4 << 20;
/** Read buffers kept for reuse: at most this many, each at most WINDOW_KEEP_BYTES. */
const WINDOW_POOL_SIZE = 8;
const WINDOW_KEEP_BYTES = 4 << 20;

// probe() results that are not a record length
const SHORT = -1; // not enough bytes left for a header, or a plausible header whose record runs past the end
const BAD = -2; // wrong magic, impossible fields or a checksum mismatch

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function segmentFileName(id: number): string {
  return `${String(id).padStart(8, "0")}.seg`;
}

function ackFileName(id: number): string {
  return `${String(id).padStart(8, "0")}.ack`;
}

/** Write len bytes of buf at position, or at the end for an append-mode fd (position null). */
function writeFully(fd: number, buf: Uint8Array, len: number, position: number | null): void {
  let done = 0;
  while (done < len) done += fs.writeSync(fd, buf, done, len - done, position === null ? null : position + done);
}

function fdatasyncAsync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
}

function fsyncDirAsync(dir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.open(dir, "r", (err, fd) => {
      if (err) return reject(err);
      fs.fsync(fd, (syncErr) => fs.close(fd, () => (syncErr ? reject(syncErr) : resolve())));
    });
  });
}

function unlinkIfExists(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}

/**
 * A read buffer and the records handed out of it. Payloads are views of it, so it is reused
 * only once it no longer backs a segment's window and every record read from it was acked or
 * released: reading a backlog at hundreds of MB/s would otherwise leave a buffer of garbage
 * per refill for the collector to free late.
 */
interface ReadWindow {
  buf: Uint8Array;
  /** Records handed out of this buffer, not yet acked or released. */
  refs: number;
  /** Still some segment's window (more records may be handed out of it). */
  current: boolean;
}

/** Read buffers no longer in use, for the next window. */
class WindowPool {
  private free: Uint8Array[] = [];

  take(bytes: number): ReadWindow {
    let best = -1;
    for (let i = 0; i < this.free.length; i++) {
      const len = this.free[i]!.length;
      if (len >= bytes && (best === -1 || len < this.free[best]!.length)) best = i;
    }
    const buf = best === -1 ? Buffer.allocUnsafeSlow(bytes) : this.free.splice(best, 1)[0]!;
    return { buf, refs: 0, current: true };
  }

  /** A window is done with once it is neither current nor backing a handed-out record. */
  settle(w: ReadWindow): void {
    if (w.current || w.refs > 0 || w.buf.length > WINDOW_KEEP_BYTES) return;
    if (this.free.length >= WINDOW_POOL_SIZE) {
      // Keep the larger buffers: they serve any refill.
      let smallest = 0;
      for (let i = 1; i < this.free.length; i++) if (this.free[i]!.length < this.free[smallest]!.length) smallest = i;
      if (this.free[smallest]!.length >= w.buf.length) return;
      this.free.splice(smallest, 1);
    }
    this.free.push(w.buf);
  }

  clear(): void {
    this.free = [];
  }
}

/** One segment file and what the spool knows about it. */
class Segment {
  readonly file: string;
  readonly ackFile: string;
  fd: number | null = null;
  ackFd: number | null = null;
  /** Bytes that may be read: written so far (active) or the file size found by recovery. */
  size = 0;
  active = false;
  /** A failed write may have left garbage at the tail: never append to this segment again. */
  broken = false;
  deleted = false;
  liveRecords = 0;
  liveEvents = 0;
  liveBytes = 0;
  /** Offsets of records acked in an earlier run (recovered segments only). */
  acked: Set<number> | null = null;
  /** Corrupt ranges found by recovery: start offset -> offset of the next valid record. */
  skips: Map<number, number> | null = null;
  pendingAcks: number[] = [];
  /** Written since the last fsync: the fd must stay open until one covers it. */
  needsSync = false;
  /** fdatasync calls in flight on fd; the fd is closed only once they are done. */
  syncing = 0;
  closeWanted = false;

  // Read window: file bytes [winStart, winStart + winLen) in a buffer from the pool. A refill
  // takes another buffer, so payload views handed out earlier stay valid until acked.
  win: ReadWindow | null = null;
  winBuf: Uint8Array | null = null;
  winView: DataView | null = null;
  winStart = 0;
  winLen = 0;

  constructor(readonly id: number, dir: string, private readonly pool: WindowPool) {
    this.file = path.join(dir, segmentFileName(id));
    this.ackFile = path.join(dir, ackFileName(id));
  }

  get name(): string {
    return segmentFileName(this.id);
  }

  openFd(): number {
    this.closeWanted = false;
    if (this.fd === null) this.fd = fs.openSync(this.file, "r");
    return this.fd;
  }

  /** Close the data fd now, or once it is fsynced and no fsync is in flight on it. */
  releaseFd(): void {
    this.dropWindow();
    if (this.fd === null) return;
    if (this.syncing > 0 || this.needsSync) {
      this.closeWanted = true;
      return;
    }
    const fd = this.fd;
    this.fd = null;
    try {
      fs.closeSync(fd);
    } catch {
      // already closed: nothing to release
    }
  }

  syncDone(): void {
    this.syncing--;
    if (this.syncing === 0 && this.closeWanted && !this.needsSync) this.releaseFd();
  }

  closeAckFd(): void {
    if (this.ackFd === null) return;
    try {
      fs.closeSync(this.ackFd);
    } catch {
      // already closed
    }
    this.ackFd = null;
  }

  /** Make the window cover [pos, pos+len), reading about `chunk` bytes ahead. False if past the end. */
  ensure(pos: number, len: number, chunk: number): boolean {
    if (pos + len > this.size) return false;
    if (this.winBuf !== null && pos >= this.winStart && pos + len <= this.winStart + this.winLen) return true;
    const want = Math.max(len, Math.min(chunk, this.size - pos));
    this.dropWindow();
    const win = this.pool.take(want);
    const buf = win.buf.length === want ? win.buf : win.buf.subarray(0, want);
    const fd = this.openFd();
    let got = 0;
    while (got < want) {
      const n = fs.readSync(fd, buf, got, want - got, pos + got);
      if (n <= 0) break;
      got += n;
    }
    this.win = win;
    this.winBuf = buf;
    this.winView = new DataView(buf.buffer, buf.byteOffset, got);
    this.winStart = pos;
    this.winLen = got;
    if (got < len) {
      // The file is shorter than recorded (truncated behind our back): read no further than it is.
      this.size = pos + got;
      return false;
    }
    return true;
  }

  /** This segment no longer reads from its window's buffer: the pool may have it once no record needs it. */
  dropWindow(): void {
    const w = this.win;
    this.win = null;
    this.winBuf = null;
    this.winView = null;
    if (w === null) return;
    w.current = false;
    this.pool.settle(w);
  }

  /** Length of the valid record at pos (window left covering it), or SHORT / BAD. */
  probe(pos: number, chunk: number): number {
    if (!this.ensure(pos, HEADER_BYTES, chunk)) return SHORT;
    let view = this.winView!;
    let o = pos - this.winStart;
    if (view.getUint32(o, true) !== MAGIC) return BAD;
    const payloadLen = view.getUint32(o + 4, true);
    if (payloadLen > MAX_PAYLOAD || view.getUint8(o + 24) > KIND_JSON || view.getUint8(o + 25) !== 0) return BAD;
    const total = HEADER_BYTES + view.getUint16(o + 26, true) + payloadLen;
    if (!this.ensure(pos, total, chunk)) return SHORT;
    view = this.winView!;
    o = pos - this.winStart;
    if (crc32(this.winBuf!.subarray(o + CRC_FROM, o + total)) !== view.getUint32(o + 8, true)) return BAD;
    return total;
  }

  /** Offset of the next valid record at or after `from`, or size if there is none. */
  resync(from: number, chunk: number): number {
    let p = from;
    while (p + HEADER_BYTES <= this.size) {
      if (!this.ensure(p, 1, chunk)) break;
      const idx = this.winBuf!.indexOf(MAGIC_FIRST_BYTE, p - this.winStart);
      if (idx < 0 || idx >= this.winLen) {
        p = this.winStart + this.winLen;
        continue;
      }
      const candidate = this.winStart + idx;
      if (this.probe(candidate, chunk) > 0) return candidate;
      p = candidate + 1;
    }
    return this.size;
  }
}

/** A record handed out by read() and not yet acked. */
interface InFlight {
  seg: Segment;
  /** The buffer its payload was handed out in (null once released). */
  win: ReadWindow | null;
  offset: number;
  total: number;
  count: number;
  appendedAt: number;
}

/** One append() call waiting to be written. */
interface AppendJob {
  routeBytes: Uint8Array;
  kindCode: number;
  events: string[];
  maxEvents: number;
  maxPayload: number;
  sync: boolean;
  /** Length and event count of each record, once the job is encoded into the scratch buffer. */
  recordLens: number[];
  recordCounts: number[];
  signal: AbortSignal | undefined;
  onAbort: (() => void) | null;
  resolve: () => void;
  reject: (err: unknown) => void;
}

interface DurableWaiter {
  seq: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export class Spool {
  private readonly dir: string;
  private readonly maxBytes: number;
  private readonly whenFull: "block" | "drop_oldest";
  private readonly fsyncPolicy: "always" | "never" | number;
  private segmentBytes: number;
  private readonly log: Logger;
  private readonly minFree: MinFree | undefined;
  private minFreeBytes = 0;
  /** Free bytes on the filesystem: asked at most every SPACE_RECHECK_MS, less what was written since. */
  private freeBytes: number | null = null;
  private freeAskedAt = -Infinity;
  private spaceTimer: ReturnType<typeof setInterval> | null = null;
  private fullReason: FullReason | null = null;
  private skippedBytes = 0;
  private skippedEvents = 0;
  private skippedSegments: string[] = [];

  /** Oldest first; the last one is the active (append) segment. */
  private segments: Segment[] = [];
  private active!: Segment;
  private nextSegmentId = 1;

  private totalEvents = 0;
  private totalBytes = 0;
  private droppedEvents = 0;
  private closed = false;

  // Read side
  private cursorSeg: Segment | null = null;
  private cursorPos = 0;
  private readChunk = MIN_READ_CHUNK;
  private nextId = 1;
  private inFlight = new Map<number, InFlight>();
  private readonly pool = new WindowPool();
  /** Handed out then released: read() returns these first, oldest first. */
  private released: InFlight[] = [];
  private dataWaiters: Array<() => void> = [];

  // Append side
  private scratch: Uint8Array = new Uint8Array(SCRATCH_INITIAL_BYTES);
  private scratchView: DataView = new DataView(this.scratch.buffer);
  private scratchLen = 0;
  /** The job whose records the scratch buffer holds (encoded once, however long it waits). */
  private encodedJob: AppendJob | null = null;
  private routeCache = new Map<string, Uint8Array>();
  private appendQueue: AppendJob[] = [];
  private blockedSince = 0;

  // Durability
  private writeSeq = 0;
  private durableSeq = 0;
  private dirty = new Set<Segment>();
  private dirDirty = false;
  private durableWaiters: DurableWaiter[] = [];
  private syncRunning: Promise<void> | null = null;
  private syncAgain = false;
  private syncTimer: ReturnType<typeof setTimeout> | null = null;

  private unlinking = new Set<Promise<void>>();
  private ackFlushScheduled = false;
  private ackWritesFailing = false;
  private ackSegs = new Set<Segment>();

  private constructor(opts: SpoolOptions) {
    if (!(opts.maxBytes > 0)) throw new Error(`spool maxBytes must be positive, got ${opts.maxBytes}`);
    this.dir = opts.dir;
    this.maxBytes = opts.maxBytes;
    this.whenFull = opts.whenFull;
    this.fsyncPolicy = opts.fsync;
    const seg = opts.segmentBytes ?? Math.min(16 << 20, Math.max(64 << 10, Math.floor(opts.maxBytes / 8)));
    this.segmentBytes = Math.max(1, Math.min(seg, MAX_SEGMENT_BYTES));
    this.log = opts.log;
    this.minFree = opts.minFree;
  }

  /** Create the directory if needed, recover existing segments, start a fresh active segment. */
  static async open(opts: SpoolOptions): Promise<Spool> {
    const spool = new Spool(opts);
    fs.mkdirSync(opts.dir, { recursive: true });
    const fsBytes = spool.askFreeSpace();
    // A segment is freed only once all of it is delivered: on a small filesystem, smaller
    // segments give the space back sooner.
    if (fsBytes !== null && opts.segmentBytes === undefined)
      spool.segmentBytes = Math.max(64 << 10, Math.min(spool.segmentBytes, Math.floor(fsBytes / 32)));
    spool.recover();
    spool.startSegment();
    return spool;
  }

  // ---------------------------------------------------------------- recovery

  private recover(): void {
    const segIds: number[] = [];
    const ackIds = new Set<number>();
    for (const name of fs.readdirSync(this.dir)) {
      const m = /^(\d{1,15})\.(seg|ack)$/.exec(name);
      if (!m) continue;
      const id = Number(m[1]);
      if (m[2] === "seg") segIds.push(id);
      else ackIds.add(id);
      this.nextSegmentId = Math.max(this.nextSegmentId, id + 1);
    }
    segIds.sort((a, b) => a - b);
    // An ack file without its segment is what a crash between the two unlinks leaves behind.
    for (const id of ackIds) if (!segIds.includes(id)) unlinkIfExists(path.join(this.dir, ackFileName(id)));

    let records = 0;
    let skippedBytes = 0;
    for (const id of segIds) {
      const seg = new Segment(id, this.dir, this.pool);
      skippedBytes += this.recoverSegment(seg);
      if (seg.liveRecords === 0) {
        this.removeSegmentFiles(seg, false);
        continue;
      }
      records += seg.liveRecords;
      this.segments.push(seg);
      this.totalEvents += seg.liveEvents;
      this.totalBytes += seg.liveBytes;
    }
    if (segIds.length > 0) {
      this.log.info("spool recovered", {
        dir: this.dir, segments: this.segments.length, records, events: this.totalEvents,
        bytes: this.totalBytes, skipped_bytes: skippedBytes,
      });
    }
  }

  /** Verify every record of a segment; returns the number of bytes skipped as torn or corrupt. */
  private recoverSegment(seg: Segment): number {
    const fd = seg.openFd();
    seg.size = fs.fstatSync(fd).size;
    const ackedBefore = this.readAckFile(seg);
    const acked = new Set<number>();
    let skipped = 0;
    let pos = 0;
    while (pos < seg.size) {
      const total = seg.probe(pos, RECOVERY_CHUNK);
      if (total > 0) {
        if (ackedBefore.has(pos)) {
          acked.add(pos);
        } else {
          const o = pos - seg.winStart;
          seg.liveRecords++;
          seg.liveEvents += seg.winView!.getUint32(o + 20, true);
          seg.liveBytes += total;
        }
        pos += total;
        continue;
      }
      const next = seg.resync(pos + 1, RECOVERY_CHUNK);
      const atTail = next >= seg.size;
      const what = !atTail
        ? "corrupt record skipped"
        : total === SHORT
          ? "torn record at segment tail skipped (interrupted write)"
          : "corrupt data at segment tail skipped";
      const events = this.noteSkipped(seg, pos, next);
      this.log.warn(`spool: ${what}`, { segment: seg.name, dir: this.dir, offset: pos, bytes_skipped: next - pos, events_skipped: events });
      (seg.skips ??= new Map()).set(pos, next);
      skipped += next - pos;
      pos = next;
    }
    seg.acked = acked.size > 0 ? acked : null;
    seg.releaseFd();
    return skipped;
  }

  private readAckFile(seg: Segment): Set<number> {
    const offsets = new Set<number>();
    let data: Uint8Array;
    try {
      data = fs.readFileSync(seg.ackFile);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return offsets;
      throw err;
    }
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const whole = data.byteLength - (data.byteLength % ACK_ENTRY_BYTES);
    // A torn last entry would misalign every entry appended after it.
    if (whole !== data.byteLength) fs.truncateSync(seg.ackFile, whole);
    for (let i = 0; i < whole; i += ACK_ENTRY_BYTES) {
      const off = view.getUint32(i, true);
      if ((~off >>> 0) === view.getUint32(i + 4, true)) offsets.add(off);
    }
    return offsets;
  }

  /**
   * Count a skipped range [from, to) for status and metrics; returns the events it held as far
   * as its first header tells (a torn or damaged header tells nothing).
   */
  private noteSkipped(seg: Segment, from: number, to: number): number {
    let events = 0;
    if (seg.ensure(from, HEADER_BYTES, HEADER_BYTES)) {
      const o = from - seg.winStart;
      const view = seg.winView!;
      if (view.getUint32(o, true) === MAGIC) {
        const count = view.getUint32(o + 20, true);
        const payloadLen = view.getUint32(o + 4, true);
        // A count is believable only if every event could have at least its newline.
        if (count > 0 && count <= payloadLen) events = count;
      }
    }
    this.skippedBytes += to - from;
    this.skippedEvents += events;
    if (this.skippedSegments.at(-1) !== seg.name) {
      this.skippedSegments.push(seg.name);
      if (this.skippedSegments.length > 10) this.skippedSegments.shift();
    }
    return events;
  }

  // ---------------------------------------------------------------- segments

  private startSegment(): void {
    const seg = new Segment(this.nextSegmentId++, this.dir, this.pool);
    // "wx+": a fresh file, never appended after whatever an earlier run left behind.
    seg.fd = fs.openSync(seg.file, "wx+");
    seg.active = true;
    this.segments.push(seg);
    this.active = seg;
    this.dirDirty = true;
    if (this.cursorSeg === null) {
      this.cursorSeg = this.segments[0]!;
      this.cursorPos = 0;
    }
  }

  private roll(): void {
    const old = this.active;
    this.startSegment(); // first: if it fails, the old segment stays the active one
    old.active = false;
    if (old.liveRecords === 0) this.deleteSegment(old);
  }

  private deleteSegment(seg: Segment, background = true): void {
    if (seg.deleted) return;
    seg.deleted = true;
    const i = this.segments.indexOf(seg);
    if (i >= 0) this.segments.splice(i, 1);
    this.totalEvents -= seg.liveEvents;
    this.totalBytes -= seg.liveBytes;
    seg.liveRecords = seg.liveEvents = seg.liveBytes = 0;
    if (this.cursorSeg === seg) {
      this.cursorSeg = this.segments[i] ?? this.active;
      this.cursorPos = 0;
    }
    this.dirty.delete(seg);
    seg.needsSync = false;
    this.ackSegs.delete(seg);
    seg.pendingAcks = [];
    seg.releaseFd();
    seg.closeAckFd();
    this.removeSegmentFiles(seg, background);
  }

  /**
   * Unlink a segment and its ack file. The segment goes first: a crash in between leaves an
   * orphan ack file, which open() removes. At run time the unlinks run off the event loop
   * (dropping a 16 MiB file from the page cache takes milliseconds); a crash before they finish
   * only re-delivers the segment's records whose acks were not yet in its ack file.
   */
  private removeSegmentFiles(seg: Segment, background = true): void {
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
        // Appends waiting for disk space may fit now.
        if (this.fullReason === "min_free" && !this.closed) {
          this.askFreeSpace();
          this.pumpQueue();
        }
      });
    this.unlinking.add(p);
  }

  // ---------------------------------------------------------------- append

  /**
   * Add events as records of at most maxEventsPerRecord events / maxBytesPerRecord bytes. All or
   * nothing: the records are written in one piece once there is room for all of them, so a
   * failure or a cancelled wait leaves none of them behind. While the spool is full (maxBytes,
   * or less than minFree free on its filesystem) `block` makes the append wait; `drop_oldest`
   * discards the oldest records instead.
   */
  append(route: string, kind: "text" | "json", events: string[], opts?: AppendOptions): Promise<void> {
    if (this.closed) return Promise.reject(new SpoolClosedError());
    if (events.length === 0) return Promise.resolve();
    const signal = opts?.signal;
    let routeBytes = this.routeCache.get(route);
    if (routeBytes === undefined) {
      routeBytes = encoder.encode(route);
      if (routeBytes.length > 0xffff) return Promise.reject(new Error(`spool route key too long (${routeBytes.length} bytes)`));
      if (this.routeCache.size >= 1024) this.routeCache.clear();
      this.routeCache.set(route, routeBytes);
    }
    return new Promise<void>((resolve, reject) => {
      const job: AppendJob = {
        routeBytes,
        kindCode: kind === "json" ? KIND_JSON : KIND_TEXT,
        events,
        maxEvents: Math.max(1, opts?.maxEventsPerRecord ?? DEFAULT_EVENTS_PER_RECORD),
        maxPayload: Math.max(1, opts?.maxBytesPerRecord ?? DEFAULT_BYTES_PER_RECORD),
        sync: opts?.sync === true,
        recordLens: [],
        recordCounts: [],
        signal,
        onAbort: null,
        resolve,
        reject,
      };
      // Appends queue behind a blocked one, so waiting writers are served in order.
      if (this.appendQueue.length > 0) {
        if (signal?.aborted) reject(abortError(signal));
        else this.enqueue(job);
        return;
      }
      let done: boolean;
      try {
        done = this.pump(job);
      } catch (err) {
        this.forgetEncoding(job);
        reject(err);
        return;
      }
      if (done) this.finishJob(job);
      else if (signal?.aborted) {
        this.forgetEncoding(job);
        reject(abortError(signal));
      } else this.block(job);
    });
  }

  /** Write the job if there is room for all of it; true when written. */
  private pump(job: AppendJob): boolean {
    if (this.encodedJob !== job) this.encodeJob(job);
    const len = this.scratchLen;
    let full = this.checkRoom(len);
    if (full !== null && this.whenFull === "drop_oldest") {
      this.dropOldestUntilFits(len);
      full = this.checkRoom(len);
    }
    if (full === null && !this.writeJob(job)) full = "min_free";
    if (full !== null) {
      this.fullReason = full;
      if (full === "min_free") this.giveBackActiveSegment();
      return false;
    }
    this.forgetEncoding(job);
    return true;
  }

  /** Why `len` more bytes do not fit now, or null if they do. */
  private checkRoom(len: number): FullReason | null {
    if (this.totalBytes > 0 && this.totalBytes + len > this.maxBytes) return "max_bytes";
    if (this.minFree !== undefined) {
      const now = performance.now();
      const free = this.freeBytes;
      if (free === null || free - len < this.minFreeBytes + SPACE_NEAR_BYTES || now - this.freeAskedAt > SPACE_RECHECK_MS)
        this.askFreeSpace();
      if (this.freeBytes !== null && this.freeBytes - len < this.minFreeBytes) return "min_free";
    }
    return null;
  }

  /**
   * Ask the filesystem how much is free (and work out min_free's bytes from its size); returns
   * the filesystem's size, or null when it cannot be asked (then only maxBytes bounds the spool).
   */
  private askFreeSpace(): number | null {
    if (this.minFree === undefined) return null;
    this.freeAskedAt = performance.now();
    let st: fs.StatsFs;
    try {
      st = fs.statfsSync(this.dir);
    } catch (err) {
      if (this.freeBytes !== null || this.freeAskedAt === 0) return null;
      this.log.warn("spool: cannot ask the filesystem for its free space; only max_bytes bounds the spool", { dir: this.dir, error: errorMessage(err) });
      this.freeAskedAt = Infinity;
      return null;
    }
    const size = Number(st.blocks) * Number(st.bsize);
    this.freeBytes = Number(st.bavail) * Number(st.bsize);
    const m = this.minFree;
    this.minFreeBytes = "bytes" in m ? m.bytes : Math.min(m.capBytes, Math.floor((size * m.percent) / 100));
    return size;
  }

  /**
   * Waiting for disk space while the active segment holds only delivered records: start a new
   * segment so the old one (all delivered) is deleted and its space given back.
   */
  private giveBackActiveSegment(): void {
    const seg = this.active;
    if (seg.size === 0 || seg.liveRecords > 0) return;
    try {
      this.roll();
    } catch {
      // no room even for a new file: the delivered records stay until there is
    }
  }

  /** The job's records (not yet written) are no longer in the scratch buffer. */
  private forgetEncoding(job: AppendJob): void {
    if (this.encodedJob === job) {
      this.encodedJob = null;
      this.scratchLen = 0;
    }
    // One huge append must not pin a huge scratch buffer for the life of the process.
    if (this.encodedJob === null && this.scratch.length > SCRATCH_KEEP_BYTES) this.setScratch(new Uint8Array(SCRATCH_INITIAL_BYTES));
  }

  private finishJob(job: AppendJob): void {
    this.detachAbort(job);
    if (job.sync || this.fsyncPolicy === "always") {
      this.waitDurable(this.writeSeq, true).then(job.resolve, job.reject);
    } else {
      job.resolve();
    }
  }

  private enqueue(job: AppendJob): void {
    this.appendQueue.push(job);
    const signal = job.signal;
    if (signal === undefined) return;
    job.onAbort = () => this.cancel(job);
    signal.addEventListener("abort", job.onAbort, { once: true });
  }

  private detachAbort(job: AppendJob): void {
    if (job.onAbort !== null) job.signal!.removeEventListener("abort", job.onAbort);
    job.onAbort = null;
  }

  /** A waiting append whose caller gave up: it leaves the queue having written nothing. */
  private cancel(job: AppendJob): void {
    const i = this.appendQueue.indexOf(job);
    if (i < 0) return;
    this.appendQueue.splice(i, 1);
    job.onAbort = null;
    this.forgetEncoding(job);
    job.reject(abortError(job.signal!));
    // The next one may fit where this one did not.
    if (i === 0) this.pumpQueue();
  }

  private block(job: AppendJob): void {
    this.enqueue(job);
    if (this.blockedSince === 0) {
      this.blockedSince = Date.now();
      if (this.fullReason === "min_free") {
        this.log.warn("spool full: free space on its filesystem is below spool.min_free; appends wait", {
          dir: this.dir, free_bytes: this.freeBytes, min_free_bytes: this.minFreeBytes, bytes: this.totalBytes,
        });
      } else {
        this.log.warn("spool full: appends wait for deliveries to free space", {
          dir: this.dir, bytes: this.totalBytes, max_bytes: this.maxBytes,
        });
      }
    }
    // Deliveries free space through acks; space others free on the filesystem shows up here.
    this.spaceTimer ??= setInterval(() => {
      this.askFreeSpace();
      this.pumpQueue();
    }, SPACE_RECHECK_MS);
    (this.spaceTimer as { unref?: () => void }).unref?.();
  }

  /** Run queued appends in order while space allows. */
  private pumpQueue(): void {
    while (this.appendQueue.length > 0) {
      const job = this.appendQueue[0]!;
      let done: boolean;
      try {
        done = this.pump(job);
      } catch (err) {
        this.appendQueue.shift();
        this.detachAbort(job);
        this.forgetEncoding(job);
        job.reject(err);
        continue;
      }
      if (!done) return;
      this.appendQueue.shift();
      this.finishJob(job);
    }
    this.unblocked();
  }

  private unblocked(): void {
    if (this.spaceTimer !== null) {
      clearInterval(this.spaceTimer);
      this.spaceTimer = null;
    }
    this.fullReason = null;
    if (this.blockedSince !== 0) {
      this.log.info("spool has space again: appends resumed", { dir: this.dir, waited_ms: Date.now() - this.blockedSince });
      this.blockedSince = 0;
    }
  }

  /** Encode every record of the job into the scratch buffer, back to back. */
  private encodeJob(job: AppendJob): void {
    this.encodedJob = null;
    this.scratchLen = 0;
    job.recordLens = [];
    job.recordCounts = [];
    let next = 0;
    while (next < job.events.length) {
      const at = this.scratchLen;
      const end = this.encodeRecord(job, next, at);
      job.recordLens.push(this.scratchLen - at);
      job.recordCounts.push(end - next);
      next = end;
      if (this.scratchLen > MAX_APPEND_BYTES) {
        this.scratchLen = 0;
        throw new Error(`one append of ${job.events.length} events is more than ${MAX_APPEND_BYTES >> 20} MiB; hand them over in parts`);
      }
    }
    this.encodedJob = job;
  }

  /**
   * Encode the record of events [start, ...) at offset `at` of the scratch buffer (scratchLen
   * becomes its end); returns the index after its last event.
   */
  private encodeRecord(job: AppendJob, start: number, at: number): number {
    const { events } = job;
    let end = Math.min(events.length, start + job.maxEvents);
    let chars = 0;
    for (let i = start; i < end; i++) chars += events[i]!.length + 1;
    // UTF-8 needs at most 3 bytes per UTF-16 unit: only measure exactly when that could exceed the cap.
    if (chars * 3 > job.maxPayload && end - start > 1) {
      let bytes = 0;
      let i = start;
      for (; i < end; i++) {
        const b = Buffer.byteLength(events[i]!, "utf8") + 1;
        if (i > start && bytes + b > job.maxPayload) break;
        bytes += b;
      }
      end = i;
      chars = 0;
      for (let j = start; j < end; j++) chars += events[j]!.length + 1;
    }
    const text = start === 0 && end === events.length ? events.join("\n") : events.slice(start, end).join("\n");
    const routeLen = job.routeBytes.length;
    const payloadAt = at + HEADER_BYTES + routeLen;
    this.ensureScratch(payloadAt + chars * 3);
    const scratch = this.scratch;
    const { written } = encoder.encodeInto(text, scratch.subarray(payloadAt));
    scratch[payloadAt + written!] = 0x0a;
    const payloadLen = written! + 1;
    if (payloadLen > MAX_PAYLOAD) throw new Error(`spool record too large (${payloadLen} bytes)`);
    const total = payloadAt + payloadLen;
    scratch.set(job.routeBytes, at + HEADER_BYTES);
    const v = this.scratchView;
    v.setUint32(at, MAGIC, true);
    v.setUint32(at + 4, payloadLen, true);
    v.setFloat64(at + 12, Date.now(), true);
    v.setUint32(at + 20, end - start, true);
    v.setUint8(at + 24, job.kindCode);
    v.setUint8(at + 25, 0);
    v.setUint16(at + 26, routeLen, true);
    v.setUint32(at + 8, crc32(scratch.subarray(at + CRC_FROM, total)), true);
    this.scratchLen = total;
    return end;
  }

  /** Room for `len` bytes in the scratch buffer, keeping what is encoded so far. */
  private ensureScratch(len: number): void {
    if (this.scratch.length >= len) return;
    let size = this.scratch.length;
    while (size < len) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.scratch.subarray(0, this.scratchLen));
    this.setScratch(grown);
  }

  private setScratch(buf: Uint8Array): void {
    this.scratch = buf;
    this.scratchView = new DataView(buf.buffer);
  }

  /**
   * Write the encoded job in one piece. False when the filesystem is full (nothing of it stays
   * on disk); other write errors throw.
   */
  private writeJob(job: AppendJob): boolean {
    const len = this.scratchLen;
    let seg = this.active;
    try {
      if (seg.broken || (seg.size > 0 && seg.size + len > this.segmentBytes)) {
        this.roll();
        seg = this.active;
      }
      writeFully(seg.fd!, this.scratch, len, seg.size);
    } catch (err) {
      let truncated = true;
      if (seg.fd !== null && seg === this.active) {
        // Part of the append may be on disk: keep it out of the valid range.
        try {
          fs.ftruncateSync(seg.fd, seg.size);
        } catch {
          truncated = false;
        }
      }
      if (!truncated) seg.broken = true; // recovery will find and skip the torn bytes; never append after them
      if (isNoSpace(err)) {
        this.freeBytes = 0;
        this.freeAskedAt = performance.now();
        return false;
      }
      throw err;
    }
    const records = job.recordLens.length;
    seg.size += len;
    seg.liveRecords += records;
    let events = 0;
    for (const c of job.recordCounts) events += c;
    seg.liveEvents += events;
    seg.liveBytes += len;
    this.totalEvents += events;
    this.totalBytes += len;
    if (this.freeBytes !== null) this.freeBytes -= len;
    this.writeSeq++;
    seg.needsSync = true;
    this.dirty.add(seg);
    this.scheduleTimedSync();
    if (this.dataWaiters.length > 0) this.wakeReaders();
    return true;
  }

  private dropOldestUntilFits(len: number): void {
    while (this.totalBytes > 0 && this.checkRoom(len) !== null) {
      const oldest = this.segments[0]!;
      if (oldest === this.active) this.roll();
      if (oldest.deleted) continue; // roll() deleted it: it held nothing unacked
      // Records already handed out are being delivered: they are not counted as dropped, and
      // their late acks are ignored.
      let inFlightEvents = 0;
      for (const r of this.inFlight.values()) if (r.seg === oldest) inFlightEvents += r.count;
      this.released = this.released.filter((r) => r.seg !== oldest);
      const dropped = oldest.liveEvents - inFlightEvents;
      this.droppedEvents += dropped;
      this.log.warn("spool full: dropped oldest events", {
        dir: this.dir, segment: oldest.name, events: dropped, bytes: oldest.liveBytes, full: this.checkRoom(len),
      });
      // At once, not in the background: the next look at the free space must see it gone.
      this.deleteSegment(oldest, false);
      this.askFreeSpace();
    }
  }

  // ---------------------------------------------------------------- durability

  /** Interval policy: one fsync at most `fsync` ms after a write (group commit). */
  private scheduleTimedSync(): void {
    if (typeof this.fsyncPolicy !== "number" || this.syncTimer !== null || this.closed) return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = null;
      this.requestSync();
    }, this.fsyncPolicy);
  }

  whenDurable(): Promise<void> {
    if (this.fsyncPolicy === "never" || this.durableSeq >= this.writeSeq) return Promise.resolve();
    return this.waitDurable(this.writeSeq, this.fsyncPolicy === "always");
  }

  sync(): Promise<void> {
    if (this.durableSeq >= this.writeSeq && this.dirty.size === 0 && !this.dirDirty) {
      return this.syncRunning ?? Promise.resolve();
    }
    return this.waitDurable(this.writeSeq, true);
  }

  /**
   * Resolve once writes up to seq are fsynced. `start` begins an fsync now (covering every dirty
   * file) instead of waiting for the interval timer.
   */
  private waitDurable(seq: number, start: boolean): Promise<void> {
    const covered = this.durableSeq >= seq && (!start || (this.dirty.size === 0 && !this.dirDirty));
    if (covered) return Promise.resolve();
    const p = new Promise<void>((resolve, reject) => {
      this.durableWaiters.push({ seq, resolve, reject });
    });
    if (start) this.requestSync();
    return p;
  }

  private requestSync(): void {
    if (this.syncRunning) {
      this.syncAgain = true;
      return;
    }
    this.syncRunning = this.runSyncs().finally(() => {
      this.syncRunning = null;
    });
  }

  private async runSyncs(): Promise<void> {
    do {
      this.syncAgain = false;
      const target = this.writeSeq;
      const segs = [...this.dirty];
      this.dirty.clear();
      for (const seg of segs) seg.needsSync = false;
      const syncDir = this.dirDirty;
      this.dirDirty = false;
      let failure: unknown = null;
      await Promise.all(segs.map(async (seg) => {
        if (seg.fd === null) return;
        seg.syncing++;
        try {
          await fdatasyncAsync(seg.fd);
        } catch (err) {
          failure ??= err;
          if (!seg.deleted) {
            seg.needsSync = true;
            this.dirty.add(seg);
          }
        } finally {
          seg.syncDone();
        }
      }));
      if (syncDir) {
        try {
          await fsyncDirAsync(this.dir);
        } catch (err) {
          failure ??= err;
          this.dirDirty = true;
        }
      }
      const settled: DurableWaiter[] = [];
      this.durableWaiters = this.durableWaiters.filter((w) => (w.seq <= target ? (settled.push(w), false) : true));
      if (failure) {
        this.log.error("spool fsync failed", { dir: this.dir, error: errorMessage(failure) });
        for (const w of settled) w.reject(failure);
        this.scheduleTimedSync();
      } else {
        if (target > this.durableSeq) this.durableSeq = target;
        for (const w of settled) w.resolve();
      }
      // Only explicit requests loop; interval waiters are covered by the next timer run.
    } while (this.syncAgain);
  }

  // ---------------------------------------------------------------- read

  read(maxBytes: number): SpoolRecord[] {
    const out: SpoolRecord[] = [];
    if (this.closed) return out;
    let bytes = 0;
    while (this.released.length > 0) {
      const r = this.released[0]!;
      const payloadLen = this.payloadLengthOf(r);
      if (out.length > 0 && bytes + payloadLen > maxBytes) return out;
      this.released.shift();
      const rec = this.handOut(r.seg, r.offset, r.total);
      if (rec) {
        out.push(rec);
        bytes += rec.payload.length;
      }
    }
    this.readChunk = Math.max(MIN_READ_CHUNK, Math.min(maxBytes, 64 << 20) + (64 << 10));
    for (;;) {
      const total = this.locateNext();
      if (total <= 0) break;
      const seg = this.cursorSeg!;
      const o = this.cursorPos - seg.winStart;
      const payloadLen = seg.winView!.getUint32(o + 4, true);
      if (out.length > 0 && bytes + payloadLen > maxBytes) break;
      out.push(this.recordFromWindow(seg, this.cursorPos, total));
      bytes += payloadLen;
      this.cursorPos += total;
    }
    return out;
  }

  private payloadLengthOf(r: InFlight): number {
    if (r.seg.deleted || !r.seg.ensure(r.offset, HEADER_BYTES, HEADER_BYTES)) return 0;
    return r.seg.winView!.getUint32(r.offset - r.seg.winStart + 4, true);
  }

  /** Re-read a released record; null if it no longer verifies. */
  private handOut(seg: Segment, offset: number, total: number): SpoolRecord | null {
    if (seg.deleted) return null;
    if (seg.probe(offset, total) !== total) {
      this.log.error("spool: record failed verification on re-read, skipped", { segment: seg.name, offset });
      this.noteSkipped(seg, offset, offset + total);
      return null;
    }
    return this.recordFromWindow(seg, offset, total);
  }

  private recordFromWindow(seg: Segment, offset: number, total: number): SpoolRecord {
    const buf = seg.winBuf!;
    const view = seg.winView!;
    const o = offset - seg.winStart;
    const routeLen = view.getUint16(o + 26, true);
    const count = view.getUint32(o + 20, true);
    const appendedAt = view.getFloat64(o + 12, true);
    const id = this.nextId++;
    const win = seg.win!;
    win.refs++;
    this.inFlight.set(id, { seg, win, offset, total, count, appendedAt });
    return {
      id,
      route: decoder.decode(buf.subarray(o + HEADER_BYTES, o + HEADER_BYTES + routeLen)),
      kind: view.getUint8(o + 24) === KIND_JSON ? "json" : "text",
      count,
      payload: buf.subarray(o + HEADER_BYTES + routeLen, o + total),
      appendedAt,
    };
  }

  /**
   * Move the cursor to the next unread, unacked, valid record; returns its length with the
   * segment window covering it, or 0 if there is none yet.
   */
  private locateNext(): number {
    for (;;) {
      const seg = this.cursorSeg;
      if (seg === null || seg.deleted) return 0;
      const pos = this.cursorPos;
      if (pos >= seg.size) {
        if (seg.active) return 0;
        const next = this.segments[this.segments.indexOf(seg) + 1];
        if (next === undefined) return 0;
        seg.releaseFd();
        this.cursorSeg = next;
        this.cursorPos = 0;
        continue;
      }
      const skipTo = seg.skips?.get(pos);
      if (skipTo !== undefined) {
        this.cursorPos = skipTo;
        continue;
      }
      const total = seg.probe(pos, this.readChunk);
      if (total <= 0) {
        // Verified when written or recovered, so this is damage done since: skip it like recovery would.
        const next = seg.resync(pos + 1, this.readChunk);
        const events = this.noteSkipped(seg, pos, next);
        this.log.error("spool: record failed verification on read, skipped", {
          segment: seg.name, dir: this.dir, offset: pos, bytes_skipped: next - pos, events_skipped: events,
        });
        (seg.skips ??= new Map()).set(pos, next);
        this.cursorPos = next;
        continue;
      }
      if (seg.acked?.has(pos)) {
        this.cursorPos = pos + total;
        continue;
      }
      return total;
    }
  }

  private hasUnread(): boolean {
    return this.released.length > 0 || this.locateNext() > 0;
  }

  waitForData(signal?: AbortSignal): Promise<void> {
    if (this.closed || signal?.aborted || this.hasUnread()) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        signal?.removeEventListener("abort", done);
        const i = this.dataWaiters.indexOf(done);
        if (i >= 0) this.dataWaiters.splice(i, 1);
        resolve();
      };
      this.dataWaiters.push(done);
      signal?.addEventListener("abort", done, { once: true });
    });
  }

  private wakeReaders(): void {
    const waiters = this.dataWaiters;
    this.dataWaiters = [];
    for (const w of waiters) w();
  }

  // ---------------------------------------------------------------- ack / release

  ack(id: number): void {
    const r = this.inFlight.get(id);
    if (r === undefined) return;
    this.inFlight.delete(id);
    this.unref(r);
    const seg = r.seg;
    if (seg.deleted) return;
    seg.liveRecords--;
    seg.liveEvents -= r.count;
    seg.liveBytes -= r.total;
    this.totalEvents -= r.count;
    this.totalBytes -= r.total;
    if (seg.liveRecords === 0 && !seg.active) {
      this.deleteSegment(seg);
    } else {
      seg.pendingAcks.push(r.offset);
      this.ackSegs.add(seg);
      if (!this.ackFlushScheduled) {
        this.ackFlushScheduled = true;
        queueMicrotask(() => this.flushAcks());
      }
    }
    if (this.appendQueue.length > 0) this.pumpQueue();
  }

  /** The record's payload is no longer used by whoever read it. */
  private unref(r: InFlight): void {
    const w = r.win;
    if (w === null) return;
    r.win = null;
    w.refs--;
    this.pool.settle(w);
  }

  private flushAcks(): void {
    this.ackFlushScheduled = false;
    for (const seg of this.ackSegs) {
      const offsets = seg.pendingAcks;
      seg.pendingAcks = [];
      if (seg.deleted || offsets.length === 0) continue;
      const buf = new Uint8Array(offsets.length * ACK_ENTRY_BYTES);
      const view = new DataView(buf.buffer);
      for (let i = 0; i < offsets.length; i++) {
        view.setUint32(i * ACK_ENTRY_BYTES, offsets[i]!, true);
        view.setUint32(i * ACK_ENTRY_BYTES + 4, ~offsets[i]! >>> 0, true);
      }
      try {
        seg.ackFd ??= fs.openSync(seg.ackFile, "a");
        writeFully(seg.ackFd, buf, buf.length, null);
        if (this.ackWritesFailing) {
          this.ackWritesFailing = false;
          this.log.info("spool: acks are recorded again", { segment: seg.name });
        }
      } catch (err) {
        // Only costs a re-delivery after a crash; said once, not for every upload (a full disk
        // fails every ack write until there is room again).
        if (!this.ackWritesFailing) this.log.warn("spool: cannot record acks (after a crash these events would be sent again)", { segment: seg.name, error: errorMessage(err) });
        this.ackWritesFailing = true;
      }
    }
    this.ackSegs.clear();
  }

  release(ids: number[]): void {
    let any = false;
    for (const id of ids) {
      const r = this.inFlight.get(id);
      if (r === undefined) continue;
      this.inFlight.delete(id);
      this.unref(r);
      if (r.seg.deleted) continue;
      this.released.push(r);
      any = true;
    }
    if (!any) return;
    this.released.sort((a, b) => a.seg.id - b.seg.id || a.offset - b.offset);
    if (this.dataWaiters.length > 0) this.wakeReaders();
  }

  // ---------------------------------------------------------------- stats / close

  stats(): SpoolStats {
    let oldest = Infinity;
    if (this.totalEvents > 0 && !this.closed) {
      for (const r of this.inFlight.values()) if (!r.seg.deleted && r.appendedAt < oldest) oldest = r.appendedAt;
      for (const r of this.released) if (r.appendedAt < oldest) oldest = r.appendedAt;
      const total = this.locateNext();
      if (total > 0) {
        const seg = this.cursorSeg!;
        const at = seg.winView!.getFloat64(this.cursorPos - seg.winStart + 12, true);
        if (at < oldest) oldest = at;
      }
    }
    const age = oldest === Infinity ? 0 : Math.max(0, Math.round(Date.now() - oldest) / 1000);
    return {
      events: this.totalEvents,
      bytes: this.totalBytes,
      max_bytes: this.maxBytes,
      oldest_event_age_s: age,
      dropped: this.droppedEvents,
      blocked: this.appendQueue.length > 0,
      full: this.appendQueue.length > 0 ? this.fullReason ?? "max_bytes" : null,
      free_bytes: this.freeBytes === null ? null : Math.max(0, this.freeBytes),
      min_free_bytes: this.minFreeBytes,
      skipped_bytes: this.skippedBytes,
      skipped_events: this.skippedEvents,
      skipped_segments: [...this.skippedSegments],
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.syncTimer !== null) {
      clearTimeout(this.syncTimer);
      this.syncTimer = null;
    }
    const err = new SpoolClosedError();
    for (const job of this.appendQueue.splice(0)) {
      this.detachAbort(job);
      job.reject(err);
    }
    this.encodedJob = null;
    this.scratchLen = 0;
    if (this.spaceTimer !== null) clearInterval(this.spaceTimer);
    this.spaceTimer = null;
    this.fullReason = null;
    this.blockedSince = 0;
    this.wakeReaders();
    this.flushAcks();
    try {
      await this.waitDurable(this.writeSeq, true);
    } finally {
      if (this.syncRunning) await this.syncRunning.catch(() => {});
      for (const seg of this.segments) {
        seg.needsSync = false; // a failed final fsync was reported; do not leak the fd for it
        seg.releaseFd();
        seg.closeAckFd();
        if (seg.active && seg.size === 0) this.removeSegmentFiles(seg);
      }
      await Promise.all([...this.unlinking]);
      this.inFlight.clear();
      this.released = [];
      this.pool.clear();
    }
  }
}
