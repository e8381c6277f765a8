// A bounded "seen" set for feed inputs: which records were already posted, and with what
// content, so a poll posts only new or changed records.
//
//   const seen = SeenSet.from(state?.seen, { maxEntries: opts.max_entries, ttlMs: opts.dedup_ttl });
//   const fresh = [], hashes = [];
//   for (const rec of records) {
//     const hash = hashString(rec.text);
//     hashes.push(hash);
//     if (seen.changed(rec.id, hash) !== "same") fresh.push(rec.text);
//   }
//   await ctx.emitJsonLines(fresh);                  // mark only once the spool took them
//   records.forEach((rec, i) => seen.mark(rec.id, hashes[i], now));
//   seen.prune(now);
//   void ctx.checkpoint({ ...state, seen: seen.toJSON() });
//
// An input's state schema holds the saved set as `seenSetState`, so a damaged one fails the
// input on load, naming the key, instead of the input posting everything again.
//
// Keys are kept as 64-bit hashes, never as the records or URLs themselves. Values are kept
// as given: pass short ones (a hashString() of the record, a MISP timestamp). Two keys share
// an entry only if their 64-bit hashes collide (about 1 in 10^7 for a million keys).
//
// An entry not marked for `ttlMs` is forgotten: a record that leaves a feed and comes back
// after that is new again. Beyond maxEntries the least recently marked entries are evicted
// (by last-marked second; a 1/16 margin is evicted at once so eviction stays cheap).
//
// The table is open addressing with linear probing over typed arrays (key hash halves and
// last-marked seconds), so 100k entries cost a few MB and load or save in a few ms: the
// saved form is those arrays in base64 plus the values.
import { Buffer } from "node:buffer";
import { z } from "zod";

export type SeenChange = "new" | "changed" | "same";

export interface SeenSetOptions {
  /** Most entries kept. Default 1,000,000. */
  maxEntries?: number;
  /** An entry not marked for this long is forgotten. Default 30 days. */
  ttlMs?: number;
}

/** What toJSON returns and from() reads, in the shape an input's state schema checks on load. */
export type SeenSetJSON = z.infer<typeof seenSetState>;

/** A hashString() result: 12 URL-safe base64 characters. */
export const stringHash = z.string().regex(/^[A-Za-z0-9_-]{12}$/, { message: "expected a 12-character hash" });

const base64Text = z.string().refine((t) => t.length % 4 === 0 && /^[A-Za-z0-9+/]*={0,2}$/.test(t), { message: "expected base64" });

/** Bytes that base64 text (checked by base64Text) decodes to. */
function base64Bytes(text: string): number {
  const pad = text.endsWith("==") ? 2 : text.endsWith("=") ? 1 : 0;
  return (text.length / 4) * 3 - pad;
}

/** The saved form of a SeenSet: the table's arrays in base64, and the values. */
export const seenSetState = z.strictObject({
  v: z.literal(1),
  /** Number of entries. */
  n: z.number().int().nonnegative(),
  /** Key hashes: n × 8 bytes (two little-endian uint32), base64. */
  keys: base64Text,
  /** Last-marked times: n × 4 bytes (little-endian uint32 unix seconds), base64. */
  seen: base64Text,
  /**
   * The values in the same order: when all have the same length (hashString values do),
   * concatenated into one string (quick to parse); otherwise an array.
   */
  values: z.union([z.string(), z.array(z.string())], { error: "expected a string or an array of strings" }),
}).superRefine((j, ctx) => {
  // Runs once the types are right; text that is not base64 is an issue of its own already.
  const mismatch = (key: "keys" | "seen" | "values", found: string) =>
    ctx.addIssue({ code: "custom", path: [key], message: `${j.n} entries but ${found}` });
  if (j.keys.length % 4 === 0 && base64Bytes(j.keys) !== j.n * 8) mismatch("keys", `${base64Bytes(j.keys)} bytes of key hashes (8 each)`);
  if (j.seen.length % 4 === 0 && base64Bytes(j.seen) !== j.n * 4) mismatch("seen", `${base64Bytes(j.seen)} bytes of times (4 each)`);
  const { values } = j;
  if (typeof values !== "string") {
    if (values.length !== j.n) mismatch("values", `${values.length} values`);
  } else if (j.n === 0 ? values.length > 0 : values.length === 0 || values.length % j.n !== 0) {
    // toJSON joins values only when they share a width of one character or more.
    mismatch("values", `${values.length} characters of values (not the same number of one or more each)`);
  }
});

