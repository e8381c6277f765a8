// When the spool's writes reach the disk, by the fsync policy: always, never, or group commit
// at an interval. Appends and sync() wait here for the fsync round that covers them.
import * as fs from "node:fs";
import type { Logger } from "../plugin.ts";
import { errorMessage } from "../errortext.ts";
import type { Segment } from "./segment.ts";

export type FsyncPolicy = "always" | "never" | number;

interface DurableWaiter {
  seq: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/**
 * When written records reach the disk: fdatasync of the segments written since the last one,
 * and of the directory when segments were created. Each write gets a sequence number; a waiter
 * is settled by the first fsync round that started after its write.
 */
export class Durability {
  private writeSeq = 0;
  private durableSeq = 0;
  private dirty = new Set<Segment>();
  private dirDirty = false;
  private waiters: DurableWaiter[] = [];
  private syncRunning: Promise<void> | null = null;
  private syncAgain = false;
  private syncTimer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;

  constructor(readonly policy: FsyncPolicy, private readonly dir: string, private readonly log: Logger) {}

  /** The fsync round running now, if any. */
  get running(): Promise<void> | null {
    return this.syncRunning;
  }

  /** An append was written to `seg`. */
  written(seg: Segment): void {
    this.writeSeq++;
    seg.needsSync = true;
    this.dirty.add(seg);
    this.scheduleTimedSync();
  }

  /** A segment file was created: the directory needs an fsync too. */
  dirChanged(): void {
    this.dirDirty = true;
  }

  /** The segment is being deleted: it needs no fsync. */
  forget(seg: Segment): void {
    this.dirty.delete(seg);
    seg.needsSync = false;
  }

  /** No more timed fsyncs (the spool closes); explicit ones still run. */
  stop(): void {
    this.stopped = true;
    if (this.syncTimer !== null) {
      clearTimeout(this.syncTimer);
      this.syncTimer = null;
    }
  }

  /** Interval policy: one fsync at most `fsync` ms after a write (group commit). */
  private scheduleTimedSync(): void {
    if (typeof this.policy !== "number" || this.syncTimer !== null || this.stopped) return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = null;
      this.requestSync();
    }, this.policy);
  }

  whenDurable(): Promise<void> {
    if (this.policy === "never" || this.durableSeq >= this.writeSeq) return Promise.resolve();
    return this.waitDurable(this.writeSeq, this.policy === "always");
  }

  sync(): Promise<void> {
    if (this.durableSeq >= this.writeSeq && this.dirty.size === 0 && !this.dirDirty) {
      return this.syncRunning ?? Promise.resolve();
    }
    return this.waitDurable(this.writeSeq, true);
  }

  /** Resolve once everything written so far is fsynced, starting an fsync now. */
  syncWritten(): Promise<void> {
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
      this.waiters.push({ seq, resolve, reject });
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
      this.waiters = this.waiters.filter((w) => (w.seq <= target ? (settled.push(w), false) : true));
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
