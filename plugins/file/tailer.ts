// Following a set of files named by globs. One loop serves every file (no timer per file):
// it lists the globs every glob_interval, then reads each file that grew, at most read_bytes
// per file per round (round-robin, so one busy file cannot starve the others), and sleeps
// poll_interval when nothing grew. A file that stays idle is asked for its size less and
// less often; the glob listing, which stats every path anyway, wakes it when it changes.
// Files are held open by descriptor, so a renamed or deleted file is still read to its end.
//
// Discovery does not wait for the listing: the directories the globs can match in are
// watched (watch.ts), and a file that appears there is opened inside the event that
// announced it, before a rotation can rename it away again; from then on its descriptor
// holds it whatever its name. Without events (a directory that does not exist yet, a file
// system without them, a broken watch) the listing finds new files, and a followed file
// whose path names another file at its end has that file opened at once.
// At most max_open_files are open: when more files have data, a file that is caught up (or
// has had its turn) gives its descriptor to one that waits.
//
// Copies. copytruncate copies a file and truncates it: what the input had not read yet is
// only in the copy then, so on truncation the rest is read from a copy beside it (same first
// bytes, same bytes before the offset reached) that the globs do not follow. A copy the globs
// do follow waits until its original is truncated or gone, then starts where that one ended.
//
// Delivery: lines read from several files are handed to the spool in one batch; a file's
// offset counts as taken only once its batch is in the spool, and the checkpoint (which the
// core saves once those events are durable) holds only taken offsets. Bytes of an unfinished
// line or of a multiline event still being built are never covered by a checkpoint.
import { lstatSync, readdirSync, statSync } from "node:fs";
import type { Stats } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { InputContext } from "../../agent/plugin.ts";
import { errorFirstLine, errorMessage } from "../../agent/errortext.ts";
import { expandGlobs, globMatcher, globWatchDirs, pathMatcher } from "./glob.ts";
import { sleep } from "../../agent/backoff.ts";
import { LineSplitter, toJsonEvents, toMessageEvents } from "./lines.ts";
import { MultilineJoiner } from "./multiline.ts";
import { codecFor } from "./encoding.ts";
import type { Codec } from "./encoding.ts";
import { openFilesCap, openFilesLimit } from "./fdlimit.ts";
import { FileFd } from "./handle.ts";
import {
  checkpointKey, FINGERPRINT_BYTES, fingerprintOf, headMatches, parseCheckpointKey, readHead, readHeadSync,
} from "./identity.ts";
import type { Fingerprint } from "./identity.ts";
import type { FileCheckpoint, FileInputState } from "./state.ts";
import { DirWatchers, EVENTS_MAY_BE_LOST } from "./watch.ts";
import { COPY_WINDOW_MS, mayBeCopyOf, mayHaveBeenEmptied } from "./emptied.ts";
import type { FileOptions } from "./options.ts";

export type { FileCheckpoint, FileInputState };

/** A file we stopped following (or knew before a restart), kept to recognise a copy of it. */
interface Known {
  fp: Fingerprint;
  offset: number;
  /** The offset is inside a line cut for length: resume exactly there. */
  cut: boolean;
  dev: number;
  ino: number;
  path: string;
  /** Its first bytes (up to SAMPLE_BYTES), to suspect a short new file of being a copy of it; empty if unknown. */
  sample: Uint8Array;
  /** When to forget it (ms since epoch). */
  until: number;
}

/** A file opened but not followed yet. */
interface Candidate {
  path: string;
  fh: FileFd;
  st: { dev: number; ino: number; size: number; mtimeMs: number };
  /** Opened because a watch event announced it: it appeared after the input started. */
  fromWatch: boolean;
  /** Renamed out of the globs' reach before it was followed: read to its end, then closed. */
  renamedOut?: boolean;
  /** Opened by a watch event: its first bytes and largest size seen since, so a truncation before it is followed is noticed. */
  early?: { head: Uint8Array; size: number; truncated: boolean };
  /** It was truncated before it was followed: `head` and `st.size` are of what it held then. */
  truncatedEarly?: boolean;
  head?: Uint8Array;
  fp?: Fingerprint;
  start?: number;
  cut?: boolean;
  /** It may be a copy of a file still being read, or one still being made: not read until that is clear. */
  probation?: boolean;
}

/** How long a file we stopped following is remembered, to recognise a copy made by copytruncate. */
const REMEMBER_MS = 10 * 60_000;
const REMEMBER_MAX = 1000;
/** start_at = "end" looks this far back for the last complete line, so a line being written is read whole. */
const TAIL_LOOKBACK = 64 * 1024;
/** Wait between two checks of an idle file in a watched directory, when the listing does not wake it. */
const WATCHED_IDLE_CHECK_MS = 5000;
/** Longest wait between two checks of an idle file (glob_interval, when shorter, bounds it too). */
const IDLE_CHECK_MAX_MS = 1000;
/** While files wait for a descriptor, an open file gives its own up after this long even if still busy. */
const OPEN_TURN_MS = 1000;
/** First bytes of each file kept to tell whether a new, still short file may be a copy of it. */
const SAMPLE_BYTES = 64;
/** Last bytes read of each file kept to make sure a copy holds the same bytes up to where reading stopped. */
const TAIL_BYTES = 32;
const NO_BYTES: Uint8Array = new Uint8Array(0);
/** What separates a rotated file's suffix from its name (app.log.1, app.log-20261202, app.log_1). */
const ROTATION_SEPARATORS = ".-_";
/** Rotated files compressed: not text to read. */
const COMPRESSED = /\.(gz|bz2|xz|zst|lz4|lzma|zip|Z)$/;

/** A file-system failure while reading one file: it affects that file only. */
class ReadFailure extends Error {}

async function fsop<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    throw new ReadFailure(errorMessage(err));
  }
}

const idOf = (dev: number, ino: number) => `${dev}:${ino}`;

/** Whether the shorter of `a` and `b` is where the longer one starts. */
function prefixEqual(a: Uint8Array, b: Uint8Array): boolean {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false;
  return true;
}

function sampleOf(head: Uint8Array): Uint8Array {
  return head.slice(0, SAMPLE_BYTES);
}

/** The last TAIL_BYTES of `before` followed by `chunk`. */
function tailAfter(before: Uint8Array, chunk: Uint8Array): Uint8Array {
  if (chunk.length >= TAIL_BYTES) return chunk.slice(chunk.length - TAIL_BYTES);
  const keep = Math.min(before.length, TAIL_BYTES - chunk.length);
  const out = new Uint8Array(keep + chunk.length);
  out.set(before.subarray(before.length - keep), 0);
  out.set(chunk, keep);
  return out;
}

function errorCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

class Tracked {
  fh: FileFd | null;
  path: string;
  readonly dev: number;
  readonly ino: number;
  fp: Fingerprint;
  /** Its first bytes (up to SAMPLE_BYTES). */
  sample: Uint8Array;
  /** The last bytes read (up to TAIL_BYTES, ending at readPos). */
  tail: Uint8Array = NO_BYTES;
  /** Next byte to read. */
  readPos: number;
  /** End of the last event the spool has taken: where a restart resumes. */
  committed: number;
  /** `committed` is inside a line cut for length. */
  committedCut = false;
  /** Size at the last fstat; reads go up to it before stat is asked again. */
  knownSize: number;
  mtimeMs: number;
  nlink = 1;
  /** Size and mtime when the fingerprint was last checked. */
  verifiedSize = -1;
  verifiedMtime = -1;
  lastActivity: number;
  /** No glob matches it any more (renamed away or deleted): read to its end, then close. */
  orphaned = false;
  /** A watch event said it was written to: its size is asked before reading on (it may have been truncated). */
  changed = false;
  /** A watch event found it shorter than before, or no longer starting with its first bytes: it was truncated. */
  shrunk = false;
  /** The largest size seen since it was last read from its start. */
  sizeSeen = 0;
  /**
   * It may be a copy of a file still being read (not read until that one is truncated or
   * gone), or a copy still being made (its first bytes are those of a known file, and fewer
   * than a fingerprint's worth): not in the checkpoint, not read while this holds.
   */
  probation: boolean;
  /** On probation with fewer bytes than a fingerprint: its size and since when it has had it. */
  probationSize = -1;
  probationSince = 0;
  /** When it was seen deleted (ms since epoch); 0 while it is not. */
  removedAt = 0;
  /** Its size when it was seen deleted: what was written before, read even after close_removed_after. */
  removedSize = 0;
  /** An idle file is not asked for its size again before this (ms since epoch). */
  nextCheck = 0;
  /** The wait before the next check of an idle file; doubles while it stays idle. */
  backoff: number;
  /** When its descriptor was opened. */
  openedAt: number;
  /** Closed, changed since, and waiting for a descriptor since this time (ms since epoch); 0 if not. */
  waitingSince = 0;
  /** Which file its path named at the last look ("" = none): a change means the path was rotated. */
  pathSeen: string;
  /** Its path is not looked at again before this (ms since epoch); 0 once it has grown. */
  nextPathCheck = 0;
  readonly splitter: LineSplitter;
  readonly joiner: MultilineJoiner | null;

