// Free space on the spool's filesystem, for spool.min_free: below it the spool is full as at
// max_bytes. statfs is asked at most every SPACE_RECHECK_MS (more often when close to the
// limit); between two looks, what the spool wrote is taken off the last answer.
import * as fs from "node:fs";
import type { Logger } from "../plugin.ts";
import { errorMessage } from "../errortext.ts";

/** Free space to keep on the spool's filesystem: bytes, or a percentage of its size (capped). */
export type MinFree = { bytes: number } | { percent: number; capBytes: number };

/** While appends wait for free space, the filesystem is asked again this often. */
export const SPACE_RECHECK_MS = 250;
/** Within this distance of min_free every append asks the filesystem instead of estimating. */
const SPACE_NEAR_BYTES = 4 << 20;

export class FreeSpace {
  /** min_free in bytes, worked out from the filesystem's size at the last look. */
  minFreeBytes = 0;
  /** Free bytes on the filesystem: as last asked, less what was written since (null: never known). */
  freeBytes: number | null = null;
  private freeAskedAt = -Infinity;

  constructor(private readonly dir: string, private readonly minFree: MinFree | undefined, private readonly log: Logger) {}

  /** `len` more bytes would leave less than min_free free (asking the filesystem when due). */
  wouldGoBelow(len: number): boolean {
    if (this.minFree === undefined) return false;
    const now = performance.now();
    const free = this.freeBytes;
    if (free === null || free - len < this.minFreeBytes + SPACE_NEAR_BYTES || now - this.freeAskedAt > SPACE_RECHECK_MS)
      this.ask();
    return this.freeBytes !== null && this.freeBytes - len < this.minFreeBytes;
  }

  /** The spool wrote `len` bytes. */
  used(len: number): void {
    if (this.freeBytes !== null) this.freeBytes -= len;
  }

  /** A write failed for want of space: take the filesystem as full until it is asked again. */
  exhausted(): void {
    this.freeBytes = 0;
    this.freeAskedAt = performance.now();
  }

  /**
   * Ask the filesystem how much is free (and work out min_free's bytes from its size); returns
   * the filesystem's size, or null when it cannot be asked (then only maxBytes bounds the spool).
   */
  ask(): number | null {
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
}
