// <data_dir>/reserve: a little disk space set aside so that the agent can always come up on a
// full disk and deliver what is spooled (delivering is what frees space).
//
// The reserve is a file of real written zeros (not sparse: the blocks are allocated), fsynced,
// put in place by rename so that it is either whole or absent. Everything about it lives in
// the file itself, so any number of Reserve objects over one data_dir agree; within a process
// their operations on one file run one at a time.
//
//   const reserve = new Reserve(dataDir, { log });
//   await reserve.ensure();            // create it if missing and the disk has room; true = in place
//   await reserve.release("why");      // delete it; true = it freed space
//   await reserve.retryOnFull("what", () => write());   // ENOSPC/EDQUOT: release, then retry once
//
// ensure() never takes the last free space (it needs room for twice the reserve) and never
// throws, so the core can call it periodically (e.g. whenever the spool frees a segment) to put
// the reserve back once space has come back. release() is for a write that must not fail for want
// of space: the runningconfig and the lock's pid at start-up, state saves. Call it only after
// such a write failed, then retry that write once (retryOnFull does both).
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import { join } from "node:path";
import { isNoSpace } from "./fserrors.ts";
import { errorMessage } from "./errortext.ts";
import type { Logger } from "./plugin.ts";

export const RESERVE_BYTES = 1024 * 1024;
/** The reserve being written, renamed to "reserve" once whole. */
export const RESERVE_TEMP = "reserve.tmp";


// One queue per reserve file in this process, shared by every Reserve object over it.
const queues = new Map<string, Promise<unknown>>();

const CHUNK = 64 * 1024;

export class Reserve {
  readonly path: string;
  readonly bytes: number;
  private readonly tmp: string;
  private readonly log?: Logger;

  constructor(readonly dataDir: string, opts: { bytes?: number; log?: Logger } = {}) {
    this.path = join(dataDir, "reserve");
    this.tmp = join(dataDir, RESERVE_TEMP);
    this.bytes = opts.bytes ?? RESERVE_BYTES;
    this.log = opts.log;
  }

  /** Whether the reserve file is there, whole. */
  inPlace(): boolean {
    try {
      return fs.statSync(this.path).size >= this.bytes;
    } catch {
      return false;
    }
  }

  /** Puts the reserve in place if it is missing and the filesystem has room for twice its size.
   *  Resolves to whether it is in place afterwards; never rejects. */
  ensure(): Promise<boolean> {
    return this.serial(async () => {
      if (this.inPlace()) return true;
      const free = freeBytes(this.dataDir);
      if (free !== undefined && free < 2 * this.bytes) return false;
      try {
        await this.writeZeros();
        await fsp.rename(this.tmp, this.path);
        await syncDir(this.dataDir);
      } catch (err) {
        await fsp.unlink(this.tmp).catch(() => {});
        if (!isNoSpace(err)) this.log?.warn("cannot create the disk-space reserve", { path: this.path, error: errorMessage(err) });
        return false;
      }
      this.log?.debug("disk-space reserve in place", { path: this.path, bytes: this.bytes });
      return true;
    });
  }

  /** Deletes the reserve (and a half-written one); resolves to whether that freed space. */
  release(reason = "a write failed for want of space"): Promise<boolean> {
    return this.serial(async () => {
      let freed = false;
      for (const file of [this.path, this.tmp]) {
        try {
          await fsp.unlink(file);
          freed = true;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "ENOENT") this.log?.warn("cannot delete the disk-space reserve", { path: file, error: errorMessage(err) });
        }
      }
      if (freed) this.log?.warn("disk full: released the disk-space reserve", { path: this.path, bytes: this.bytes, reason });
      return freed;
    });
  }

  /** Runs `write`; if it fails for want of space and releasing the reserve frees some, runs it
   *  once more. Any other failure, or a second one, is the caller's. */
  async retryOnFull<T>(what: string, write: () => Promise<T>): Promise<T> {
    try {
      return await write();
    } catch (err) {
      if (!isNoSpace(err) || !(await this.release(`${what}: ${errorMessage(err)}`))) throw err;
    }
    return await write();
  }

  private async writeZeros(): Promise<void> {
    const fh = await fsp.open(this.tmp, "w", 0o600);
    try {
      const zeros = new Uint8Array(CHUNK);
      for (let done = 0; done < this.bytes; ) {
        const { bytesWritten } = await fh.write(zeros, 0, Math.min(CHUNK, this.bytes - done), done);
        done += bytesWritten;
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  private serial<T>(op: () => Promise<T>): Promise<T> {
    const prev = queues.get(this.path) ?? Promise.resolve();
    const next = prev.then(op, op);
    const tail = next.catch(() => {});
    queues.set(this.path, tail);
    void tail.then(() => {
      if (queues.get(this.path) === tail) queues.delete(this.path);
    });
    return next;
  }
}

/** Bytes an unprivileged writer can still use on dir's filesystem; undefined if unknown. */
function freeBytes(dir: string): number | undefined {
  try {
    const s = fs.statfsSync(dir);
    return Number(s.bavail) * Number(s.bsize);
  } catch {
    return undefined;
  }
}

async function syncDir(dir: string): Promise<void> {
  const dh = await fsp.open(dir, "r");
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