  constructor(fh: FileFd, path: string, st: { dev: number; ino: number; size: number; mtimeMs: number },
    head: Uint8Array, start: number, now: number, backoff: number, splitter: LineSplitter, joiner: MultilineJoiner | null,
    probation: boolean) {
    this.fh = fh;
    this.path = path;
    this.dev = st.dev;
    this.ino = st.ino;
    this.fp = fingerprintOf(head);
    this.sample = sampleOf(head);
    this.readPos = start;
    this.committed = start;
    this.knownSize = st.size;
    this.sizeSeen = st.size;
    this.mtimeMs = st.mtimeMs;
    this.lastActivity = now;
    this.openedAt = now;
    this.backoff = backoff;
    this.splitter = splitter;
    this.joiner = joiner;
    this.pathSeen = idOf(st.dev, st.ino);
    this.probation = probation;
  }

  get id(): string {
    return idOf(this.dev, this.ino);
  }

  /** Where the bytes not yet handed out start: an event being built, else the unfinished last line. */
  get offset(): number {
    const held = this.joiner ? this.joiner.heldFrom : -1;
    return held >= 0 ? held : this.readPos - this.splitter.pendingBytes;
  }

  /** `offset` is inside a line cut for length (an event being built starts at a line). */
  get offsetInCutLine(): boolean {
    return (this.joiner === null || this.joiner.heldFrom < 0) && this.splitter.inCutLine;
  }
}

/** The saved state (already checked against the plugin's state schema) as files to recognise. */
export function parseState(saved: FileInputState | undefined): Known[] {
  const out: Known[] = [];
  for (const [key, v] of Object.entries(saved?.files ?? {})) {
    const fp = parseCheckpointKey(key);
    if (!fp) continue; // the schema admits only keys that parse
    out.push({ fp, offset: v.offset, cut: v.cut === true, dev: v.dev, ino: v.ino, path: v.path, sample: NO_BYTES, until: 0 });
  }
  return out;
}

export class FileTailer {
  private readonly files = new Map<string, Tracked>();
  /** The followed file each path names, as last seen. */
  private readonly byPath = new Map<string, Tracked>();
  /**
   * Entries of the loaded checkpoint not yet matched to a file: kept (and saved again) until
   * every file listed at startup has been opened, then dropped.
   */
  private saved: Known[] = [];
  /** Paths of the loaded checkpoint. */
  private savedPaths = new Set<string>();
  /** Paths the globs listed when the input started; null once all of them were opened. */
  private startupPaths: Set<string> | null = null;
  private firstScan = true;
  /** Files no longer followed, remembered for a while to recognise copies of them. */
  private remembered: Known[] = [];
  /** Paths listed by the globs but not followed yet for want of a descriptor, with when they were first listed. */
  private unopened = new Map<string, number>();
  /** Files a watch event announced, opened in the event and waiting to be followed, by device:inode. */
  private readonly pending = new Map<string, Candidate>();
  /** Paths among `unopened` of files renamed out of the globs' reach before they were opened. */
  private readonly renamedOutPaths = new Set<string>();
  /** Per watched directory: the matched path its last event named, if that event was a rename. */
  private readonly lastRename = new Map<string, string>();
  /** Files (followed or pending, by device:inode) emptied before any of their bytes were read, with when: a copy of them may appear. */
  private readonly emptied = new Map<string, { at: number; st: Stats; path: string }>();
  private readonly startedAt = Date.now();
  /** Files waiting for a descriptor (unopened paths and changed closed files). */
  private demand = 0;
  private openFiles = 0;
  private maxOpen: number;
  private readonly buf: Uint8Array;
  private readonly codec: Codec;
  private readonly startPattern: RegExp | null;
  private readonly idleCheckMax: number;
  /** The glob listing comes often enough to notice a change of an idle file by itself. */
  private readonly scanWakes: boolean;
  private readonly excluded: (path: string) => boolean;
  /** Which paths the globs match, and which directories can hold such paths. */
  private readonly globs: ReturnType<typeof globMatcher>;
  private batch: string[] = [];
  private batchBytes = 0;
  /** Per file in the batch: its offset once the batch is taken, and whether that offset is inside a cut line. */
  private batchOffsets: Array<[Tracked, number, boolean]> = [];
  private checkpointing: Promise<void> | null = null;
  private checkpointDirty = false;
  /** The last state handed to ctx.checkpoint, as JSON, so an unchanged state is not saved again on stop. */
  private lastCheckpoint = "";
  /** Paths that failed to open, with the error, so each failure is reported once. */
  private readonly failedPaths = new Map<string, string>();
  private splitLinesBase = 0;
  private splitEventsBase = 0;
  /** A path was seen naming a new file: list the globs before glob_interval is up. */
  private scanSoon = false;
  /** When the globs were last listed (ms since epoch). */
  private lastScanAt = 0;
  private readonly watchers: DirWatchers;
  /** A directory appeared (or a watch was lost) where the globs reach: work out where to watch again. */
  private replanDue = false;
  /** Ends the loop's current sleep early (a watch event brought work). */
  private wakeLoop: (() => void) | null = null;

  constructor(private readonly opts: FileOptions, private readonly ctx: InputContext<FileInputState>) {
    this.buf = new Uint8Array(opts.read_bytes);
    this.codec = codecFor(opts.encoding);
    this.startPattern = opts.multiline ? new RegExp(opts.multiline.start_pattern) : null;
    this.maxOpen = opts.max_open_files;
    this.idleCheckMax = Math.max(opts.poll_interval, Math.min(opts.glob_interval, IDLE_CHECK_MAX_MS));
    this.scanWakes = opts.glob_interval <= this.idleCheckMax;
    const excludes = opts.exclude.map((p) => pathMatcher(p));
    this.excluded = (path) => excludes.some((m) => m(path));
    this.globs = globMatcher(opts.paths);
    this.watchers = new DirWatchers(
      (dir, type, name) => this.onWatchEvent(dir, type, name),
      (dir, reason, started) => this.onWatchLost(dir, reason, started),
    );
  }

  async run(): Promise<void> {
    const signal = this.ctx.signal;
    this.saved = parseState(await this.ctx.loadState());
    this.savedPaths = new Set(this.saved.map((k) => k.path));
    const limit = await openFilesLimit();
    this.maxOpen = openFilesCap(this.opts.max_open_files, limit);
    if (this.maxOpen < this.opts.max_open_files) {
      this.ctx.log.info("max_open_files lowered to half the process's open files limit", { max_open_files: this.maxOpen, limit });
    }
    let nextScan = 0;
    try {
      // Watching starts before the first listing, so nothing created meanwhile goes unseen.
      await this.replan(false, true);
      while (!signal.aborted) {
        const now = Date.now();
        if (this.replanDue) await this.replan(true, false);
        if (now >= nextScan || (this.scanSoon && now >= this.earlyScanAt)) {
          this.scanSoon = false;
          this.lastScanAt = now;
          await this.scan();
          nextScan = Date.now() + this.opts.glob_interval;
        }
        let progressed = false;
        if (this.pending.size > 0 && (await this.adoptPending(Date.now())) > 0) progressed = true;
        if (await this.readRound()) progressed = true;
        if (this.demand > 0 && !signal.aborted && (await this.fillSlots(Date.now()))) progressed = true;
        // One pass ends once every file is read to the end it had: nothing moved in a whole round.
        // An event still being built (multiline) is complete at that end.
        if (this.ctx.runOnce && !progressed && this.pending.size === 0 && this.demand === 0) {
          for (const f of this.files.values()) {
            if (f.joiner === null || !f.joiner.holding) continue;
            f.joiner.flush(this.batch);
            this.noteOffset(f);
          }
          await this.flushBatch();
          break;
        }
        if (!progressed && !signal.aborted && this.pending.size === 0 && !this.replanDue) {
          const wakeAt = this.scanSoon ? Math.min(nextScan, this.earlyScanAt) : nextScan;
          await this.pause(Math.max(1, Math.min(this.opts.poll_interval, wakeAt - Date.now())));
        }
      }
    } finally {
      this.watchers.close();
      for (const c of this.pending.values()) c.fh.closeSync();
      this.pending.clear();
      await this.shutdown();
    }
  }

