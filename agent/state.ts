// Per-input persisted state (file offsets, feed cursors, seen-sets): one JSON file per key under
// <data_dir>/state, replaced atomically (write a temp file, fsync, rename, fsync the directory),
// so a crash leaves either the old or the new state, never a mix.
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { errorMessage } from "./errortext.ts";
import { isNoSpace } from "./fserrors.ts";

const SUFFIX = ".json";

/**
 * File name for a key: letters, digits, "_", "-" and "." stay; everything else becomes %XX of
 * its UTF-8 bytes (so decodeURIComponent reverses it). A leading "." is escaped too, so no key
 * maps to a hidden file, "." or "..".
 */
export function keyToFileName(key: string): string {
  let out = "";
  const bytes = new TextEncoder().encode(key);
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    const c = String.fromCharCode(b);
    const plain = b < 0x80 && /[A-Za-z0-9_-]/.test(c) || (c === "." && i > 0);
    out += plain ? c : "%" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out + SUFFIX;
}

export function fileNameToKey(name: string): string | undefined {
  if (!name.endsWith(SUFFIX) || name.startsWith(".")) return undefined;
  try {
    return decodeURIComponent(name.slice(0, -SUFFIX.length));
  } catch {
    return undefined;
  }
}

interface KeyQueue {
  /** The operation running now. */
  running: Promise<void>;
  /** The latest value waiting to be written after it (older waiting values are superseded). */
  pending: { op: { kind: "save"; value: string } | { kind: "delete" }; waiters: Array<{ resolve: () => void; reject: (e: unknown) => void }> } | null;
}

let tmpCounter = 0;

/** A temp file of an atomic write (`<key>.json.tmp-<pid>-<n>`): one a crash left is removed at start. */
export const STATE_TEMP_FILE = /\.json\.tmp-\d+-\d+$/;

export class StateStore {
  private readonly queues = new Map<string, KeyQueue>();
  private dirReady: Promise<void> | null = null;

  /**
   * `freeSpace` is asked when a save finds the disk full; when it frees some (the agent's
   * reserve file), the save is tried once more at once.
   */
  constructor(readonly dir: string, private readonly freeSpace?: () => Promise<boolean>) {}

  fileFor(key: string): string {
    if (key.length === 0) throw new Error("state key must not be empty");
    return path.join(this.dir, keyToFileName(key));
  }

  async load<T = unknown>(key: string): Promise<T | undefined> {
    const file = this.fileFor(key);
    let text: string;
    try {
      text = await fsp.readFile(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new Error(`cannot read state file ${file}: ${errorMessage(err)}`);
    }
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw new Error(`state file ${file} is corrupt (${errorMessage(err)}); delete it to start this input afresh`);
    }
  }

  /** Atomically replace the key's state. Calls for one key never interleave; the latest value wins. */
  save(key: string, value: unknown): Promise<void> {
    const text = JSON.stringify(value);
    if (text === undefined) return Promise.reject(new TypeError(`state for "${key}" is not JSON-serialisable`));
    return this.enqueue(key, { kind: "save", value: text });
  }

  delete(key: string): Promise<void> {
    return this.enqueue(key, { kind: "delete" });
  }

  async keys(): Promise<string[]> {
    let names: string[];
    try {
      names = await fsp.readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    const keys: string[] = [];
    for (const name of names) {
      const key = fileNameToKey(name);
      if (key !== undefined) keys.push(key);
    }
    return keys.sort();
  }

  private enqueue(key: string, op: { kind: "save"; value: string } | { kind: "delete" }): Promise<void> {
    const file = this.fileFor(key);
    const q = this.queues.get(key);
    if (q === undefined) {
      const entry: KeyQueue = { running: Promise.resolve(), pending: null };
      this.queues.set(key, entry);
      const p = this.perform(file, op);
      entry.running = p.then(() => this.next(key, file), () => this.next(key, file));
      return p;
    }
    return new Promise<void>((resolve, reject) => {
      // A value still waiting is superseded: its callers resolve when the newer one is written.
      if (q.pending) {
        q.pending.op = op;
        q.pending.waiters.push({ resolve, reject });
      } else {
        q.pending = { op, waiters: [{ resolve, reject }] };
      }
    });
  }

  private next(key: string, file: string): void {
    const q = this.queues.get(key)!;
    const pending = q.pending;
    if (pending === null) {
      this.queues.delete(key);
      return;
    }
    q.pending = null;
    const p = this.perform(file, pending.op);
    p.then(
      () => { for (const w of pending.waiters) w.resolve(); },
      (err) => { for (const w of pending.waiters) w.reject(err); },
    );
    q.running = p.then(() => this.next(key, file), () => this.next(key, file));
  }

  private perform(file: string, op: { kind: "save"; value: string } | { kind: "delete" }): Promise<void> {
    return op.kind === "save" ? this.writeAtomic(file, op.value) : this.remove(file);
  }

  private ensureDir(): Promise<void> {
    this.dirReady ??= fsp.mkdir(this.dir, { recursive: true }).then(() => {}, (err) => {
      this.dirReady = null;
      throw err;
    });
    return this.dirReady;
  }

  private async writeAtomic(file: string, text: string): Promise<void> {
    try {
      await this.writeAtomicOnce(file, text);
    } catch (err) {
      if (!isNoSpace(err) || !(await this.freeSpace?.())) throw err;
      await this.writeAtomicOnce(file, text);
    }
  }

  private async writeAtomicOnce(file: string, text: string): Promise<void> {
    await this.ensureDir();
    const tmp = `${file}.tmp-${process.pid}-${++tmpCounter}`; // STATE_TEMP_FILE matches it
    try {
      const fh = await fsp.open(tmp, "w", 0o600);
      try {
        await fh.writeFile(text, "utf8");
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fsp.rename(tmp, file);
    } catch (err) {
      await fsp.unlink(tmp).catch(() => {});
      // The code stays: a full disk (ENOSPC) is waited out by the caller, not a failure.
      throw Object.assign(new Error(`cannot save state file ${file}: ${errorMessage(err)}`), { code: (err as NodeJS.ErrnoException).code });
    }
    await this.syncDir();
  }

  private async remove(file: string): Promise<void> {
    try {
      await fsp.unlink(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw new Error(`cannot delete state file ${file}: ${errorMessage(err)}`);
    }
    await this.syncDir();
  }

  /** Make the rename or unlink itself durable. */
  private async syncDir(): Promise<void> {
    const dh = await fsp.open(this.dir, "r");
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  }
}
