// One segment file of the spool: its name, its file descriptors, and reading its records
// through a window (a buffer over a stretch of the file), verifying each one on the way.
// Also the small file helpers the other spool files write and unlink with.
//
// Segments are named NNNNNNNN.seg by a number that grows with each new segment, so their order
// on disk is their order in the queue; each may have an ack file NNNNNNNN.ack beside it
// (acks.ts). Records are only ever appended to the newest (active) segment.
import * as fs from "node:fs";
import * as path from "node:path";
import type { WindowPool, ReadWindow } from "./windowpool.ts";
import { HEADER_BYTES, MAGIC_FIRST_BYTE, NOT_A_HEADER, recordLength, checksumMatches } from "./record.ts";

/** Segment offsets are stored as u32 in ack files, so a segment never starts a record past 2^31. */
export const MAX_SEGMENT_BYTES = 1 << 30;

/** The names of a spool directory's files: a segment or its ack file, by number. */
export const SPOOL_FILE_NAME = /^(\d{1,15})\.(seg|ack)$/;

// probe() results that are not a record length
/** Not enough bytes left for a header, or a plausible header whose record runs past the end. */
export const SHORT = -1;
/** Wrong magic, impossible fields or a checksum mismatch. */
export const BAD = -2;

export function segmentFileName(id: number): string {
  return `${String(id).padStart(8, "0")}.seg`;
}

export function ackFileName(id: number): string {
  return `${String(id).padStart(8, "0")}.ack`;
}

/** Write len bytes of buf at position, or at the end for an append-mode fd (position null). */
export function writeFully(fd: number, buf: Uint8Array, len: number, position: number | null): void {
  let done = 0;
  while (done < len) done += fs.writeSync(fd, buf, done, len - done, position === null ? null : position + done);
}

export function unlinkIfExists(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}

/** One segment file and what the spool knows about it. */
export class Segment {
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
    const total = recordLength(this.winView!, pos - this.winStart);
    if (total === NOT_A_HEADER) return BAD;
    if (!this.ensure(pos, total, chunk)) return SHORT;
    if (!checksumMatches(this.winBuf!, this.winView!, pos - this.winStart, total)) return BAD;
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