export const DEFAULT_SEEN_MAX_ENTRIES = 1_000_000;
export const DEFAULT_DEDUP_TTL_MS = 30 * 86_400_000;

const MIN_CAPACITY = 16;

export class SeenSet {
  readonly maxEntries: number;
  readonly ttlMs: number;
  private count = 0;
  private mask = MIN_CAPACITY - 1;
  private hi = new Uint32Array(MIN_CAPACITY);
  private lo = new Uint32Array(MIN_CAPACITY);
  private at = new Uint32Array(MIN_CAPACITY);
  /** undefined marks an empty slot. */
  private val: Array<string | undefined> = new Array(MIN_CAPACITY).fill(undefined);

  constructor(opts: SeenSetOptions = {}) {
    this.maxEntries = Math.max(1, Math.floor(opts.maxEntries ?? DEFAULT_SEEN_MAX_ENTRIES));
    this.ttlMs = Math.max(0, opts.ttlMs ?? DEFAULT_DEDUP_TTL_MS);
  }

  get size(): number {
    return this.count;
  }

  /** Whether `key` was marked within the TTL. */
  has(key: string, now = Date.now()): boolean {
    return this.live(key, now) !== -1;
  }

  /** The value last marked for `key` (within the TTL), or undefined. */
  get(key: string, now = Date.now()): string | undefined {
    const i = this.live(key, now);
    return i === -1 ? undefined : this.val[i];
  }

  /** How `value` compares with what was last marked for `key`. Does not mark. */
  changed(key: string, value: string, now = Date.now()): SeenChange {
    const i = this.live(key, now);
    if (i === -1) return "new";
    return this.val[i] === value ? "same" : "changed";
  }

  /** Record `key` as seen at `now` with `value`. */
  mark(key: string, value: string, now = Date.now()): void {
    hash64(key);
    const sec = toSeconds(now);
    const i = this.find(H1, H2);
    if (i !== -1) {
      this.val[i] = value;
      this.at[i] = sec;
      return;
    }
    this.insert(H1, H2, sec, value);
    if (this.count > this.maxEntries) this.evictOldest(this.count - this.maxEntries + (this.maxEntries >> 4));
  }

  delete(key: string): boolean {
    hash64(key);
    const i = this.find(H1, H2);
    if (i === -1) return false;
    this.removeAt(i);
    return true;
  }

  clear(): void {
    this.resize(MIN_CAPACITY, false);
  }

  /** Forget entries not marked within the TTL, and any beyond maxEntries; returns how many went. */
  prune(now = Date.now()): number {
    const before = this.count;
    const cutoff = this.cutoff(now);
    this.removeWhere((i) => this.at[i]! < cutoff);
    if (this.count > this.maxEntries) this.evictOldest(this.count - this.maxEntries);
    return before - this.count;
  }

  toJSON(): SeenSetJSON {
    const n = this.count;
    const keys = new DataView(new ArrayBuffer(n * 8));
    const seen = new DataView(new ArrayBuffer(n * 4));
    const values: string[] = new Array(n);
    let width = -1;
    let k = 0;
    for (let i = 0; i <= this.mask; i++) {
      const v = this.val[i];
      if (v === undefined) continue;
      keys.setUint32(k * 8, this.hi[i]!, true);
      keys.setUint32(k * 8 + 4, this.lo[i]!, true);
      seen.setUint32(k * 4, this.at[i]!, true);
      values[k++] = v;
      if (width === -1) width = v.length;
      else if (width !== v.length) width = -2;
    }
    return {
      v: 1,
      n,
      keys: toBase64(new Uint8Array(keys.buffer)),
      seen: toBase64(new Uint8Array(seen.buffer)),
      values: width > 0 ? values.join("") : values,
    };
  }