  /** Sleeps `ms`, or less when stopped or woken by a watch event. */
  private async pause(ms: number): Promise<void> {
    const wake = new AbortController();
    const stop = () => wake.abort();
    this.wakeLoop = stop;
    this.ctx.signal.addEventListener("abort", stop, { once: true });
    try {
      await sleep(ms, wake.signal);
    } finally {
      this.ctx.signal.removeEventListener("abort", stop);
      this.wakeLoop = null;
    }
  }

  private wake(f: Tracked): void {
    f.nextCheck = 0;
    f.backoff = this.opts.poll_interval;
  }

  /** Descriptors held: followed files and files opened by watch events that wait to be followed. */
  private get fdsInUse(): number {
    return this.openFiles + this.pending.size;
  }

  // ---- watching ----------------------------------------------------------------------------

  /**
   * Works out which directories the globs can match in and watches them. `listNew`: the files
   * in directories watched now for the first time are looked at at once (a directory made
   * since the last listing may already hold files, and they may be renamed away soon).
   */
  private async replan(listNew: boolean, retryFailed: boolean): Promise<void> {
    this.replanDue = false;
    const startedAt = Date.now();
    let dirs: Set<string>;
    try {
      dirs = await globWatchDirs(this.opts.paths);
    } catch (err) {
      this.ctx.log.warn("cannot work out which directories to watch; relying on the listing", { error: errorFirstLine(err) });
      return;
    }
    const added = this.watchers.update(dirs, retryFailed, startedAt);
    if (listNew) for (const dir of added) this.listDir(dir);
  }

