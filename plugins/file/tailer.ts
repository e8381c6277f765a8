// Following a set of files named by globs. One loop serves every file (no timer per file):
// it lists the globs every glob_interval, then reads each file that grew, at most read_bytes
// per file per round (round-robin, so one busy file cannot starve the others), and sleeps
// poll_interval when nothing grew. A file that stays idle is asked for its size less and
// less often; the glob listing, which stats every path anyway, wakes it when it changes.
// Files are held open by descriptor, so a renamed or deleted file is still read to its end.
// Rotation is noticed without waiting for the next listing: when a file being followed has
// no new data, its path is looked at too, and if it now names another file, that file is
// opened at once and the globs are listed early (at most once per poll_interval).
// At most max_open_files are open: when more files have data, a file that is caught up (or
// has had its turn) gives its descriptor to one that waits.
//
// Delivery: lines read from several files are handed to the spool in one batch; a file's
// offset counts as taken only once its batch is in the spool, and the checkpoint (which the
// core saves once those events are durable) holds only taken offsets. Bytes of an unfinished
// line or of a multiline event still being built are never covered by a checkpoint.
import { open, stat } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import type { InputContext } from "../../agent/plugin.ts";
import { expandGlobs } from "../../agent/helpers/glob.ts";
import { sleep } from "../../agent/helpers/backoff.ts";
import { LineSplitter, toJsonEvents, toMessageEvents } from "./lines.ts";
import { MultilineJoiner } from "./multiline.ts";
import { codecFor } from "./encoding.ts";
import type { Codec, EncodingName } from "./encoding.ts";
import { openFilesCap, openFilesLimit } from "./fdlimit.ts";
import {
  checkpointKey, FINGERPRINT_BYTES, fingerprintOf, headMatches, parseCheckpointKey, readHead,
} from "./identity.ts";
import type { Fingerprint } from "./identity.ts";

export interface TailOptions {
  paths: string[];
  exclude: string[];
  start_at: "beginning" | "end";
  format: "text" | "json";
  glob_interval: number;
  poll_interval: number;
  max_line_bytes: number;
  read_bytes: number;
  close_inactive: number;
  encoding: EncodingName;
  multiline?: { start_pattern: string; timeout: number };
  close_removed_after: number;
  max_open_files: number;
}

/** What is saved per file: where reading resumes, and how to recognise the file. */
export interface FileCheckpoint {
  path: string;
  offset: number;
  dev: number;
  ino: number;
  size: number;
}

/** The input's checkpoint, keyed by content fingerprint ("<hash>:<len>"). */
export interface FileInputState {
  files: Record<string, FileCheckpoint>;
}

/** A file we stopped following (or knew before a restart), kept to recognise a copy of it. */
interface Known {
  fp: Fingerprint;
  offset: number;
  dev: number;
  ino: number;
  path: string;
  /** When to forget it (ms since epoch). */
  until: number;
}

/** How long a file we stopped following is remembered, to recognise a copy made by copytruncate. */
const REMEMBER_MS = 10 * 60_000;
const REMEMBER_MAX = 1000;
/** start_at = "end" looks this far back for the last complete line, so a line being written is read whole. */
const TAIL_LOOKBACK = 64 * 1024;
/** Longest wait between two checks of an idle file (glob_interval, when shorter, bounds it too). */
const IDLE_CHECK_MAX_MS = 1000;
/** While files wait for a descriptor, an open file gives its own up after this long even if still busy. */
const OPEN_TURN_MS = 1000;

/** A file-system failure while reading one file: it affects that file only. */
class ReadFailure extends Error {}

async function fsop<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    throw new ReadFailure(err instanceof Error ? err.message : String(err));
  }
}

function messageOf(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split("\n")[0]!;
}

const idOf = (dev: number, ino: number) => `${dev}:${ino}`;

class Tracked {
  fh: FileHandle | null;
  path: string;
  readonly dev: number;
  readonly ino: number;
  fp: Fingerprint;
  /** Next byte to read. */
  readPos: number;
  /** End of the last event the spool has taken: where a restart resumes. */
  committed: number;
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

