// One running `misp_file` input: scans of the path, the per-file and per-event state, and what
// happens to a file once its events are spooled.
//
// Each scan looks at the path: a file is read; a folder's *.json files are read as drop files
// and its sub-folders holding a manifest.json as MISP feeds (a folder that itself holds a
// manifest.json is one feed). A file is read only once it has not changed for `settle`, and
// not used if its size or mtime changed while it was read, so a file being written is not
// read half. An event is posted when its version (uuid + timestamp) is newer than the one
// posted before, whichever file or feed it came from.
//
// State: the seen-set (event uuid -> last posted timestamp; feed entry -> the manifest
// timestamp already handled) and the drop files already read or found broken (by path, size
// and mtime), so a kept file is not read again until it changes and a broken one is reported
// once. Feeds are re-read when their manifest changes; only entries whose timestamp changed
// are opened.
import { readdir, readFile, rename, stat, unlink } from "node:fs/promises";
import type { Stats } from "node:fs";
import { basename, dirname, join } from "node:path";
import { z } from "zod";
import type { InputContext } from "../../agent/plugin.ts";
import { errorMessage } from "../../agent/errortext.ts";
import { runPolls, type PollResult } from "../common/poll.ts";
import { SeenSet, seenSetState } from "../common/seen.ts";
import { formatBytes } from "../../agent/units.ts";
import { documentEvents, manifestEntries, type FileEvent } from "./documents.ts";
import type { MispFileOptions } from "./options.ts";

/** A drop file already handled, as it was then. */
const fileMark = z.strictObject({
  size: z.number().int().nonnegative(),
  /** mtimeMs: fractional, and before 1970 for a file whose time was set so. */
  mtime: z.number(),
  status: z.enum(["done", "broken"]),
});

export type FileMark = z.infer<typeof fileMark>;

/** The saved state: the input's state schema. */
export const mispFileState = z.strictObject({
  v: z.literal(1),
  /** Event uuid -> last posted timestamp; feed entry -> the manifest timestamp handled. */
  seen: seenSetState.optional(),
  /** Drop files handled, by path. */
  files: z.record(z.string().min(1), fileMark).optional(),
});

export type MispFileState = z.infer<typeof mispFileState>;

/** What the input remembers of a feed folder while it runs. */
interface FeedMemory {
  /** The manifest (size:mtime) whose entries were all handled. */
  handled: string | null;
  /** A broken manifest already reported (size:mtime). */
  reported: string | null;
  /**
   * Event files not to open again until they change (path -> size:mtime, or "missing"):
   * broken ones (reported once), and ones older than their manifest entry.
   */
  held: Map<string, string>;
}

const MANIFEST = "manifest.json";
const BATCH_EVENTS = 1000;
const BATCH_BYTES = 16 << 20;
/** The state is saved at most this often during a scan (and always at its end). */
const SAVE_EVERY_MS = 1000;

interface ScanCounts {
  files: number;
  feeds: number;
  posted: number;
  errors: number;
  waiting: number;
}

export class MispFileInput {
  private seen!: SeenSet;
  private files: Record<string, FileMark> = {};
  private readonly feeds = new Map<string, FeedMemory>();
  /** Lines and seen-set marks waiting for the next emit (marks apply once it is done). */
  private lines: string[] = [];
  private bytes = 0;
  private marks: Array<[string, string]> = [];
  /** Event versions in `lines`, so one listed twice is posted once. */
  private planned = new Map<string, number>();
  private counts: ScanCounts = { files: 0, feeds: 0, posted: 0, errors: 0, waiting: 0 };
  private visited = new Set<string>();
  private finished: string[] = [];
  private pathMissingReported = false;
  private pathFound = false;
  /** Drop files whose stat failed (not for being absent), already reported. */
  private readonly statFailures = new Set<string>();
  /** Rename/delete failures already reported (path + size:mtime). */
  private readonly actionFailures = new Set<string>();
  private dirty = false;
  private lastSave = 0;

  constructor(
    private readonly opts: MispFileOptions,
    private readonly ctx: InputContext<MispFileState>,
  ) {}

  async run(): Promise<void> {
    const { ctx, opts } = this;
    const saved = await ctx.loadState();
    // Entries never expire by age: the bound is max_seen (least recently seen go first).
    this.seen = SeenSet.from(saved?.seen, { maxEntries: opts.max_seen, ttlMs: Infinity });
    this.files = { ...(saved?.files ?? {}) };
    await runPolls(ctx, { intervalMs: opts.interval }, (signal) => this.scan(signal));
  }