  /**
   * The set saved by toJSON(), with these options (a smaller maxEntries drops the oldest);
   * undefined gives an empty set. `json` is as seenSetState checked it (an input's state
   * schema does so when the state is loaded).
   */
  static from(json: SeenSetJSON | undefined, opts: SeenSetOptions = {}): SeenSet {
    const set = new SeenSet(opts);
    if (json !== undefined) set.load(json);
    return set;
  }

  private load(json: SeenSetJSON): void {
    const { n, values } = json;
    const keys = fromBase64(json.keys);
    const seen = fromBase64(json.seen);
    const width = typeof values === "string" && n > 0 ? values.length / n : 0;
    const kv = new DataView(keys.buffer, keys.byteOffset, keys.byteLength);
    const sv = new DataView(seen.buffer, seen.byteOffset, seen.byteLength);
    this.resize(capacityFor(n), false);
    for (let k = 0; k < n; k++) {
      const value = typeof values === "string" ? values.slice(k * width, (k + 1) * width) : values[k]!;
      const h1 = kv.getUint32(k * 8, true);
      const h2 = kv.getUint32(k * 8 + 4, true);
      const sec = sv.getUint32(k * 4, true);
      const i = this.find(h1, h2);
      if (i !== -1) {
        this.val[i] = value;
        this.at[i] = Math.max(this.at[i]!, sec);
      } else {
        this.insert(h1, h2, sec, value);
      }
    }
    if (this.count > this.maxEntries) this.evictOldest(this.count - this.maxEntries);
  }

  /** Slot of `key` if present and within the TTL, else -1. */
  private live(key: string, now: number): number {
    hash64(key);
    const i = this.find(H1, H2);
    return i !== -1 && this.at[i]! >= this.cutoff(now) ? i : -1;
  }

  /** Entries last marked before this second are expired. */
  private cutoff(now: number): number {
    return Math.floor((now - this.ttlMs) / 1000);
  }

  private find(h1: number, h2: number): number {
    const mask = this.mask;
    for (let i = h1 & mask; this.val[i] !== undefined; i = (i + 1) & mask) {
      if (this.hi[i] === h1 && this.lo[i] === h2) return i;
    }
    return -1;
  }

  private insert(h1: number, h2: number, sec: number, value: string): void {
    // Load factor at most 1/2 keeps probe runs short.
    if ((this.count + 1) * 2 > this.mask + 1) this.resize((this.mask + 1) * 2, true);
    const mask = this.mask;
    let i = h1 & mask;
    while (this.val[i] !== undefined) i = (i + 1) & mask;
    this.hi[i] = h1;
    this.lo[i] = h2;
    this.at[i] = sec;
    this.val[i] = value;
    this.count++;
  }

  private resize(capacity: number, keep: boolean): void {
    const { hi, lo, at, val } = this;
    const old = this.mask + 1;
    this.hi = new Uint32Array(capacity);
    this.lo = new Uint32Array(capacity);
    this.at = new Uint32Array(capacity);
    this.val = new Array(capacity).fill(undefined);
    this.mask = capacity - 1;
    this.count = 0;
    if (!keep) return;
    for (let i = 0; i < old; i++) {
      const v = val[i];
      if (v !== undefined) this.insert(hi[i]!, lo[i]!, at[i]!, v);
    }
  }

  /** Linear-probing delete: later entries of the probe run move back, so no tombstones. */
  private removeAt(slot: number): void {
    const mask = this.mask;
    let i = slot;
    let j = slot;
    for (;;) {
      j = (j + 1) & mask;
      if (this.val[j] === undefined) break;
      const home = this.hi[j]! & mask;
      // The entry at j may fill the hole at i if i lies on its probe path (home .. j).
      if (((j - home) & mask) >= ((j - i) & mask)) {
        this.hi[i] = this.hi[j]!;
        this.lo[i] = this.lo[j]!;
        this.at[i] = this.at[j]!;
        this.val[i] = this.val[j];
        i = j;
      }
    }
    this.val[i] = undefined;
    this.count--;
  }