  constructor(fh: FileHandle, path: string, st: { dev: number; ino: number; size: number; mtimeMs: number },
    fp: Fingerprint, start: number, now: number, backoff: number, splitter: LineSplitter, joiner: MultilineJoiner | null) {
    this.fh = fh;
    this.path = path;
    this.dev = st.dev;
    this.ino = st.ino;
    this.fp = fp;
    this.readPos = start;
    this.committed = start;
    this.knownSize = st.size;
    this.mtimeMs = st.mtimeMs;
    this.lastActivity = now;
    this.openedAt = now;
    this.backoff = backoff;
    this.splitter = splitter;
    this.joiner = joiner;
    this.pathSeen = idOf(st.dev, st.ino);
  }

  get id(): string {
    return idOf(this.dev, this.ino);
  }

  /** Where the bytes not yet handed out start: an event being built, else the unfinished last line. */
  get offset(): number {
    const held = this.joiner ? this.joiner.heldFrom : -1;
    return held >= 0 ? held : this.readPos - this.splitter.pendingBytes;
  }
}

/** Reads a saved state leniently: a damaged entry is skipped (that file is then treated as new). */
export function parseState(raw: unknown): Known[] {
  const out: Known[] = [];
  const files = (raw as FileInputState | undefined)?.files;
  if (typeof files !== "object" || files === null) return out;
  for (const [key, v] of Object.entries(files)) {
    const fp = parseCheckpointKey(key);
    if (!fp || typeof v !== "object" || v === null) continue;
    const { path, offset, dev, ino } = v as FileCheckpoint;
    if (typeof path !== "string" || ![offset, dev, ino].every((n) => Number.isSafeInteger(n) && n >= 0)) continue;
    out.push({ fp, offset, dev, ino, path, until: 0 });
  }
  return out;
}

export class FileTailer {
  private readonly files = new Map<string, Tracked>();
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
  private batch: string[] = [];
  private batchBytes = 0;
  /** Per file in the batch: its offset once the batch is taken. */
  private batchOffsets: Array<[Tracked, number]> = [];
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