  private async scan(signal: AbortSignal): Promise<PollResult> {
    const { opts } = this;
    this.counts = { files: 0, feeds: 0, posted: 0, errors: 0, waiting: 0 };
    this.visited = new Set();
    this.finished = [];
    let st: Stats;
    try {
      st = await stat(opts.path);
    } catch (err) {
      if (errCode(err) !== "ENOENT") throw err;
      // Once it was there, a path going away is expected (a single file renamed or deleted).
      if (!this.pathFound && !this.pathMissingReported) this.report(`${opts.path}: not found (waiting for it to appear)`);
      this.pathMissingReported = true;
      return { status: "path not found" };
    }
    this.pathFound = true;

    if (st.isDirectory()) {
      if (await exists(join(opts.path, MANIFEST))) await this.feed(opts.path, signal);
      else await this.dropFolder(opts.path, signal);
    } else if (basename(opts.path) === MANIFEST) {
      await this.feed(dirname(opts.path), signal);
    } else {
      await this.dropFile(opts.path);
    }
    await this.flush();
    if (!signal.aborted) {
      // Marks of files no longer there go (a file dropped again under that name is new).
      for (const file of Object.keys(this.files)) {
        if (!this.visited.has(file)) {
          delete this.files[file];
          this.dirty = true;
        }
      }
    }
    if (this.dirty) this.save();
    if (this.finished.length > 0 && !signal.aborted) await this.afterSpooled(signal);
    this.ctx.setDetail({ path: opts.path, files_read: Object.keys(this.files).length, remembered: this.seen.size });
    const c = this.counts;
    const waiting = c.waiting > 0 ? `, ${c.waiting} still being written` : "";
    const errors = c.errors > 0 ? `, ${c.errors} errors` : "";
    return { status: `${c.files} files and ${c.feeds} feeds read: ${c.posted} events posted${waiting}${errors}` };
  }

