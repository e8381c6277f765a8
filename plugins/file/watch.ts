// Watching directories for entries that appear, change or go (inotify on Linux, through
// node:fs watch, which Bun and Deno both provide), so a new file is opened the moment it is
// created rather than at the next listing. Watching is an accelerator, never a dependency:
// a directory that cannot be watched (missing, out of inotify watches, a file system without
// events) or whose watch breaks is reported, and the caller's listing finds its files.
//
// A watch follows the directory's inode: a directory that is removed (or renamed) and made
// again under its name is not seen by the old watch. Its removal is noticed by the event
// that names the directory itself, and at every update() by comparing inodes.
import { statSync, watch } from "node:fs";
import type { FSWatcher } from "node:fs";
import { basename } from "node:path";
import { errorFirstLine } from "../../agent/errortext.ts";
import { isDeno } from "../../agent/runtime/detect.ts";

/** An entry of `dir` appeared, went or was renamed ("rename"), or was written to ("change"); name null: unknown (look at the whole directory). */
export type WatchListener = (dir: string, type: string, name: string | null) => void;

/**
 * A watch that ended or could not start. `started` says whether it had been working: then
 * events may have been missed and the caller should look at the directory again.
 */
export type WatchLost = (dir: string, reason: string, started: boolean) => void;

interface Watch {
  watcher: FSWatcher;
  /** When it began (ms since epoch). */
  since: number;
  /** The watched directory's device and inode when the watch began. */
  id: string;
  /** It has delivered an event or survived an update(): an error now means a watch that was working broke. */
  started: boolean;
}

function dirId(dir: string): string | null {
  try {
    const st = statSync(dir);
    return st.isDirectory() ? `${st.dev}:${st.ino}` : null;
  } catch {
    return null;
  }
}

/**
 * Whether events can go missing without notice. Linux inotify reports an overflowing queue
 * (an event without a name), which Bun passes on; Deno's watcher drops events of a burst
 * (thousands of files created at once) without telling.
 */
export const EVENTS_MAY_BE_LOST = isDeno();

export class DirWatchers {
  private readonly watches = new Map<string, Watch>();
  /** Directories that could not be watched, with why: tried again only when update() is told to retry. */
  private readonly failed = new Map<string, string>();
  private closed = false;

  constructor(private readonly onEvent: WatchListener, private readonly onLost: WatchLost) {}

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
      if ((!wanted.has(dir) && w.since < since) || dirId(dir) !== w.id) this.drop(dir, w);
      else w.started = true;
    }
    for (const dir of this.failed.keys()) if (!wanted.has(dir)) this.failed.delete(dir);
    const added: string[] = [];
    for (const dir of wanted) {
      if (this.watches.has(dir) || (!retryFailed && this.failed.has(dir))) continue;
      if (this.start(dir)) added.push(dir);
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
    if (w) this.drop(dir, w);
    return this.start(dir);
  }

  /** An event elsewhere says `dir` may be gone: a watch on a directory that is not there any more is lost. */
  check(dir: string): void {
    const w = this.watches.get(dir);
    if (w && dirId(dir) !== w.id) this.lose(dir, "directory removed or renamed");
  }

  close(): void {
    this.closed = true;
    for (const [dir, w] of this.watches) this.drop(dir, w);
  }

  private start(dir: string): boolean {
    const id = dirId(dir);
    if (id === null) return false; // gone since it was planned: the next plan tells where to look

    let watcher: FSWatcher;
    try {
      watcher = watch(dir, { persistent: false }, (type, name) => {
        const w = this.watches.get(dir);
        if (w?.watcher !== watcher) return; // closed meanwhile
        w.started = true;
        const entry = name === null || name === undefined ? null : String(name);
        // An event naming the directory itself: it may have been removed or renamed.
        if (entry === basename(dir) && dirId(dir) !== w.id) this.lose(dir, "directory removed or renamed");
        this.onEvent(dir, type, entry);
      });
    } catch (err) {
      this.fail(dir, errorFirstLine(err));
      return false;
    }
    // Deno reports a watch that cannot start (ENOENT, ENOSPC) here, after watch() returned.
    watcher.on("error", (err) => {
      if (this.watches.get(dir)?.watcher === watcher) this.lose(dir, errorFirstLine(err));
    });
    this.watches.set(dir, { watcher, id, started: false, since: Date.now() });
    this.failed.delete(dir);
    return true;
  }

  private drop(dir: string, w: Watch): void {
    this.watches.delete(dir);
    try {
      w.watcher.close();
    } catch {
      // already closed
    }
  }

  /** A watch ended: one that never worked counts as failed; one that did is reported and tried again at the next update(). */
  private lose(dir: string, reason: string): void {
    const w = this.watches.get(dir);
    if (!w) return;
    this.drop(dir, w);
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
