// Watching directories for entries that appear, change or go (inotify on Linux, through
// node:fs watch, which Bun and Deno both provide), so a new file is opened the moment it is
// created rather than at the next listing. Watching is an accelerator, never a dependency:
// a directory that cannot be watched (missing, out of inotify watches, a file system without
// events) or whose watch breaks is reported, and the caller's listing finds its files.
//
// Where the watch runs. A file may be written and renamed away within a millisecond or two,
// while the input's own thread is busy reading and handing on lines for longer than that.
// Under Bun the watches run in a worker whose thread does nothing else: it opens each new
// file the caller's name filter accepts as soon as the event arrives, and hands over the
// descriptor (descriptors belong to the process, so the caller reads it as its own). Under
// Deno a descriptor opened in a worker cannot be used outside it, so the watches run on the
// caller's thread, which opens new files inside the event.
//
// A watch follows the directory's inode: a directory that is removed (or renamed) and made
// again under its name is not seen by the old watch. Its removal is noticed by the event that
// names the directory itself, by the caller from its parent's event (check()), and at every
// update() by comparing inodes.
import { closeSync, statSync, watch } from "node:fs";
import type { FSWatcher } from "node:fs";
import { basename } from "node:path";
import { WATCH_WORKER_SOURCE } from "./watch-worker.ts";

/** A file the watch opened when the event came: its descriptor (now the listener's) and what fstat said. */
export interface Opened {
  fd: number;
  dev: number;
  ino: number;
  size: number;
  mtimeMs: number;
}

/**
 * An entry of `dir` appeared, went or was renamed ("rename"), or was written to ("change");
 * name null: unknown (look at the whole directory). `opened`, when not null, is the file the
 * entry named at the event, already open: the listener takes its descriptor (keeps or closes it).
 */
export type WatchListener = (dir: string, type: string, name: string | null, opened: Opened | null) => void;

/**
 * A watch that ended or could not start. `started` says whether it had been working: then
 * events may have been missed and the caller should look at the directory again.
 */
export type WatchLost = (dir: string, reason: string, started: boolean) => void;

/** The names of files in a directory the caller wants opened at once (null: none). */
export type FileNames = (dir: string) => RegExp | null;

interface Watch {
  /** The watched directory's device and inode when the watch began. */
  id: string;
  /** When it began (ms since epoch). */
  since: number;
  /** It has delivered an event or survived an update(): an error now means a watch that was working broke. */
  started: boolean;
  /** The in-thread watcher (none when the worker watches). */
  watcher: FSWatcher | null;
}

function dirId(dir: string): string | null {
  try {
    const st = statSync(dir);
    return st.isDirectory() ? `${st.dev}:${st.ino}` : null;
  } catch {
    return null;
  }
}

function messageOf(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split("\n")[0]!;
}

/** Descriptors the worker may have opened and not yet handed over, so a burst cannot run the process out of them. */
const WORKER_IN_FLIGHT = 256;

type FromWorker =
  | { type: "event"; dir: string; event: string; name: string | null; opened: Opened | null }
  | { type: "error"; dir: string; message: string }
  | { type: "closed" };

export class DirWatchers {
  private readonly watches = new Map<string, Watch>();
  /** Directories that could not be watched, with why: tried again only when update() is told to retry. */
  private readonly failed = new Map<string, string>();
  private closed = false;
  private worker: Worker | null = null;
  private workerClosed: (() => void) | null = null;

  constructor(private readonly onEvent: WatchListener, private readonly onLost: WatchLost, private readonly fileNames: FileNames) {
    if ((globalThis as { Bun?: unknown }).Bun !== undefined && typeof Worker === "function") {
      try {
        const url = URL.createObjectURL(new Blob([WATCH_WORKER_SOURCE], { type: "application/javascript" }));
        this.worker = new Worker(url, { type: "module" });
        // Not revoked: the worker loads it after this returns (a Blob of a few KB, once per input).
        this.worker.onmessage = (e: MessageEvent<FromWorker>) => this.fromWorker(e.data);
        this.worker.onerror = () => this.withoutWorker();
        this.worker.postMessage({ type: "init", inFlight: WORKER_IN_FLIGHT });
      } catch {
        this.worker = null; // watch on this thread instead
      }
    }
  }

  /** Whether events come from `dir` now. */
  watching(dir: string): boolean {
    return this.watches.has(dir);
  }

  get size(): number {
    return this.watches.size;
  }

  /**
   * Watches exactly `dirs`, worked out from what the file system held at `since`: others are
   * closed (unless watched after `since`: they were not known then), and one whose directory
   * was replaced since its watch began is watched anew. Directories whose watch failed before
   * are tried again only with `retryFailed`. Returns the directories watched now that were not before.
   */
  update(dirs: Iterable<string>, retryFailed: boolean, since = Date.now()): string[] {
    if (this.closed) return [];
    const wanted = new Set(dirs);
    for (const [dir, w] of this.watches) {
      // A replaced directory is watched anew below and reported as added, so its entries are looked at.
      if ((!wanted.has(dir) && w.since < since) || dirId(dir) !== w.id) this.drop(dir);
      else w.started = true;
    }
    for (const dir of this.failed.keys()) if (!wanted.has(dir)) this.failed.delete(dir);
    const added: string[] = [];
    for (const dir of wanted) {
      if (this.watches.has(dir) || (!retryFailed && this.failed.has(dir))) continue;
      if (this.start(dir, false)) added.push(dir);
    }
    return added;
  }