  private async dropFolder(dir: string, signal: AbortSignal): Promise<void> {
    const entries = await readdir(dir, { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      if (signal.aborted) return;
      // Hidden files are the temporary files of copy tools (rsync's .name.XXXXXX).
      if (entry.name.startsWith(".")) continue;
      const full = join(dir, entry.name);
      if (/\.json$/i.test(entry.name) && (entry.isFile() || entry.isSymbolicLink())) await this.dropFile(full);
      else if ((entry.isDirectory() || entry.isSymbolicLink()) && (await exists(join(full, MANIFEST)))) await this.feed(full, signal);
    }
  }

  private async dropFile(file: string): Promise<void> {
    const { opts } = this;
    this.visited.add(file);
    let st: Stats;
    try {
      st = await stat(file);
    } catch (err) {
      if (errCode(err) === "ENOENT") return;
      // One file the agent may not look at must not hold up the others.
      if (!this.statFailures.has(file)) this.report(`${file}: cannot be read (${errorMessage(err)}); left in place`);
      this.statFailures.add(file);
      return;
    }
    this.statFailures.delete(file);
    if (!st.isFile()) return;
    const mark = this.files[file];
    if (mark && mark.size === st.size && mark.mtime === st.mtimeMs) {
      // Done before (perhaps by a run that stopped before renaming or deleting it).
      if (mark.status === "done" && opts.after !== "keep") this.finished.push(file);
      return;
    }
    if (st.size > opts.max_file_bytes) return this.brokenFile(file, st, `larger than max_file_bytes (${formatBytes(st.size)} > ${formatBytes(opts.max_file_bytes)})`);
    if (!this.settled(st)) return;
    let text: string | null;
    try {
      text = await readStable(file, st);
    } catch (err) {
      if (errCode(err) === "ENOENT") return;
      return this.brokenFile(file, st, `cannot be read (${errorMessage(err)})`);
    }
    if (text === null) {
      this.counts.waiting++;
      return;
    }
    const events = documentEvents(text);
    if (typeof events === "string") return this.brokenFile(file, st, events);
    await this.stage(events);
    await this.flush();
    this.files[file] = { size: st.size, mtime: st.mtimeMs, status: "done" };
    this.dirty = true;
    this.counts.files++;
    if (opts.after !== "keep") this.finished.push(file);
    this.maybeSave();
  }

  private brokenFile(file: string, st: Stats, why: string): void {
    this.files[file] = { size: st.size, mtime: st.mtimeMs, status: "broken" };
    this.dirty = true;
    this.report(`${file}: ${why}; left in place`);
  }

  /** A feed folder: the manifest's entries whose timestamp changed since they were handled. */
  private async feed(dir: string, signal: AbortSignal): Promise<void> {
    const { opts, seen } = this;
    let mem = this.feeds.get(dir);
    if (!mem) this.feeds.set(dir, (mem = { handled: null, reported: null, held: new Map() }));
    const manifest = join(dir, MANIFEST);
    let st: Stats;
    try {
      st = await stat(manifest);
    } catch (err) {
      if (errCode(err) === "ENOENT") return;
      return this.brokenManifest(mem, `error:${errCode(err)}`, manifest, `cannot be read (${errorMessage(err)})`);
    }
    const version = statKey(st);
    if (mem.handled === version) return;
    if (st.size > opts.max_file_bytes) return this.brokenManifest(mem, version, manifest, `larger than max_file_bytes (${formatBytes(st.size)})`);
    if (!this.settled(st)) return;
    const text = await readStable(manifest, st).catch((err: unknown) => {
      this.brokenManifest(mem, version, manifest, `cannot be read (${errorMessage(err)})`);
      return undefined;
    });
    if (text === undefined) return;
    if (text === null) {
      this.counts.waiting++;
      return;
    }
    const entries = manifestEntries(text);
    if (typeof entries === "string") return this.brokenManifest(mem, version, manifest, entries);

    let complete = true;
    for (const [uuid, ts] of entries) {
      if (signal.aborted) {
        complete = false;
        break;
      }
      const entryKey = `feed\u0000${dir}\u0000${uuid}`;
      if (seen.get(entryKey) === String(ts)) continue;
      const events = await this.feedEvent(join(dir, `${uuid}.json`), uuid, ts, mem);
      if (events === null) {
        complete = false;
        continue;
      }
      await this.stage(events);
      this.marks.push([entryKey, String(ts)]);
    }
    await this.flush();
    // A manifest with entries still waiting (a file missing, broken or not yet written) is
    // looked at again on the next scan; the entries already handled are skipped then.
    mem.handled = complete ? version : null;
    this.counts.feeds++;
    this.dirty = true;
    this.maybeSave();
  }

  private brokenManifest(mem: FeedMemory, version: string, file: string, why: string): void {
    mem.handled = version;
    if (mem.reported === version) return;
    mem.reported = version;
    this.report(`${file}: ${why}`);
  }

  /** The events of a feed's event file, or null if it cannot be used yet (reported once if it is broken). */
  private async feedEvent(file: string, uuid: string, listed: number, mem: FeedMemory): Promise<FileEvent[] | null> {
    let st: Stats;
    try {
      st = await stat(file);
    } catch (err) {
      const code = errCode(err) === "ENOENT" ? "missing" : `error:${errCode(err)}`;
      if (mem.held.get(file) !== code) {
        this.report(code === "missing" ? `${file}: listed in the feed's manifest but not found` : `${file}: cannot be read (${errorMessage(err)})`);
      }
      mem.held.set(file, code);
      return null;
    }
    const version = statKey(st);
    if (mem.held.get(file) === version) return null;
    const broken = (why: string) => {
      mem.held.set(file, version);
      this.report(`${file}: ${why}`);
      return null;
    };
    if (st.size > this.opts.max_file_bytes) return broken(`larger than max_file_bytes (${formatBytes(st.size)})`);
    if (!this.settled(st)) return null;
    let text: string | null;
    try {
      text = await readStable(file, st);
    } catch (err) {
      return broken(`cannot be read (${errorMessage(err)})`);
    }
    if (text === null) {
      this.counts.waiting++;
      return null;
    }
    const events = documentEvents(text);
    if (typeof events === "string") return broken(events);
    // A manifest written before its event file: the file still holds an older version.
    const own = events.find((e) => e.uuid === uuid);
    if (own && own.timestamp < listed) {
      mem.held.set(file, version);
      return null;
    }
    mem.held.delete(file);
    return events;
  }

  /** Whether a file has been left alone for `settle` (else it is counted as still being written). */
  private settled(st: Stats): boolean {
    if (Date.now() - st.mtimeMs >= this.opts.settle) return true;
    this.counts.waiting++;
    return false;
  }

  /** Queues the event versions not posted before; emits once a batch is full. */
  private async stage(events: FileEvent[]): Promise<void> {
    for (const e of events) {
      const posted = Number(this.seen.get(e.uuid) ?? -1);
      const planned = this.planned.get(e.uuid) ?? -1;
      if (posted >= e.timestamp || planned >= e.timestamp) continue;
      this.planned.set(e.uuid, e.timestamp);
      this.lines.push(e.text);
      this.bytes += e.text.length;
      this.marks.push([e.uuid, String(e.timestamp)]);
      if (this.lines.length >= BATCH_EVENTS || this.bytes >= BATCH_BYTES) await this.flush();
    }
  }

  /** Hands the queued events to the spool, then marks them (and the feed entries) as posted. */
  private async flush(): Promise<void> {
    const lines = this.lines;
    const marks = this.marks;
    this.lines = [];
    this.marks = [];
    this.bytes = 0;
    this.planned = new Map();
    await this.ctx.emitJsonLines(lines);
    this.counts.posted += lines.length;
    const now = Date.now();
    for (const [key, value] of marks) this.seen.mark(key, value, now);
    if (marks.length > 0) this.dirty = true;
  }

  /** Renames or deletes the files done in this scan, once the state saying so is saved after their events are durable. */
  private async afterSpooled(signal: AbortSignal): Promise<void> {
    const saved = this.ctx.checkpoint(this.state());
    this.dirty = false;
    this.lastSave = Date.now();
    // A stop here leaves the files for the next run, which finds them done and finishes them.
    if ((await untilSavedOrStopped(saved, signal)) === "stopped") return;
    for (const file of this.finished) {
      if (signal.aborted) return;
      const mark = this.files[file];
      try {
        if (this.opts.after === "rename") await rename(file, await freeName(`${file}.done`, file));
        else await unlink(file);
        delete this.files[file];
        this.dirty = true;
      } catch (err) {
        if (errCode(err) === "ENOENT") continue;
        const key = `${file}\u0000${mark?.size}:${mark?.mtime}`;
        if (this.actionFailures.has(key)) continue;
        this.actionFailures.add(key);
        this.report(`${file}: its events are posted but it cannot be ${this.opts.after === "rename" ? "renamed" : "deleted"} (${errorMessage(err)})`);
      }
    }
    if (this.dirty) this.save();
  }

  private report(message: string): void {
    this.counts.errors++;
    this.ctx.reportError(new Error(message));
    this.ctx.log.warn("misp_file problem", { error: message });
  }

  private state(): MispFileState {
    return { v: 1, seen: this.seen.toJSON(), files: { ...this.files } };
  }

  private maybeSave(): void {
    if (Date.now() - this.lastSave >= SAVE_EVERY_MS) this.save();
  }

  private save(): void {
    this.dirty = false;
    this.lastSave = Date.now();
    this.ctx.checkpoint(this.state()).catch(() => {
      // The context reports a failed save; the next checkpoint tries again.
    });
  }
}

function untilSavedOrStopped(saved: Promise<void>, signal: AbortSignal): Promise<"saved" | "stopped"> {
  if (signal.aborted) return Promise.resolve("stopped");
  return new Promise((resolve, reject) => {
    const onAbort = () => resolve("stopped");
    signal.addEventListener("abort", onAbort, { once: true });
    saved.then(
      () => resolve("saved"),
      (err) => reject(err),
    ).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** The file's text, or null if it changed while being read (a writer is still at it). */
async function readStable(file: string, before: Stats): Promise<string | null> {
  const bytes = await readFile(file);
  const after = await stat(file);
  if (bytes.byteLength !== before.size || after.size !== before.size || after.mtimeMs !== before.mtimeMs) return null;
  const text = new TextDecoder().decode(bytes);
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/** `wanted` if no file has that name, else `<file>.<n>.done` with the first free n. */
async function freeName(wanted: string, file: string): Promise<string> {
  if (!(await exists(wanted))) return wanted;
  for (let n = 1; ; n++) {
    const name = `${file}.${n}.done`;
    if (!(await exists(name))) return name;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

function statKey(st: Stats): string {
  return `${st.size}:${st.mtimeMs}`;
}

function errCode(err: unknown): string | undefined {
  return (err as { code?: string } | null)?.code;
}
