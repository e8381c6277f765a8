// One agent per data_dir: an exclusive flock(2) on <data_dir>/lock, taken with LOCK_EX|LOCK_NB.
// The kernel drops the lock when its holder exits however it exits (kill -9 included), and
// taking it is one atomic step, so there is no window between checking and locking. The file is
// kept, never deleted: deleting it would let a newcomer lock a fresh file while another
// process still holds the old one. After locking, the holder writes its pid into the file so
// that the one refused can name it (informational: a failed write, e.g. a full disk, keeps
// the lock).
//
// Where flock cannot be called (no FFI for this runtime or C library), an O_EXCL lock file
// <data_dir>/lock.pid (its own name, so that taking over a stale one never deletes the flock
// file) holding the pid stands in: a file whose pid is dead is stale and taken
// over (an empty one once it is 2 s old). That fallback has the usual narrow race between two
// newcomers taking over one stale file, and a holder that could not write its pid (full disk)
// looks stale; on Linux under Bun and Deno the flock path is used.
import { closeSync, constants, ftruncateSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import { errorMessage } from "./errortext.ts";
import type { Logger } from "./plugin.ts";
import type { Reserve } from "./reserve.ts";
import { isAlive } from "./runningconfig.ts";
import { EINTR, EWOULDBLOCK, LOCK_EX, LOCK_NB, loadFlock, type Flock } from "./runtime/flock.ts";

export class AlreadyRunningError extends Error {
  /** Finds this error's message in text such as a log (the CLI reads it from the daemon's). */
  static readonly pattern = /an agent is already running on .+? \(pid (?:\d+|unknown)\)/;

  constructor(readonly dataDir: string, readonly pid: number | undefined) {
    super(`an agent is already running on ${dataDir} (pid ${pid ?? "unknown"})`);
  }
}

export interface LockOptions {
  log?: Logger;
  /** Gives space for the pid when the disk is full. */
  reserve?: Reserve;
  /** How flock is called; null takes the lock-file fallback. Default: the runtime's (runtime/flock.ts). */
  flock?: Flock | null;
  /** How long a refused newcomer waits for the holder's pid to appear in the file. */
  pidWaitMs?: number;
}

// Locks this process holds, by data_dir: the shutdown releases its data_dir's.
const held = new Map<string, DataDirLock>();

export class DataDirLock {
  private constructor(
    readonly dataDir: string,
    readonly path: string,
    readonly method: "flock" | "lockfile",
    private fd: number | undefined,
  ) {}

  /** The lock this process holds on dataDir, if any. */
  static heldOn(dataDir: string): DataDirLock | undefined {
    return held.get(dataDir);
  }

  /** Takes the lock or throws AlreadyRunningError naming the holder's pid. The data_dir must exist. */
  static async acquire(dataDir: string, opts: LockOptions = {}): Promise<DataDirLock> {
    let flock = opts.flock;
    if (flock === undefined) {
      const loaded = await loadFlock();
      if ("flock" in loaded) flock = loaded.flock;
      else {
        flock = null;
        opts.log?.debug(`flock(2) is not available (${loaded.unavailable}); using an O_EXCL lock file instead`, { path: join(dataDir, "lock.pid") });
      }
    }
    const lock = flock ? await DataDirLock.byFlock(dataDir, flock, opts) : await DataDirLock.byLockFile(dataDir, opts);
    held.set(dataDir, lock);
    opts.log?.debug("data_dir locked", { path: lock.path, method: lock.method });
    return lock;
  }

  /** Lets the lock go (the process's exit does the same). */
  release(): void {
    if (this.fd === undefined) return;
    const fd = this.fd;
    this.fd = undefined;
    if (held.get(this.dataDir) === this) held.delete(this.dataDir);
    if (this.method === "lockfile" && readPid(this.path) === process.pid) {
      try {
        unlinkSync(this.path);
      } catch {
        // gone already
      }
    }
    closeSync(fd); // closing the last descriptor of the open file drops a flock
  }

  private static async byFlock(dataDir: string, flock: Flock, opts: LockOptions): Promise<DataDirLock> {
    const path = join(dataDir, "lock");
    const deadline = Date.now() + (opts.pidWaitMs ?? 2000);
    for (;;) {
      const fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o600);
      let errno: number;
      do errno = flock(fd, LOCK_EX | LOCK_NB);
      while (errno === EINTR);
      if (errno === 0) {
        await writePid(fd, path, opts);
        return new DataDirLock(dataDir, path, "flock", fd);
      }
      closeSync(fd);
      if (errno !== EWOULDBLOCK) throw new Error(`cannot lock ${path}: flock failed with errno ${errno}`);
      // Held. Its holder writes its pid right after locking; until then the file may be empty or
      // name the previous, dead holder, so give it a moment.
      const pid = readPid(path);
      if (pid !== undefined && isAlive(pid)) throw new AlreadyRunningError(dataDir, pid);
      if (Date.now() >= deadline) throw new AlreadyRunningError(dataDir, undefined);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  private static async byLockFile(dataDir: string, opts: LockOptions): Promise<DataDirLock> {
    const path = join(dataDir, "lock.pid");
    const deadline = Date.now() + (opts.pidWaitMs ?? 2000);
    for (;;) {
      let fd: number;
      try {
        fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL, 0o600);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        const pid = readPid(path);
        if (pid !== undefined && isAlive(pid)) throw new AlreadyRunningError(dataDir, pid);
        // An empty file may be a newcomer that has not written its pid yet: stale only once old.
        if (pid === undefined && Date.now() - mtimeMs(path) < 2000) {
          if (Date.now() >= deadline) throw new AlreadyRunningError(dataDir, undefined);
          await new Promise((r) => setTimeout(r, 20));
          continue;
        }
        if (readPid(path) === pid) {
          try {
            unlinkSync(path);
          } catch {
            // another newcomer took it over first; the next round sees its file
          }
        }
        opts.log?.info("took over a stale lock file", { path, stale_pid: pid ?? null });
        continue;
      }
      await writePid(fd, path, opts);
      return new DataDirLock(dataDir, path, "lockfile", fd);
    }
  }
}

async function writePid(fd: number, path: string, opts: LockOptions): Promise<void> {
  const write = async () => {
    ftruncateSync(fd, 0);
    const text = Buffer.from(`${process.pid}\n`);
    writeSync(fd, text, 0, text.length, 0);
  };
  try {
    if (opts.reserve) await opts.reserve.retryOnFull(`the pid in ${path}`, write);
    else await write();
  } catch (err) {
    // The pid only helps a refused newcomer name the holder; the lock is what counts.
    opts.log?.warn("cannot write the pid into the lock file (the lock is held all the same)", { path, error: errorMessage(err) });
  }
}

function readPid(path: string): number | undefined {
  try {
    const text = readFileSync(path, "utf8").trim();
    return /^[1-9]\d*$/.test(text) ? Number(text) : undefined;
  } catch {
    return undefined;
  }
}

function mtimeMs(path: string): number {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return 0;
  }
}