  constructor(private readonly opts: TailOptions, private readonly ctx: InputContext<FileInputState>) {
    this.buf = new Uint8Array(opts.read_bytes);
    this.codec = codecFor(opts.encoding);
    this.startPattern = opts.multiline ? new RegExp(opts.multiline.start_pattern) : null;
    this.maxOpen = opts.max_open_files;
    this.idleCheckMax = Math.max(opts.poll_interval, Math.min(opts.glob_interval, IDLE_CHECK_MAX_MS));
    this.scanWakes = opts.glob_interval <= this.idleCheckMax;
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
      while (!signal.aborted) {
        const now = Date.now();
        if (now >= nextScan || (this.scanSoon && now >= this.earlyScanAt)) {
          this.scanSoon = false;
          this.lastScanAt = now;
          await this.scan();
          nextScan = Date.now() + this.opts.glob_interval;
        }
        let progressed = await this.readRound();
        if (this.demand > 0 && !signal.aborted && (await this.fillSlots(Date.now()))) progressed = true;
        if (!progressed && !signal.aborted) {
          const wakeAt = this.scanSoon ? Math.min(nextScan, this.earlyScanAt) : nextScan;
          await sleep(Math.max(1, Math.min(this.opts.poll_interval, wakeAt - Date.now())), signal);
        }
      }
    } finally {
      await this.shutdown();
    }
  }

  // ---- discovery -------------------------------------------------------------------------

  /** The earliest time an early listing may run: rotations in quick succession cost one listing per poll_interval. */
  private get earlyScanAt(): number {
    return this.lastScanAt + this.opts.poll_interval;
  }

  /**
   * Looks whether the path of `f` (which has no new data) now names another file: rotation
   * by rename+create. The new file is opened at once, before it can be renamed out of the
   * globs' reach, and an early listing tells where `f` went. Only a change is acted on, so
   * a path that stays gone or names a file that cannot be opened costs a stat, not a listing.
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
    if (id === "" ? f.orphaned : this.files.has(id)) return;
    this.ctx.log.debug("path names another file now; listing the globs early", { path: f.path });
    if (id !== "" && !this.unopened.has(f.path)) {
      // The path came from the globs' listing, so it is still one of theirs.
      this.unopened.set(f.path, now);
      this.demand++;
    }
    this.scanSoon = true;
  }

  private async scan(): Promise<void> {
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
        fresh.push(path);
        continue;
      }
      if (f.path !== path) {
        this.ctx.log.info("file renamed", { from: f.path, to: path });
        f.path = path;
        f.pathSeen = id;
        this.checkpointSoon();
      }
      f.orphaned = false;
      f.removedAt = 0;
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
        this.batchOffsets.push([f, f.readPos]);
        gone.push(f);
      } else {
        f.orphaned = true;
        f.lastActivity = now;
        this.wake(f);
        try {
          const st = await f.fh.stat();
          f.nlink = st.nlink;
          if (st.nlink === 0) this.removed(f, st.size, now);
        } catch {
          // the next read reports it
        }
        this.ctx.log.info("file renamed away or deleted; reading it to its end", { path: f.path });
      }
    }
    await this.flushBatch();
    for (const f of gone) this.forget(f, now);
    const unopened = new Map<string, number>();
    for (const path of fresh) unopened.set(path, this.unopened.get(path) ?? now);
    this.unopened = unopened;
    await this.fillSlots(now);
    this.remembered = this.remembered.filter((k) => k.until > now).slice(-REMEMBER_MAX);
    this.updateDetail();
  }

  /**
   * Gives free descriptors to files waiting for one, longest waiting first: paths not yet
   * followed, and closed files that changed. True when it opened any.
   */
  private async fillSlots(now: number): Promise<boolean> {
    let room = this.maxOpen - this.openFiles;
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

  /**
   * Starts following newly found files: resumed from the checkpoint, as a copy of a known
   * file, or new. The caller passes no more paths than there are free descriptors. Returns
   * how many it follows.
   */
  private async adopt(paths: string[], now: number): Promise<number> {
    interface Candidate {
      path: string;
      fh: FileHandle;
      st: { dev: number; ino: number; size: number; mtimeMs: number };
      head: Uint8Array;
      fp: Fingerprint;
      start?: number;
    }
    const found: Candidate[] = [];
    for (const path of paths) {
      let fh: FileHandle;
      try {
        fh = await open(path, "r");
      } catch (err) {
        this.openFailed(path, err);
        continue;
      }
      try {
        const st = await fh.stat();
        const id = idOf(st.dev, st.ino);
        if (!st.isFile() || this.files.has(id) || found.some((c) => idOf(c.st.dev, c.st.ino) === id)) {
          await fh.close();
          continue;
        }
        const head = await readHead(fh);
        found.push({ path, fh, st, head, fp: fingerprintOf(head) });
        this.failedPaths.delete(path);
      } catch (err) {
        await fh.close().catch(() => {});
        this.openFailed(path, err);
      }
    }

    // The same file as before a restart: same inode and still the same first bytes.
    for (const c of found) {
      const i = this.saved.findIndex((k) => k.dev === c.st.dev && k.ino === c.st.ino && headMatches(c.head, k.fp));
      if (i < 0) continue;
      const k = this.saved.splice(i, 1)[0]!;
      if (k.offset <= c.st.size) c.start = k.offset;
      else {
        c.start = 0;
        this.ctx.log.info("file is shorter than its checkpoint (truncated); reading it from the start", { path: c.path });
      }
    }
    // A copy of a file we know (copytruncate's copy, a file moved across file systems):
    // the same first FINGERPRINT_BYTES, so it holds what was already read up to that offset.
    const deferred: Candidate[] = [];
    for (const c of found) {
      if (c.start !== undefined || c.fp.len < FINGERPRINT_BYTES) continue;
      const sameContent = (k: { fp: Fingerprint; offset: number }) =>
        k.fp.len === c.fp.len && k.fp.hash === c.fp.hash && k.offset <= c.st.size;
      const savedIdx = this.saved.findIndex(sameContent);
      const known = savedIdx >= 0 ? this.saved.splice(savedIdx, 1)[0]! : this.remembered.find(sameContent);
      if (known) {
        c.start = known.offset;
        this.ctx.log.info("file has the content of a known file; reading it from that file's offset", { path: c.path, offset: known.offset });
      } else if ([...this.files.values()].some((f) => sameContent({ fp: f.fp, offset: f.committed }))) {
        // A copy of a file still being read (copytruncate has copied but not yet truncated):
        // how far the original will be read is not known until it is truncated, so the copy
        // waits for a later scan and then starts where the original ended.
        deferred.push(c);
      }
    }
    for (const c of deferred) {
      found.splice(found.indexOf(c), 1);
      await c.fh.close().catch(() => {});
    }
    for (const c of found) {
      // start_at concerns files there before the input started that it never saw. A file
      // appearing later, or at a path that had a checkpoint (rotated while the agent was
      // stopped), is new content: read from its start.
      const unseen = this.startupPaths !== null && this.startupPaths.has(c.path) && !this.savedPaths.has(c.path);
      const start = c.start ?? (unseen && this.opts.start_at === "end" ? await this.tailStart(c.fh, c.st.size) : 0);
      const f = new Tracked(c.fh, c.path, c.st, c.fp, start, now, this.opts.poll_interval,
        new LineSplitter(this.opts.max_line_bytes, this.codec),
        this.startPattern ? new MultilineJoiner(this.startPattern, this.opts.max_line_bytes, start) : null);
      this.openFiles++;
      f.verifiedSize = c.st.size;
      f.verifiedMtime = c.st.mtimeMs;
      this.files.set(f.id, f);
      this.ctx.log.debug("following file", { path: c.path, offset: start });
    }
    if (found.length > 0) this.checkpointSoon();
    return found.length;
  }

  /** Where reading starts for start_at = "end": after the last complete line. */
  private async tailStart(fh: FileHandle, size: number): Promise<number> {
    // Even, so a UTF-16 file is looked at in whole code units.
    const from = Math.max(0, size - TAIL_LOOKBACK) & ~1;
    const buf = new Uint8Array(size - from);
    const { bytesRead } = await fh.read(buf, 0, buf.length, from);
    const nl = this.codec.lastNl(buf.subarray(0, bytesRead));
    return nl < 0 ? size : from + nl + this.codec.nlBytes;
  }

  private openFailed(path: string, err: unknown): void {
    const msg = messageOf(err);
    if (this.failedPaths.get(path) === msg) return;
    this.failedPaths.set(path, msg);
    this.ctx.log.warn("cannot open file", { path, error: msg });
    this.ctx.reportError(new Error(`${path}: ${msg}`));
  }

  /** A closed file changed: open it again (if it still has the same content). */
  private async reopen(f: Tracked, now: number): Promise<void> {
    let fh: FileHandle;
    try {
      fh = await open(f.path, "r");
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
      if (!headMatches(head, f.fp) || st.size < f.readPos) await this.restartFromZero(f, head, "replaced or truncated");
      f.verifiedSize = st.size;
      f.verifiedMtime = st.mtimeMs;
    } catch (err) {
      if (f.fh === fh) await this.closeFile(f);
      else await fh.close().catch(() => {});
      this.openFailed(f.path, err);
    }
  }

  /** Checks that an open file still starts with the bytes it started with; extends a short fingerprint. */
  private async verify(f: Tracked, size: number, mtimeMs: number): Promise<void> {
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
    if (head.length > f.fp.len) f.fp = fingerprintOf(head);
    return true;
  }

  // ---- reading ---------------------------------------------------------------------------

  /** One read for every open file; true when any file had new bytes. */
  private async readRound(): Promise<boolean> {
    let progressed = false;
    const now = Date.now();
    const timeout = this.opts.multiline?.timeout ?? 0;
    // How many descriptors to give up this round so that waiting files get one.
    let toFree = this.demand - (this.maxOpen - this.openFiles);
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
          await this.closeFile(f);
          if (f.readPos < f.knownSize) f.waitingSince = now; // had its turn, not its fill: back in the queue
          toFree--;
        }
      }
      if (f.joiner !== null && f.joiner.holding && now - f.joiner.lastLineAt >= timeout) {
        f.joiner.flush(this.batch);
        this.batchOffsets.push([f, f.offset]);
      }
      if (this.batchBytes >= this.opts.read_bytes) await this.flushBatch();
    }
    await this.flushBatch();
    return progressed;
  }

  /** Reads the next chunk of `f` into the batch; false when it has nothing new. */
  private async readOnce(f: Tracked, now: number): Promise<boolean> {
    const fh = f.fh!;
    if (f.readPos >= f.knownSize) {
      // A file that went to another name or away is watched closely: nothing else will tell when it ends.
      if (now < f.nextCheck && !f.orphaned) return false;
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
    const at = f.readPos;
    f.readPos += bytesRead;
    f.lastActivity = now;
    f.nextCheck = 0;
    f.nextPathCheck = 0;
    f.backoff = this.opts.poll_interval;
    const chunk = this.buf.subarray(0, bytesRead);
    if (f.joiner === null) f.splitter.push(chunk, this.batch);
    else {
      const lines: string[] = [];
      const ends: number[] = [];
      f.splitter.push(chunk, lines, ends, at);
      f.joiner.push(lines, ends, this.batch, now);
    }
    this.batchBytes += bytesRead;
    this.batchOffsets.push([f, f.offset]);
    return true;
  }

  private removed(f: Tracked, size: number, now: number): void {
    f.removedAt = now;
    f.removedSize = size;
  }

  /** Nothing new in an open file: check it again later, and later the longer it stays idle. */
  private backOff(f: Tracked, now: number): void {
    if (f.backoff >= this.idleCheckMax) {
      f.nextCheck = this.scanWakes ? Infinity : now + this.idleCheckMax;
      return;
    }
    f.nextCheck = now + f.backoff;
    f.backoff = Math.min(f.backoff * 2, this.idleCheckMax);
  }

  /** The file may have changed: check it at the next round. */
  private wake(f: Tracked): void {
    f.nextCheck = 0;
    f.backoff = this.opts.poll_interval;
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
    this.batchOffsets.push([f, f.readPos]);
    await this.flushBatch();
    await this.closeFile(f);
    this.forget(f, now);
    this.ctx.log.info(f.nlink === 0 ? "deleted file read to its end; closed" : "renamed file idle; closed", { path: f.path });
    this.updateDetail();
  }

  /** No longer follows `f` (its checkpoint entry goes with it); remembers it to recognise a copy. */
  private forget(f: Tracked, now: number): void {
    this.files.delete(f.id);
    this.splitLinesBase += f.splitter.splitLines;
    this.splitEventsBase += f.joiner?.splitEvents ?? 0;
    this.remember(f, now);
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
    await fh.close().catch(() => {});
  }

  private async readFailed(f: Tracked, err: unknown): Promise<void> {
    this.ctx.log.warn("reading file failed; reopening it later", { path: f.path, error: messageOf(err) });
    this.ctx.reportError(new Error(`${f.path}: ${messageOf(err)}`));
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
    this.flushHeld(f); // the old content's unfinished line is all there will be of it
    this.batchOffsets.push([f, f.readPos]);
    await this.flushBatch();
    this.remember(f, Date.now());
    this.ctx.log.info(`file ${why}; reading it from the start`, { path: f.path, offset: f.committed });
    f.readPos = 0;
    f.committed = 0;
    f.knownSize = 0;
    f.fp = fingerprintOf(head);
    f.joiner?.reset(0);
    this.checkpointSoon();
  }

  private remember(f: Tracked, now: number): void {
    if (f.fp.len < FINGERPRINT_BYTES) return; // a short prefix is too likely shared to recognise a copy by
    this.remembered.push({ fp: f.fp, offset: f.committed, dev: f.dev, ino: f.ino, path: f.path, until: now + REMEMBER_MS });
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
    for (const [f, offset] of offsets) f.committed = offset;
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
      .catch((err) => this.ctx.log.warn("checkpoint failed", { error: messageOf(err) }))
      .finally(() => {
        this.checkpointing = null;
        if (this.checkpointDirty) this.checkpointSoon();
      });
  }

  /** The checkpoint: taken offsets only, of the files followed (and, until all are found, of those from the last run). */
  state(): FileInputState {
    const files: Record<string, FileCheckpoint> = {};
    for (const f of this.files.values()) {
      const key = checkpointKey(f.fp, f.dev, f.ino, (k) => k in files);
      files[key] = { path: f.path, offset: f.committed, dev: f.dev, ino: f.ino, size: f.knownSize };
    }
    for (const k of this.saved) {
      const key = checkpointKey(k.fp, k.dev, k.ino, (key) => key in files);
      if (!(key in files)) files[key] = { path: k.path, offset: k.offset, dev: k.dev, ino: k.ino, size: k.offset };
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
      this.ctx.log.warn("final checkpoint failed", { error: messageOf(err) });
    }
  }
}