  private removeWhere(test: (slot: number) => boolean, limit = Infinity): void {
    let removed = 0;
    // A removal can move a later entry into slot i, so i is looked at again.
    for (let i = 0; i <= this.mask && removed < limit; ) {
      if (this.val[i] !== undefined && test(i)) {
        this.removeAt(i);
        removed++;
      } else {
        i++;
      }
    }
  }

  /** Remove the `k` least recently marked entries. */
  private evictOldest(k: number): void {
    if (k <= 0) return;
    if (k >= this.count) return this.clear();
    const times = new Uint32Array(this.count);
    let n = 0;
    for (let i = 0; i <= this.mask; i++) if (this.val[i] !== undefined) times[n++] = this.at[i]!;
    times.sort();
    const threshold = times[k - 1]!;
    let older = 0;
    while (older < k && times[older]! < threshold) older++;
    this.removeWhere((i) => this.at[i]! < threshold);
    // Ties at the threshold second: as many as still needed.
    this.removeWhere((i) => this.at[i] === threshold, k - older);
  }
}

function capacityFor(n: number): number {
  let c = MIN_CAPACITY;
  while (c < n * 2) c *= 2;
  return c;
}

function toSeconds(ms: number): number {
  return Math.min(0xffffffff, Math.max(0, Math.floor(ms / 1000)));
}

function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}

function fromBase64(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, "base64"));
}

// ---- hashing -------------------------------------------------------------------------------

/** Results of hash64 (module-level, so hashing allocates nothing). */
let H1 = 0;
let H2 = 0;

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/**
 * Two MurmurHash3-style lanes over the UTF-16 code units taken in pairs (32-bit blocks),
 * with different rotations and constants, mixed with each other at the end; sets H1, H2.
 */
function hash64(s: string): void {
  const len = s.length;
  let h1 = 0x9747b28c ^ len;
  let h2 = 0x5bd1e995 ^ len;
  const pairs = len - 1;
  let i = 0;
  for (; i < pairs; i += 2) {
    let k = s.charCodeAt(i) | (s.charCodeAt(i + 1) << 16);
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h1 ^= k;
    h1 = (h1 << 13) | (h1 >>> 19);
    h1 = (Math.imul(h1, 5) + 0xe6546b64) | 0;
    h2 ^= k;
    h2 = (h2 << 17) | (h2 >>> 15);
    h2 = (Math.imul(h2, 9) + 0x38b34ae5) | 0;
  }
  if (i < len) {
    let k = s.charCodeAt(i);
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h1 ^= k;
    h2 ^= Math.imul(k, 0x85ebca6b);
  }
  h1 = fmix32(h1 ^ h2);
  h2 = fmix32((h2 + h1) | 0);
  h1 = (h1 + h2) | 0;
  H1 = h1 >>> 0;
  H2 = h2 >>> 0;
}

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B64_CODES = Array.from(B64, (c) => c.charCodeAt(0));

/**
 * A 64-bit hash of a string as 12 URL-safe characters, stable across runs and runtimes (it
 * is persisted). Not cryptographic: for dedup of record contents, not against adversaries.
 * Plain JS with Math.imul: about a microsecond for a 500-character record.
 */
export function hashString(s: string): string {
  hash64(s);
  const c = B64_CODES;
  const a = H1;
  const b = H2;
  // One fromCharCode call gives a flat string; concatenating characters would give a rope
  // that every later join or comparison has to flatten.
  return String.fromCharCode(
    c[(a >>> 30) & 63]!, c[(a >>> 24) & 63]!, c[(a >>> 18) & 63]!, c[(a >>> 12) & 63]!, c[(a >>> 6) & 63]!, c[a & 63]!,
    c[(b >>> 30) & 63]!, c[(b >>> 24) & 63]!, c[(b >>> 18) & 63]!, c[(b >>> 12) & 63]!, c[(b >>> 6) & 63]!, c[b & 63]!,
  );
}