  /** Looks at every entry of a directory just watched: files the globs match are opened. */
  private listDir(dir: string): void {
    if (!this.globs.dir(dir).files) return;
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of names) this.appeared(join(dir, name));
  }

  /**
   * A directory appeared where the globs reach (inside a watch event): it is watched at once
   * and its entries looked at, so that files made in it right away are not missed; then the
   * watches are worked out again.
   */
  private dirAppeared(dir: string): void {
    const m = this.globs.dir(dir);
    if (!m.files && !m.below) return;
    this.replanDue = true;
    this.wakeLoop?.();
    if (!this.watchers.add(dir)) return;
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    // In a directory made since the input started, everything is new: a rotated name there
    // (app.log.1) is of a file renamed out of the globs before the directory's watch began.
    const madeSinceStart = m.files && this.madeSinceStart(dir);
    for (const e of entries) {
      const path = join(dir, e.name);
      if (e.isDirectory()) this.dirAppeared(path);
      else if (m.files && this.globs.file(path)) this.appeared(path);
      else if (madeSinceStart && e.isFile() && this.rotatedName(path)) this.renamedOut(path, null);
    }
  }

  private madeSinceStart(dir: string): boolean {
    try {
      const born = statSync(dir).birthtimeMs;
      return born > 0 && born >= this.startedAt;
    } catch {
      return false;
    }
  }

  /** Whether `path` is a name the globs match with a rotation's suffix (app.log.1, app.log-20261202), not compressed. */
  private rotatedName(path: string): boolean {
    const dir = dirname(path);
    const name = path.slice(dir.length + 1);
    if (COMPRESSED.test(name)) return false;
    for (let i = name.length - 1; i > 0; i--) {
      if (ROTATION_SEPARATORS.includes(name[i]!) && this.globs.file(join(dir, name.slice(0, i)))) return !this.excluded(join(dir, name.slice(0, i)));
    }
    return false;
  }

  private onWatchLost(dir: string, reason: string, started: boolean): void {
    if (started) {
      // Events may have been missed: look at the directory again, and at its files.
      this.ctx.log.info("directory watch ended; watching it again", { dir, reason });
      this.replanDue = true;
      this.scanSoon = true;
      this.wakeLoop?.();
    } else {
      this.ctx.log.warn("cannot watch directory; new files there are found by the listing every glob_interval", { dir, error: reason });
    }
  }

  /** Runs inside a watch event: only synchronous work, so that a new file is open before the event returns. */
  private onWatchEvent(dir: string, type: string, name: string | null): void {
    if (this.ctx.signal.aborted) return;
    if (name === null) {
      // An event without a name (e.g. the kernel's queue overflowed): the listing tells what changed.
      this.scanSoon = true;
      this.wakeLoop?.();
      return;
    }
    const path = join(dir, name);
    // A rename within a directory is told as two events in a row: the old name, then the new.
    const renamedFrom = this.lastRename.get(dir);
    this.lastRename.delete(dir);
    if (type === "change") {
      if (this.byPath.has(path) || this.globs.file(path)) this.written(path);
      return;
    }
    if (this.byPath.has(path) || this.globs.file(path)) {
      this.lastRename.set(dir, path);
      this.appeared(path);
      // Where events of a burst can be dropped unseen, a file that appears brings a listing
      // soon (one per poll_interval however many appear) to find its silent neighbours.
      if (EVENTS_MAY_BE_LOST && !this.scanSoon) {
        this.scanSoon = true;
        this.wakeLoop?.();
      }
    } else {
      const m = this.globs.dir(path);
      if (m.files || m.below) this.appeared(path);
      else if (renamedFrom !== undefined) this.renamedOut(path, renamedFrom);
      else if (this.emptied.size > 0) this.copyAppeared(path);
    }
  }

  /** A file may have been emptied before any of it was read (emptied.ts): a copy of it may come. `written`: a change event told. */
  private noteEmptied(id: string, st: Stats, path: string, written: boolean): void {
    if (!this.emptied.has(id) && mayHaveBeenEmptied(st, written)) this.emptied.set(id, { at: Date.now(), st, path });
  }

  /** A file the globs do not match appeared: if it is the copy of a file emptied before it was read, it is read as that file's content. */
  private copyAppeared(path: string): void {
    const now = Date.now();
    let st;
    try {
      st = lstatSync(path);
    } catch {
      return;
    }
    if (!st.isFile() || this.files.has(idOf(st.dev, st.ino)) || this.pending.has(idOf(st.dev, st.ino))) return;
    for (const [id, { at, st: orig, path: origPath }] of this.emptied) {
      if (now - at > COPY_WINDOW_MS) {
        this.emptied.delete(id);
        continue;
      }
      // `orig` is as the file was when seen emptied: a copy written later is not of what it held.
      if (dirname(origPath) !== dirname(path) || !mayBeCopyOf(path, st, origPath, orig)) continue;
      this.emptied.delete(id);
      this.ctx.log.info("file was emptied before any of it was read; reading its copy", { path: origPath, copy: path });
      this.openAnnounced(path, true);
      return;
    }
  }

  /**
   * An entry the globs do not match turned up right after one they match went: a file renamed
   * out of their reach. One that was created, written and renamed before its first event was
   * handled has never been opened, and its lines are only here: it is read to its end.
   * `from`: the name it had, when an event told (null: found in a directory made since the start).
   */
  private renamedOut(path: string, from: string | null): void {
    let st;
    try {
      st = lstatSync(path);
    } catch {
      return;
    }
    if (!st.isFile() || (from !== null && this.excluded(from))) return;
    const id = idOf(st.dev, st.ino);
    // A file read before (and forgotten since) is recognised by its content when it is adopted.
    if (this.files.has(id)) return;
    const p = this.pending.get(id);
    if (p) {
      p.path = path;
      p.renamedOut = true;
      return;
    }
    this.openAnnounced(path, true);
  }

  /** A watch event says `path` was written to. */
  private written(path: string): void {
    const f = this.byPath.get(path);
    if (!f) {
      // Not followed: a file that could not be opened before, or one whose creation was not seen.
      if (!this.firstScan && !this.unopened.has(path)) this.appeared(path, true);
      return;
    }
    f.changed = true;
    this.wake(f);
    if (f.fh !== null) this.checkSize(f);
    // Whether a file on probation is a copy is best decided as soon as it has bytes to tell.
    if (f.probation) this.wakeLoop?.();
    if (f.fh === null && f.waitingSince === 0) {
      f.waitingSince = Date.now();
      this.demand++;
      this.wakeLoop?.();
    }
  }

  /**
   * Inside a watch event for a followed file: notices a truncation the moment it happens.
   * The loop may not have read the file at all yet (copytruncate right after a write), and
   * a file truncated before anything was read from it looks, later, like one that was never
   * written to; what it held is then only in its copy, found by the first bytes kept here.
   */
  private checkSize(f: Tracked): void {
    let st: Stats;
    try {
      st = f.fh!.statSync();
    } catch {
      return; // the next read reports it
    }
    const size = st.size;
    if (size === 0 && f.fp.len === 0 && f.readPos === 0) this.noteEmptied(f.id, st, f.path, true);
    if (size < f.sizeSeen) {
      f.shrunk = true;
      this.wakeLoop?.();
      return;
    }
    f.sizeSeen = size;
    if (f.fp.len >= FINGERPRINT_BYTES || size <= f.fp.len) return;
    const head = new Uint8Array(FINGERPRINT_BYTES);
    let got = 0;
    try {
      got = f.fh!.readSync(head, 0, head.length, 0);
    } catch {
      return;
    }
    const now = head.subarray(0, got);
    if (!headMatches(now, f.fp)) {
      f.shrunk = true; // truncated and written again since the last look
      this.wakeLoop?.();
    } else if (now.length > f.fp.len) {
      f.fp = fingerprintOf(now);
      if (f.sample.length < SAMPLE_BYTES) f.sample = sampleOf(now);
    }
  }

  /**
   * Something appeared at, or went from, `path`. A regular file the globs match is opened at
   * once (synchronously: it may be renamed away in a moment, and the descriptor keeps it); a
   * directory where the globs reach is watched at once.
   */
  private appeared(path: string, written = false): void {
    const now = Date.now();
    let st;
    try {
      st = lstatSync(path);
      if (st.isDirectory()) return this.dirAppeared(path);
      if (st.isSymbolicLink()) st = statSync(path);
    } catch (err) {
      const code = errorCode(err);
      if (code === "ENOENT" || code === "ENOTDIR") {
        const f = this.byPath.get(path);
        if (f) this.lostPath(f, now);
        this.watchers.check(path);
      }
      return;
    }
    if (st.isDirectory()) {
      // A symbolic link to a directory: the plan's walk decides whether the globs go through it.
      this.replanDue = true;
      this.wakeLoop?.();
      return;
    }
    // Only regular files are opened: opening a FIFO would block.
    if (!st.isFile() || !this.globs.file(path) || this.excluded(path)) return;
    const id = idOf(st.dev, st.ino);
    const before = this.byPath.get(path);
    if (before && before.id !== id) this.lostPath(before, now);
    const f = this.files.get(id);
    if (f) {
      this.movedTo(f, path);
      return;
    }
    const p = this.pending.get(id);
    if (p) {
      p.path = path;
      p.renamedOut = false;
      this.lookAgain(p, written);
      return;
    }
    this.openAnnounced(path, false);
  }

  /**
   * Opens a file a watch event announced, at once (it may be renamed away in a moment, and the
   * descriptor keeps it), to be followed by the loop. `renamedOut`: its path is out of the
   * globs' reach already, so it is read to its end and closed.
   */
  private openAnnounced(path: string, renamedOut: boolean): void {
    const now = Date.now();
    if (this.fdsInUse >= this.maxOpen) {
      if (renamedOut) this.renamedOutPaths.add(path);
      if (!this.unopened.has(path)) {
        this.unopened.set(path, now);
        this.demand++;
      }
      this.wakeLoop?.();
      return;
    }
    let fh: FileFd;
    try {
      fh = FileFd.openSync(path);
    } catch (err) {
      if (errorCode(err) !== "ENOENT") this.openFailed(path, err);
      return;
    }
    let opened;
    try {
      opened = fh.statSync();
    } catch (err) {
      fh.closeSync();
      this.openFailed(path, err);
      return;
    }
    const openedId = idOf(opened.dev, opened.ino);
    if (!opened.isFile() || this.files.has(openedId) || this.pending.has(openedId)) {
      fh.closeSync(); // replaced between the two looks: the next event or listing sorts it out
      return;
    }
    let head: Uint8Array;
    try {
      head = readHeadSync(fh);
    } catch (err) {
      fh.closeSync();
      this.openFailed(path, err);
      return;
    }
    if (head.length === 0 && !renamedOut) this.noteEmptied(openedId, opened, path, false);
    this.pending.set(openedId, {
      path, fh, fromWatch: true, renamedOut, early: { head, size: opened.size, truncated: false },
      st: { dev: opened.dev, ino: opened.ino, size: opened.size, mtimeMs: opened.mtimeMs },
    });
    this.wakeLoop?.();
  }

  /**
   * Inside a watch event for a file opened but not followed yet: as checkSize does for a
   * followed one, notices a truncation, and keeps the first bytes it had.
   */
  private lookAgain(c: Candidate, written: boolean): void {
    const early = c.early;
    if (!early || early.truncated) return;
    let st: Stats;
    try {
      st = c.fh.statSync();
    } catch {
      return;
    }
    if (st.size < early.size) {
      early.truncated = early.head.length > 0;
      if (early.head.length === 0) this.noteEmptied(idOf(st.dev, st.ino), st, c.path, written);
      return;
    }
    early.size = st.size;
    if (early.head.length === 0 && st.size === 0) this.noteEmptied(idOf(st.dev, st.ino), st, c.path, written);
    if (early.head.length >= FINGERPRINT_BYTES || st.size <= early.head.length) return;
    let head: Uint8Array;
    try {
      head = readHeadSync(c.fh);
    } catch {
      return;
    }
    if (prefixEqual(early.head, head)) early.head = head;
    else early.truncated = true; // truncated and written again since
  }

  /** A followed file turned up at `path` (renamed within the globs). */
  private movedTo(f: Tracked, path: string): void {
    if (f.path !== path) {
      this.ctx.log.info("file renamed", { from: f.path, to: path });
      this.setPath(f, path);
      this.checkpointSoon();
    }
    f.orphaned = false;
    f.removedAt = 0;
  }

  private setPath(f: Tracked, path: string): void {
    if (this.byPath.get(f.path) === f) this.byPath.delete(f.path);
    f.path = path;
    f.pathSeen = f.id;
    this.byPath.set(path, f);
  }

  /** `f`'s path no longer names it: renamed away or deleted. An open file is read to its end. */
  private lostPath(f: Tracked, now: number): void {
    if (this.byPath.get(f.path) === f) this.byPath.delete(f.path);
    if (f.orphaned || f.fh === null) return; // a closed one: the listing forgets it
    f.orphaned = true;
    f.lastActivity = now;
    this.wake(f);
    this.ctx.log.info("file renamed away or deleted; reading it to its end", { path: f.path });
  }

  // ---- discovery -------------------------------------------------------------------------

  /** The earliest time an early listing may run: rotations in quick succession cost one listing per poll_interval. */
  private get earlyScanAt(): number {
    return this.lastScanAt + this.opts.poll_interval;
  }

  /**
   * Looks whether the path of `f` (which has no new data) now names another file: rotation
   * by rename+create, for directories whose events did not tell. The new file is opened at
   * once, before it can be renamed out of the globs' reach, and (unless the directory is
   * watched) an early listing tells where `f` went. Only a change is acted on, so a path
   * that stays gone or names a file that cannot be opened costs a stat, not a listing.
   */
  private async checkPath(f: Tracked, now: number): Promise<void> {
    if (now < f.nextPathCheck) return;
    f.nextPathCheck = now + this.opts.poll_interval;
    let id = "";
    try {
      const st = await stat(f.path);
      id = idOf(st.dev, st.ino);
    } catch {
      // gone (renamed, not yet created again): the listing finds out where `f` went
    }
    if (id === f.pathSeen) return;
    f.pathSeen = id;
    if (id === "" ? f.orphaned : this.files.has(id) || this.pending.has(id)) return;
    if (id !== "" && !this.unopened.has(f.path)) {
      // The path came from the globs' listing, so it is still one of theirs.
      this.unopened.set(f.path, now);
      this.demand++;
    }
    if (this.watchers.watching(dirname(f.path))) {
      if (id !== "") this.lostPath(f, now);
      return;
    }
    this.ctx.log.debug("path names another file now; listing the globs early", { path: f.path });
    this.scanSoon = true;
  }

  private async scan(): Promise<void> {
    const startedAt = Date.now();
    await this.replan(false, true);
    if (this.pending.size > 0) await this.adoptPending(Date.now());
    const now = Date.now();
    const paths = await expandGlobs(this.opts.paths, this.opts.exclude);
    if (this.firstScan) {
      this.firstScan = false;
      this.startupPaths = new Set(paths);
    }
    const seen = new Set<string>();
    const fresh: string[] = [];
    for (const path of paths) {
      let st;
      try {
        st = await stat(path);
      } catch {
        continue; // gone since the glob listed it
      }
      const id = idOf(st.dev, st.ino);
      if (seen.has(id)) continue; // another name (hard link, symlink) of a file already seen
      seen.add(id);
      const f = this.files.get(id);
      if (!f) {
        if (!this.pending.has(id)) fresh.push(path);
        continue;
      }
      this.movedTo(f, path);
      if (f.fh === null) {
        if ((st.size !== f.readPos || st.mtimeMs !== f.mtimeMs) && f.waitingSince === 0) f.waitingSince = now;
      } else if (st.size !== f.verifiedSize || st.mtimeMs !== f.verifiedMtime) {
        await this.verify(f, st.size, st.mtimeMs);
        this.wake(f);
      }
    }
    const gone: Tracked[] = [];
    for (const [id, f] of this.files) {
      if (seen.has(id) || f.orphaned) continue;
      if (f.fh === null) {
        // Closed and gone: what it held back will never be finished.
        this.flushHeld(f);
        this.noteEnd(f);
        gone.push(f);
      } else {
        this.lostPath(f, now);
        try {
          const st = await f.fh.stat();
          f.nlink = st.nlink;
          if (st.nlink === 0) this.removed(f, st.size, now);
        } catch {
          // the next read reports it
        }
      }
    }
    await this.flushBatch();
    for (const f of gone) this.forget(f, now);
    const unopened = new Map<string, number>();
    for (const path of fresh) unopened.set(path, this.unopened.get(path) ?? now);
    // Watch events go on while the listing runs: what they queued meanwhile is not in it.
    for (const [path, since] of this.unopened) if (since >= startedAt && !unopened.has(path)) unopened.set(path, since);
    for (const path of this.renamedOutPaths) {
      if (this.unopened.has(path)) unopened.set(path, this.unopened.get(path)!);
      else this.renamedOutPaths.delete(path);
    }
    this.unopened = unopened;
    await this.fillSlots(now);
    this.remembered = this.remembered.filter((k) => k.until > now).slice(-REMEMBER_MAX);
    for (const [id, e] of this.emptied) if (now - e.at > COPY_WINDOW_MS) this.emptied.delete(id);
    this.updateDetail();
  }

  /**
   * Gives free descriptors to files waiting for one, longest waiting first: paths not yet
   * followed, and closed files that changed. True when it opened any.
   */
  private async fillSlots(now: number): Promise<boolean> {
    let room = this.maxOpen - this.fdsInUse;
    let opened = false;
    if (room > 0) {
      const queue: Array<[number, Tracked | string]> = [];
      for (const f of this.files.values()) if (f.fh === null && f.waitingSince > 0) queue.push([f.waitingSince, f]);
      for (const [path, since] of this.unopened) queue.push([since, path]);
      queue.sort((a, b) => a[0] - b[0]);
      const toAdopt: string[] = [];
      for (const [, item] of queue) {
        if (room <= 0 || this.ctx.signal.aborted) break;
        room--;
        if (typeof item === "string") {
          toAdopt.push(item);
          this.unopened.delete(item);
        } else {
          item.waitingSince = 0;
          await this.reopen(item, now);
          if (item.fh) opened = true;
        }
      }
      if (toAdopt.length > 0 && (await this.adopt(toAdopt, now)) > 0) opened = true;
    }
    let waiting = this.unopened.size;
    for (const f of this.files.values()) if (f.fh === null && f.waitingSince > 0) waiting++;
    this.demand = waiting;
    if (this.startupPaths && ![...this.unopened.keys()].some((p) => this.startupPaths!.has(p))) this.endStartup(now);
    return opened;
  }

  /** Every file there at startup is followed: checkpoint entries still unmatched are of files that are gone. */
  private endStartup(now: number): void {
    for (const k of this.saved) if (k.fp.len === FINGERPRINT_BYTES) this.remembered.push({ ...k, until: now + REMEMBER_MS });
    if (this.saved.length > 0) this.checkpointSoon();
    this.saved = [];
    this.startupPaths = null;
  }

  /** Follows the files watch events opened. */
  private adoptPending(now: number): Promise<number> {
    const found = [...this.pending.values()];
    this.pending.clear();
    this.openFiles += found.length; // still held: adoptCandidates counts them out as it closes or follows them
    return this.adoptCandidates(found, now);
  }

  /** Opens newly listed paths and follows them. The caller passes no more paths than there are free descriptors. */
  private async adopt(paths: string[], now: number): Promise<number> {
    const found: Candidate[] = [];
    for (const path of paths) {
      let fh: FileFd;
      try {
        fh = await FileFd.open(path);
      } catch (err) {
        this.openFailed(path, err);
        continue;
      }
      this.openFiles++;
      try {
        const st = await fh.stat();
        if (!st.isFile()) {
          await this.closeCandidate({ path, fh, fromWatch: false, st });
          continue;
        }
        found.push({ path, fh, fromWatch: false, st, renamedOut: this.renamedOutPaths.delete(path) });
      } catch (err) {
        await this.closeCandidate({ path, fh, fromWatch: false, st: { dev: 0, ino: 0, size: 0, mtimeMs: 0 } });
        this.openFailed(path, err);
      }
    }
    return this.adoptCandidates(found, now);
  }

  private async closeCandidate(c: Candidate): Promise<void> {
    this.openFiles--;
    await c.fh.close();
  }

  /**
   * Starts following opened files (each counted in openFiles): resumed from the checkpoint,
   * as a copy of a known file, or new. Returns how many it follows.
   */
  private async adoptCandidates(candidates: Candidate[], now: number): Promise<number> {
    const found: Candidate[] = [];
    const foundIds = new Set<string>();
    for (const c of candidates) {
      const id = idOf(c.st.dev, c.st.ino);
      const f = this.files.get(id);
      if (f || foundIds.has(id)) {
        await this.closeCandidate(c);
        if (f && c.fromWatch && !c.renamedOut) this.movedTo(f, c.path);
        continue;
      }
      try {
        if (c.fromWatch) {
          const st = await c.fh.stat();
          c.st = { dev: st.dev, ino: st.ino, size: st.size, mtimeMs: st.mtimeMs };
        }
        c.head = await readHead(c.fh);
        const early = c.early;
        const stillHolds = early && c.head.length >= early.head.length && prefixEqual(early.head, c.head);
        if (early && early.head.length > 0 && (early.truncated || c.st.size < early.size || !stillHolds)) {
          // Truncated before it was followed: what it held is told by the bytes seen then, and
          // it is followed as that content, found truncated at once (its rest read from a copy).
          c.head = early.head;
          c.st.size = early.size;
          c.truncatedEarly = true;
        }
        c.fp = fingerprintOf(c.head);
        found.push(c);
        foundIds.add(idOf(c.st.dev, c.st.ino));
        this.failedPaths.delete(c.path);
      } catch (err) {
        await this.closeCandidate(c);
        this.openFailed(c.path, err);
      }
    }

    // The same file as before a restart: same inode and still the same first bytes.
    for (const c of found) {
      const i = this.saved.findIndex((k) => k.dev === c.st.dev && k.ino === c.st.ino && headMatches(c.head!, k.fp));
      if (i < 0) continue;
      const k = this.saved.splice(i, 1)[0]!;
      if (k.offset <= c.st.size) {
        c.start = k.offset;
        c.cut = k.cut;
      } else {
        c.start = 0;
        this.ctx.log.info("file is shorter than its checkpoint (truncated); reading it from the start", { path: c.path });
      }
    }
    for (const c of found) {
      if (c.start !== undefined) continue;
      if (c.fp!.len < FINGERPRINT_BYTES) {
        // Too short to be recognised by its fingerprint: a copy still being made looks like this.
        if (this.mayBeCopy(c.head!, null)) c.probation = true;
        continue;
      }
      const known = this.takeKnownCopy(c.fp!, c.st.size);
      if (known) {
        c.start = known.offset;
        c.cut = known.cut;
        this.ctx.log.info("file has the content of a known file; reading it from that file's offset", { path: c.path, offset: known.offset });
      } else if (this.liveCopyOf(c.fp!, null)) {
        // A copy of a file still being read (copytruncate has copied but not yet truncated):
        // how far the original will be read is not known until it is truncated, so the copy
        // waits, and then starts where the original ended.
        c.probation = true;
      }
    }
    for (const c of found) {
      // start_at concerns files there before the input started that it never saw. A file
      // appearing later, or at a path that had a checkpoint (rotated while the agent was
      // stopped), is new content: read from its start.
      const unseen = !c.fromWatch && this.startupPaths !== null && this.startupPaths.has(c.path) && !this.savedPaths.has(c.path);
      let start = c.start ?? (unseen && this.opts.start_at === "end" ? await this.tailStart(c.fh, c.st.size) : 0);
      let inLine = false;
      let tail: Uint8Array = NO_BYTES;
      if (c.start !== undefined && start > 0) [start, inLine, tail] = await this.resumePoint(c.fh, start, c.cut === true);
      const f = new Tracked(c.fh, c.path, c.st, c.head!, start, now, this.opts.poll_interval,
        new LineSplitter(this.opts.max_line_bytes, this.codec),
        this.startPattern ? new MultilineJoiner(this.startPattern, this.opts.max_line_bytes, start) : null,
        c.probation === true && !unseen);
      f.tail = tail;
      if (inLine) {
        f.splitter.skipToNextLine();
        this.ctx.log.info("checkpoint is inside a line; resuming at the next line", { path: c.path, offset: start });
      }
      f.verifiedSize = c.st.size;
      f.verifiedMtime = c.st.mtimeMs;
      if (c.truncatedEarly) {
        f.shrunk = true;
        this.wakeLoop?.();
      }
      this.files.set(f.id, f);
      if (c.renamedOut) {
        f.orphaned = true;
        this.ctx.log.info("file renamed out of the globs before it was followed; reading it to its end", { path: c.path });
      } else this.byPath.set(f.path, f);
      this.ctx.log.debug("following file", { path: c.path, offset: start, waits: f.probation || undefined });
    }
    if (found.length > 0) this.checkpointSoon();
    return found.length;
  }

  /**
   * Where reading resumes at a saved `offset`, whether that is inside a line (its byte before
   * is not a line break, and the line was not one cut for length: then what comes before the
   * next line break is a fragment, skipped), and the bytes before it.
   */
  private async resumePoint(fh: FileFd, offset: number, cut: boolean): Promise<[number, boolean, Uint8Array]> {
    if (offset === 0) return [0, false, NO_BYTES];
    if (this.codec.unitBytes === 2 && (offset & 1) === 1) return [offset + 1, !cut, NO_BYTES]; // inside a character
    const from = Math.max(0, offset - TAIL_BYTES);
    const buf = new Uint8Array(offset - from);
    const { bytesRead } = await fh.read(buf, 0, buf.length, from);
    const before = buf.subarray(0, bytesRead);
    const nl = this.codec.nlBytes;
    const atLineStart = bytesRead === buf.length && before.length >= nl && before[before.length - nl] === 10 && (nl === 1 || before[before.length - 1] === 0);
    return [offset, !cut && !atLineStart, bytesRead === buf.length ? before.slice() : NO_BYTES];
  }

  /** A saved or remembered file with the first bytes `fp` stands for, read up to an offset within `size`; a saved one is taken. */
  private takeKnownCopy(fp: Fingerprint, size: number): Known | undefined {
    const sameContent = (k: Known) => k.fp.len === fp.len && k.fp.hash === fp.hash && k.offset <= size;
    const i = this.saved.findIndex(sameContent);
    return i >= 0 ? this.saved.splice(i, 1)[0]! : this.remembered.find(sameContent);
  }

  /** A followed file (other than `self`) that starts with the bytes `fp` stands for. */
  private liveCopyOf(fp: Fingerprint, self: Tracked | null): boolean {
    for (const f of this.files.values()) {
      if (f !== self && !f.probation && f.fp.len === fp.len && f.fp.hash === fp.hash) return true;
    }
    return false;
  }

  /** Whether a file whose first bytes are `head` (fewer than a fingerprint's worth) may become a copy of a known file. */
  private mayBeCopy(head: Uint8Array, self: Tracked | null): boolean {
    for (const f of this.files.values()) {
      if (f !== self && !f.probation && f.sample.length > 0 && prefixEqual(f.sample, head)) return true;
    }
    return this.remembered.some((k) => k.sample.length > 0 && prefixEqual(k.sample, head));
  }

  /**
   * A file on probation: looks again whether it is a copy. True once it may be read (the
   * start settled), false while it must wait.
   */
  private async endProbation(f: Tracked, now: number): Promise<boolean> {
    if (f.shrunk) {
      // Truncated while it waited: not a copy being made. What it held may be in a copy of it.
      f.probation = false;
      return true;
    }
    if (now < f.nextCheck) return false;
    const fh = f.fh!;
    const st = await fsop(fh.stat());
    const head = await fsop(readHead(fh));
    f.knownSize = st.size;
    f.mtimeMs = st.mtimeMs;
    f.verifiedSize = st.size;
    f.verifiedMtime = st.mtimeMs;
    f.fp = fingerprintOf(head);
    f.sample = sampleOf(head);
    let settled = false;
    if (head.length >= FINGERPRINT_BYTES) {
      const known = this.takeKnownCopy(f.fp, st.size);
      if (known) {
        const [start, inLine, tail] = await fsop(this.resumePoint(fh, known.offset, known.cut));
        f.readPos = f.committed = start;
        f.tail = tail;
        f.joiner?.reset(start);
        if (inLine) f.splitter.skipToNextLine();
        this.ctx.log.info("file has the content of a known file; reading it from that file's offset", { path: f.path, offset: start });
        settled = true;
      } else settled = !this.liveCopyOf(f.fp, f);
    } else if (!this.mayBeCopy(head, f)) {
      settled = true;
    } else if (head.length !== f.probationSize) {
      f.probationSize = head.length;
      f.probationSince = now;
    } else if (head.length > 0 && now - f.probationSince >= this.opts.poll_interval) {
      settled = true; // stopped growing short of a fingerprint: new content that begins alike
    }
    if (!settled) {
      f.nextCheck = now + this.opts.poll_interval;
      return false;
    }
    f.probation = false;
    f.lastActivity = now;
    this.checkpointSoon();
    return true;
  }

  /** Files on probation look again at the next round: a file they may be a copy of changed. */
  private wakeProbation(): void {
    for (const f of this.files.values()) if (f.probation) this.wake(f);
  }

  /** Where reading starts for start_at = "end": after the last complete line. */
  private async tailStart(fh: FileFd, size: number): Promise<number> {
    // Even, so a UTF-16 file is looked at in whole code units.
    const from = Math.max(0, size - TAIL_LOOKBACK) & ~1;
    const buf = new Uint8Array(size - from);
    const { bytesRead } = await fh.read(buf, 0, buf.length, from);
    const nl = this.codec.lastNl(buf.subarray(0, bytesRead));
    return nl < 0 ? size : from + nl + this.codec.nlBytes;
  }

  private openFailed(path: string, err: unknown): void {
    const msg = errorFirstLine(err);
    if (this.failedPaths.get(path) === msg) return;
    this.failedPaths.set(path, msg);
    this.ctx.log.warn("cannot open file", { path, error: msg });
    this.ctx.reportError(new Error(`${path}: ${msg}`));
  }

  /** A closed file changed: open it again (if it still has the same content). */
  private async reopen(f: Tracked, now: number): Promise<void> {
    let fh: FileFd;
    try {
      fh = await FileFd.open(f.path);
    } catch (err) {
      this.openFailed(f.path, err);
      return;
    }
    try {
      const st = await fh.stat();
      if (idOf(st.dev, st.ino) !== f.id) {
        await fh.close(); // the path changed hands since the scan's stat; the next scan sorts it out
        return;
      }
      const head = await readHead(fh);
      f.fh = fh;
      this.openFiles++;
      f.openedAt = now;
      f.knownSize = st.size;
      f.mtimeMs = st.mtimeMs;
      f.lastActivity = now;
      this.wake(f);
      if (!f.probation && (!headMatches(head, f.fp) || st.size < f.readPos)) await this.restartFromZero(f, head, "replaced or truncated");
      f.verifiedSize = st.size;
      f.verifiedMtime = st.mtimeMs;
    } catch (err) {
      if (f.fh === fh) await this.closeFile(f);
      else await fh.close();
      this.openFailed(f.path, err);
    }
  }

  /** Checks that an open file still starts with the bytes it started with; extends a short fingerprint. */
  private async verify(f: Tracked, size: number, mtimeMs: number): Promise<void> {
    if (f.probation) return; // its next check looks at all of it
    let head: Uint8Array;
    try {
      head = await readHead(f.fh!);
    } catch (err) {
      return this.readFailed(f, err);
    }
    f.verifiedSize = size;
    f.verifiedMtime = mtimeMs;
    await this.checkHead(f, head);
  }

  /**
   * Whether the file still holds the content it was fingerprinted by. When not, it was
   * truncated and written again between two looks (the size alone would not tell): it is
   * read again from the start.
   */
  private async checkHead(f: Tracked, head: Uint8Array): Promise<boolean> {
    if (!headMatches(head, f.fp)) {
      await this.restartFromZero(f, head, "content replaced");
      return false;
    }
    if (head.length > f.fp.len) {
      f.fp = fingerprintOf(head);
      if (f.sample.length < SAMPLE_BYTES) f.sample = sampleOf(head);
    }
    return true;
  }

  // ---- reading ---------------------------------------------------------------------------

  /** One read for every open file; true when any file had new bytes. */
  private async readRound(): Promise<boolean> {
    let progressed = false;
    const now = Date.now();
    const timeout = this.opts.multiline?.timeout ?? 0;
    // How many descriptors to give up this round so that waiting files get one.
    let toFree = this.demand - (this.maxOpen - this.fdsInUse);
    for (const f of [...this.files.values()]) {
      if (this.ctx.signal.aborted) return progressed;
      if (f.fh !== null) {
        let read = false;
        try {
          read = await this.readOnce(f, now);
          if (read) progressed = true;
          else await this.whenIdle(f, now);
          if (f.removedAt > 0 && f.fh !== null && now - f.removedAt >= this.opts.close_removed_after && f.readPos >= f.removedSize) {
            this.ctx.log.info("deleted file closed after close_removed_after; what is written to it from now on is not read", { path: f.path });
            await this.finish(f, now);
          }
        } catch (err) {
          if (!(err instanceof ReadFailure)) throw err;
          await this.readFailed(f, err);
        }
        if (toFree > 0 && f.fh !== null && !f.orphaned && (!read || now - f.openedAt >= OPEN_TURN_MS)) {
          // Its size as it is given up: a write whose event never came (Deno's watcher can merge
          // one into the creation) would otherwise wait for the listing once it is closed.
          try {
            f.knownSize = Math.max(f.knownSize, (await f.fh.stat()).size);
          } catch {
            // the listing tells
          }
          await this.closeFile(f);
          if (f.readPos < f.knownSize) f.waitingSince = now; // had its turn, not its fill: back in the queue
          toFree--;
        }
      }
      if (f.joiner !== null && f.joiner.holding && now - f.joiner.lastLineAt >= timeout) {
        f.joiner.flush(this.batch);
        this.noteOffset(f);
      }
      if (this.batchBytes >= this.opts.read_bytes) await this.flushBatch();
    }
    await this.flushBatch();
    return progressed;
  }

  /** Reads the next chunk of `f` into the batch; false when it has nothing new. */
  private async readOnce(f: Tracked, now: number): Promise<boolean> {
    const fh = f.fh!;
    if (f.probation && !(await this.endProbation(f, now))) return false;
    if (f.shrunk) {
      await this.restartFromZero(f, await fsop(readHead(fh)), "truncated");
      f.changed = true;
    }
    if (f.readPos >= f.knownSize || f.changed) {
      // A file that went to another name or away is watched closely: nothing else will tell when it ends.
      if (now < f.nextCheck && !f.orphaned && !f.changed) return false;
      f.changed = false;
      const st = await fsop(fh.stat());
      f.mtimeMs = st.mtimeMs;
      f.nlink = st.nlink;
      if (st.nlink === 0 && f.orphaned && f.removedAt === 0) this.removed(f, st.size, now);
      if (st.size < f.readPos) {
        await this.restartFromZero(f, await fsop(readHead(fh)), "truncated");
      } else if (st.size > f.readPos && (f.readPos > 0 || f.fp.len < FINGERPRINT_BYTES)) {
        // It grew after we had caught up: make sure it is still the same content before reading on.
        await this.checkHead(f, await fsop(readHead(fh)));
      }
      f.knownSize = st.size;
      if (st.size > f.sizeSeen) f.sizeSeen = st.size;
      if (st.size <= f.readPos) {
        this.backOff(f, now);
        await this.checkPath(f, now);
        return false;
      }
    }
    const want = Math.min(this.buf.length, f.knownSize - f.readPos);
    const { bytesRead } = await fsop(fh.read(this.buf, 0, want, f.readPos));
    if (bytesRead === 0) {
      f.knownSize = f.readPos; // shrank since the stat: the next stat tells how
      return false;
    }
    f.lastActivity = now;
    f.nextCheck = 0;
    f.nextPathCheck = 0;
    f.backoff = this.opts.poll_interval;
    this.consume(f, this.buf.subarray(0, bytesRead), now);
    return true;
  }

  /** Hands the next bytes of `f` (those at readPos) to its line assembly and the batch. */
  private consume(f: Tracked, chunk: Uint8Array, now: number): void {
    const at = f.readPos;
    f.readPos += chunk.length;
    f.tail = tailAfter(f.tail, chunk);
    if (f.joiner === null) f.splitter.push(chunk, this.batch);
    else {
      const lines: string[] = [];
      const ends: number[] = [];
      f.splitter.push(chunk, lines, ends, at);
      f.joiner.push(lines, ends, this.batch, now);
    }
    this.batchBytes += chunk.length;
    this.noteOffset(f);
  }

  /** `f`'s offset counts as taken once the batch is in the spool. */
  private noteOffset(f: Tracked): void {
    this.batchOffsets.push([f, f.offset, f.offsetInCutLine]);
  }

  /** Everything read of `f` counts as taken once the batch is in the spool (what it held back was handed out). */
  private noteEnd(f: Tracked): void {
    this.batchOffsets.push([f, f.readPos, false]);
  }

  private removed(f: Tracked, size: number, now: number): void {
    f.removedAt = now;
    f.removedSize = size;
  }

  /** Nothing new in an open file: check it again later, and later the longer it stays idle. */
  private backOff(f: Tracked, now: number): void {
    if (f.backoff >= this.idleCheckMax) {
      // The listing wakes it when it changes; so does a watch event of its directory, but
      // events are not relied on (Deno's watcher can merge a write into the creation it
      // follows): in a watched directory it is still checked, only less often.
      if (this.scanWakes) f.nextCheck = Infinity;
      else f.nextCheck = now + (this.watchers.watching(dirname(f.path)) ? WATCHED_IDLE_CHECK_MS : this.idleCheckMax);
      return;
    }
    f.nextCheck = now + f.backoff;
    f.backoff = Math.min(f.backoff * 2, this.idleCheckMax);
  }

  private async whenIdle(f: Tracked, now: number): Promise<void> {
    const idleFor = now - f.lastActivity;
    if (f.orphaned) {
      // A deleted file will not grow; a renamed one may, until its writer reopens the path.
      if (f.nlink === 0 || idleFor >= this.opts.close_inactive) await this.finish(f, now);
    } else if (idleFor >= this.opts.close_inactive) {
      await this.closeFile(f);
      this.ctx.log.debug("idle file closed", { path: f.path });
    }
  }

  /** Stops following a file that is read to its end (or closed after close_removed_after) and gone from the globs. */
  private async finish(f: Tracked, now: number): Promise<void> {
    await this.flushBatch();
    // What it held back will never be finished: hand it out as it is.
    this.flushHeld(f);
    this.noteEnd(f);
    await this.flushBatch();
    await this.closeFile(f);
    this.forget(f, now);
    this.ctx.log.info(f.nlink === 0 ? "deleted file read to its end; closed" : "renamed file idle; closed", { path: f.path });
    this.updateDetail();
  }

  /** No longer follows `f` (its checkpoint entry goes with it); remembers it to recognise a copy. */
  private forget(f: Tracked, now: number): void {
    this.files.delete(f.id);
    if (this.byPath.get(f.path) === f) this.byPath.delete(f.path);
    this.splitLinesBase += f.splitter.splitLines;
    this.splitEventsBase += f.joiner?.splitEvents ?? 0;
    if (!f.probation) {
      this.remember(f, now);
      this.wakeProbation();
    }
    this.checkpointSoon();
  }

  /**
   * Closes a file but keeps following its path (and keeps what it read but did not hand out);
   * the scan marks it for reopening when it changes.
   */
  private async closeFile(f: Tracked): Promise<void> {
    const fh = f.fh;
    if (fh === null) return;
    f.fh = null;
    this.openFiles--;
    await fh.close();
  }

  private async readFailed(f: Tracked, err: unknown): Promise<void> {
    this.ctx.log.warn("reading file failed; reopening it later", { path: f.path, error: errorFirstLine(err) });
    this.ctx.reportError(new Error(`${f.path}: ${errorFirstLine(err)}`));
    await this.closeFile(f);
    f.mtimeMs = -1; // makes the next scan reopen it
  }

  /** Hands out the unfinished last line and the event being built: the content they belong to has ended. */
  private flushHeld(f: Tracked): void {
    if (f.joiner === null) {
      f.splitter.flush(this.batch);
      return;
    }
    const lines: string[] = [];
    const ends: number[] = [];
    f.splitter.flush(lines, ends, f.readPos);
    f.joiner.push(lines, ends, this.batch, Date.now());
    f.joiner.flush(this.batch);
  }

  /** The file holds new content from its start (truncated, or replaced in place). */
  private async restartFromZero(f: Tracked, head: Uint8Array, why: string): Promise<void> {
    await this.flushBatch();
    await this.readRestFromCopy(f);
    this.flushHeld(f); // the old content's unfinished line is all there will be of it
    this.noteEnd(f);
    await this.flushBatch();
    this.remember(f, Date.now());
    this.ctx.log.info(`file ${why}; reading it from the start`, { path: f.path, offset: f.committed });
    f.readPos = 0;
    f.committed = 0;
    f.committedCut = false;
    f.knownSize = 0;
    f.sizeSeen = 0;
    f.shrunk = false;
    f.fp = fingerprintOf(head);
    f.sample = sampleOf(head);
    f.tail = NO_BYTES;
    f.splitter.reset();
    f.joiner?.reset(0);
    this.wakeProbation();
    this.checkpointSoon();
  }

  /**
   * `f` was truncated (copytruncate): what it held past readPos is gone from it, but a copy
   * made just before may hold it. A copy is a file beside it, not followed by the globs (a
   * copy they follow waits for this truncation and then starts where `f` ended), whose first
   * bytes and whose bytes before readPos are those of `f`; the newest such file is read from
   * readPos to its end as the rest of `f`.
   */
  private async readRestFromCopy(f: Tracked): Promise<void> {
    if (f.fp.len === 0 || (f.readPos > 0 && f.tail.length === 0)) return;
    const dir = dirname(f.path);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return;
    }
    const candidates: Array<{ path: string; size: number; ctimeMs: number }> = [];
    for (const name of names) {
      const path = join(dir, name);
      if (this.globs.file(path) && !this.excluded(path)) continue;
      let st;
      try {
        st = await stat(path);
      } catch {
        continue;
      }
      const id = idOf(st.dev, st.ino);
      if (!st.isFile() || st.size <= f.readPos || id === f.id || this.files.has(id) || this.pending.has(id)) continue;
      candidates.push({ path, size: st.size, ctimeMs: st.ctimeMs });
    }
    candidates.sort((a, b) => b.ctimeMs - a.ctimeMs);
    for (const c of candidates) {
      let fh: FileFd;
      try {
        fh = await FileFd.open(c.path);
      } catch {
        continue;
      }
      try {
        if (!headMatches(await readHead(fh), f.fp)) continue;
        const before = new Uint8Array(f.tail.length);
        const { bytesRead } = await fh.read(before, 0, before.length, f.readPos - before.length);
        if (bytesRead !== before.length || !prefixEqual(before, f.tail)) continue;
        this.ctx.log.info("file truncated; reading what it held past the last read from its copy", { path: f.path, copy: c.path, from: f.readPos, to: c.size });
        const now = Date.now();
        while (f.readPos < c.size) {
          const want = Math.min(this.buf.length, c.size - f.readPos);
          const got = await fh.read(this.buf, 0, want, f.readPos);
          if (got.bytesRead === 0) break;
          this.consume(f, this.buf.subarray(0, got.bytesRead), now);
          if (this.batchBytes >= this.opts.read_bytes) await this.flushBatch();
        }
        return;
      } catch (err) {
        this.ctx.log.warn("reading the copy of a truncated file failed", { path: f.path, copy: c.path, error: errorFirstLine(err) });
        return;
      } finally {
        await fh.close();
      }
    }
  }

  private remember(f: Tracked, now: number): void {
    if (f.fp.len < FINGERPRINT_BYTES) return; // a short prefix is too likely shared to recognise a copy by
    this.remembered.push({
      fp: f.fp, offset: f.committed, cut: f.committedCut, dev: f.dev, ino: f.ino, path: f.path, sample: f.sample, until: now + REMEMBER_MS,
    });
  }

  // ---- handing events on -----------------------------------------------------------------

  private async flushBatch(): Promise<void> {
    if (this.batchOffsets.length === 0) return;
    const lines = this.batch;
    const offsets = this.batchOffsets;
    this.batch = [];
    this.batchBytes = 0;
    this.batchOffsets = [];
    if (lines.length > 0) {
      if (this.opts.format === "json") await this.ctx.emitJsonLines(toJsonEvents(lines, this.startPattern !== null));
      else if (this.startPattern) await this.ctx.emitJsonLines(toMessageEvents(lines));
      else await this.ctx.emitText(lines);
    }
    for (const [f, offset, cut] of offsets) {
      f.committed = offset;
      f.committedCut = cut;
    }
    this.checkpointSoon();
  }

  /** At most one checkpoint in flight; a newer state waits for it, so saves keep up with durability, not with reads. */
  private checkpointSoon(): void {
    this.checkpointDirty = true;
    if (this.checkpointing) return;
    this.checkpointDirty = false;
    const state = this.state();
    this.lastCheckpoint = JSON.stringify(state);
    this.checkpointing = this.ctx.checkpoint(state)
      .catch((err) => this.ctx.log.warn("checkpoint failed", { error: errorFirstLine(err) }))
      .finally(() => {
        this.checkpointing = null;
        if (this.checkpointDirty) this.checkpointSoon();
      });
  }

  /**
   * The checkpoint: taken offsets only, of the files followed (and, until all are found, of
   * those from the last run). A file on probation has none: after a restart it is looked at
   * anew, as a copy of the files saved here.
   */
  state(): FileInputState {
    const files: Record<string, FileCheckpoint> = {};
    for (const f of this.files.values()) {
      if (f.probation) continue;
      const key = checkpointKey(f.fp, f.dev, f.ino, (k) => k in files);
      files[key] = { path: f.path, offset: f.committed, dev: f.dev, ino: f.ino, size: f.knownSize, ...(f.committedCut ? { cut: true as const } : {}) };
    }
    for (const k of this.saved) {
      const key = checkpointKey(k.fp, k.dev, k.ino, (key) => key in files);
      if (!(key in files)) files[key] = { path: k.path, offset: k.offset, dev: k.dev, ino: k.ino, size: k.offset, ...(k.cut ? { cut: true as const } : {}) };
    }
    return { files };
  }

  private updateDetail(): void {
    let split = this.splitLinesBase;
    let splitEvents = this.splitEventsBase;
    for (const f of this.files.values()) {
      split += f.splitter.splitLines;
      splitEvents += f.joiner?.splitEvents ?? 0;
    }
    const detail: Record<string, unknown> = {
      files: this.files.size, open_files: this.openFiles, waiting_files: this.demand, split_lines: split,
      watched_dirs: this.watchers.size,
    };
    if (this.startPattern) detail.split_events = splitEvents;
    this.ctx.setDetail(detail);
  }

  private async shutdown(): Promise<void> {
    // Lines read but not handed on are dropped, and so are events being built: their offsets
    // were not taken, so they are read again on the next start.
    this.batch = [];
    this.batchOffsets = [];
    this.batchBytes = 0;
    for (const f of this.files.values()) await this.closeFile(f);
    while (this.checkpointing) await this.checkpointing;
    const state = this.state();
    if (JSON.stringify(state) === this.lastCheckpoint) return;
    try {
      await this.ctx.checkpoint(state);
    } catch (err) {
      this.ctx.log.warn("final checkpoint failed", { error: errorFirstLine(err) });
    }
  }
}
