// Which records of a poll to post:
// - "content" (no dedup_key): a record is posted when its exact text was not posted within
//   dedup_ttl; a changed record is a new text, so it is posted, an unchanged one is not.
// - "key" (dedup_key): a record is identified by the value at dedup_key and posted when the
//   key is new or its content changed since it was last posted (like PhishTank's records
//   whose fields are updated under the same phish_id). A record without a usable key
//   (absent, null, an object) falls back to its content.
// - "off": everything, every poll (sources that return only new data).
// Every record seen in a poll is marked again, so the TTL counts from the last time the
// source showed it, not from the first.
import { hashString, type SeenSet } from "../common/seen.ts";
import { valueAt } from "./paths.ts";
import type { PollRecord } from "./records.ts";

export type DedupMode = { kind: "off" } | { kind: "content" } | { kind: "key"; path: string };

/** Marks to make once the records are in the spool (so a failed emit never hides a record). */
export interface Marks {
  keys: string[];
  values: string[];
}

export class Dedup {
  constructor(private readonly mode: DedupMode, private readonly seen: SeenSet) {}

  /** The records of `batch` to post, and the marks to commit after posting them. */
  select(batch: readonly PollRecord[], now: number): { fresh: PollRecord[]; marks: Marks } {
    if (this.mode.kind === "off") return { fresh: [...batch], marks: { keys: [], values: [] } };
    const fresh: PollRecord[] = [];
    const keys: string[] = [];
    const values: string[] = [];
    // Within one batch the set is not marked yet: repeats are caught here.
    const inBatch = new Map<string, string>();
    for (const rec of batch) {
      const { key, value } = this.identify(rec);
      keys.push(key);
      values.push(value);
      const before = inBatch.get(key);
      if (before === value) continue;
      if (before === undefined && this.seen.changed(key, value, now) === "same") continue;
      inBatch.set(key, value);
      fresh.push(rec);
    }
    return { fresh, marks: { keys, values } };
  }

  commit(marks: Marks, now: number): void {
    for (let i = 0; i < marks.keys.length; i++) this.seen.mark(marks.keys[i]!, marks.values[i]!, now);
  }

  private identify(rec: PollRecord): { key: string; value: string } {
    if (this.mode.kind === "key" && rec.kind === "json") {
      const k = valueAt(rec.value, this.mode.path);
      if (typeof k === "string" || typeof k === "number" || typeof k === "boolean") {
        return { key: `k:${k}`, value: hashString(rec.text) };
      }
    }
    // The content is the identity; the value says nothing more.
    return { key: `c:${rec.kind}:${hashString(rec.text)}`, value: "" };
  }
}