  /**
   * Watches one more directory (until the next update() leaves it out), anew if the directory
   * there is another one than the watch's; true when it is watched now.
   */
  add(dir: string): boolean {
    if (this.closed) return false;
    const w = this.watches.get(dir);
    if (w && dirId(dir) === w.id) return true;
    if (w) this.drop(dir);
    return this.start(dir, true);
  }

  /** An event elsewhere says `dir` may be gone: a watch on a directory that is not there any more is lost. */
  check(dir: string): void {
    const w = this.watches.get(dir);
    if (w && dirId(dir) !== w.id) this.lose(dir, "directory removed or renamed");
  }

  /** Ends every watch; descriptors the worker still hands over meanwhile are closed. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const dir of [...this.watches.keys()]) this.drop(dir);
    const worker = this.worker;
    if (!worker) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 1000);
      this.workerClosed = () => {
        clearTimeout(timer);
        resolve();
      };
      worker.postMessage({ type: "close" });
    });
    worker.terminate();
    this.worker = null;
  }

  /**
   * `list`: the worker also reports every entry the directory holds once its watch is set
   * (opening the files the filter accepts), so nothing made just before the watch began is
   * missed by a caller that listed the directory a moment earlier.
   */
  private start(dir: string, list: boolean): boolean {
    const id = dirId(dir);
    if (id === null) return false; // gone since it was planned: the next plan tells where to look
    if (this.worker) {
      this.watches.set(dir, { id, since: Date.now(), started: false, watcher: null });
      this.failed.delete(dir);
      this.worker.postMessage({ type: "watch", dir, names: this.fileNames(dir)?.source ?? null, list });
      return true;
    }
    let watcher: FSWatcher;
    try {
      watcher = watch(dir, { persistent: false }, (type, name) => {
        if (this.watches.get(dir)?.watcher === watcher) this.event(dir, type, name === null || name === undefined ? null : String(name), null);
      });
    } catch (err) {
      this.fail(dir, messageOf(err));
      return false;
    }
    // Deno reports a watch that cannot start (ENOENT, ENOSPC) here, after watch() returned.
    watcher.on("error", (err) => {
      if (this.watches.get(dir)?.watcher === watcher) this.lose(dir, messageOf(err));
    });
    this.watches.set(dir, { id, since: Date.now(), started: false, watcher });
    this.failed.delete(dir);
    return true;
  }

  private event(dir: string, type: string, name: string | null, opened: Opened | null): void {
    const w = this.watches.get(dir);
    if (!w || this.closed) {
      if (opened) closeQuietly(opened.fd); // an event of a watch ended meanwhile
      return;
    }
    w.started = true;
    // An event naming the directory itself: it may have been removed or renamed.
    if (name === basename(dir) && dirId(dir) !== w.id) this.lose(dir, "directory removed or renamed");
    this.onEvent(dir, type, name, opened);
  }

  private fromWorker(m: FromWorker): void {
    if (m.type === "closed") {
      this.workerClosed?.();
      return;
    }
    if (m.type === "error") {
      if (this.watches.has(m.dir)) this.lose(m.dir, m.message);
      return;
    }
    if (m.opened) this.worker?.postMessage({ type: "taken", n: 1 });
    this.event(m.dir, m.event, m.name, m.opened);
  }

  /** The worker failed: its watches go on on this thread (events meanwhile may be missed, so each counts as lost). */
  private withoutWorker(): void {
    const worker = this.worker;
    if (!worker) return;
    this.worker = null;
    worker.terminate();
    for (const [dir, w] of [...this.watches]) {
      if (w.watcher) continue;
      this.watches.delete(dir);
      if (this.start(dir, false)) this.onLost(dir, "watch worker failed; watching on the input's thread", true);
    }
  }

  private drop(dir: string): void {
    const w = this.watches.get(dir);
    if (!w) return;
    this.watches.delete(dir);
    if (w.watcher) {
      try {
        w.watcher.close();
      } catch {
        // already closed
      }
    } else {
      this.worker?.postMessage({ type: "unwatch", dir });
    }
  }

  /** A watch ended: one that never worked counts as failed; one that did is reported and tried again at the next update(). */
  private lose(dir: string, reason: string): void {
    const w = this.watches.get(dir);
    if (!w) return;
    this.drop(dir);
    if (w.started) this.onLost(dir, reason, true);
    else this.fail(dir, reason);
  }

  /** A watch that could not start: reported once per reason. */
  private fail(dir: string, reason: string): void {
    if (this.failed.get(dir) === reason) return;
    this.failed.set(dir, reason);
    this.onLost(dir, reason, false);
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // nothing to do about a failed close
  }
}
