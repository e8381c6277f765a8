// One running `phishtank` input: the poll loop, the dump diff and the persisted state.
//
// A poll downloads the dump (conditional GET), streams it through the decompressor and the
// JSON array reader, and compares each record with the seen-set (phish_id -> hash of the
// record's text): new or changed records are posted as they are, in batches of 1000, and
// every record in the dump is marked as present. Only once the whole dump was read are the
// validators (ETag / Last-Modified) replaced, and the state is saved once the spool holds
// what was posted.
import type { InputContext } from "../../agent/plugin.ts";
import { HttpClient, HttpError, redactText, type Validators } from "../../agent/helpers/http.ts";
import { jsonArrayBatches, type JsonElement } from "../../agent/helpers/jsonstream.ts";
import { runPolls, WaitError } from "../../agent/helpers/poll.ts";
import { hashString, SeenSet, type SeenSetJSON } from "../../agent/helpers/seen.ts";
import type { PhishtankOptions } from "./index.ts";

export interface PhishtankState {
  v: 1;
  /** hashString of the URL the validators belong to (the URL itself may hold the app key). */
  source: string;
  validators?: Validators;
  /** When the dump was last read in full (epoch ms). */
  full_at?: number;
  seen?: SeenSetJSON;
}

const HOUR = 3_600_000;
const BATCH = 1000;
/** Skipped records named in the log per poll (the rest are only counted). */
const SKIPS_LOGGED = 3;

export function defaultDumpUrl(appKey?: string): string {
  return appKey
    ? `http://data.phishtank.com/data/${encodeURIComponent(appKey)}/online-valid.json.bz2`
    : "http://data.phishtank.com/data/online-valid.json.bz2";
}

interface PollCounts {
  records: number;
  new: number;
  changed: number;
  skipped: number;
}

export class PhishtankInput {
  private readonly url: string;
  private readonly source: string;
  private readonly secrets: string[];
  private seen!: SeenSet;
  private validators: Validators | undefined;
  private fullAt: number | undefined;
  /** Set once run() returns: a poll left behind at stop must not save state any more. */
  private stopped = false;

  constructor(
    private readonly opts: PhishtankOptions,
    private readonly ctx: InputContext<PhishtankState>,
  ) {
    this.url = opts.url ?? defaultDumpUrl(opts.app_key);
    this.source = hashString(this.url);
    this.secrets = opts.app_key ? [opts.app_key, encodeURIComponent(opts.app_key)] : [];
  }

  async run(): Promise<void> {
    const { ctx, opts } = this;
    if (opts.interval < HOUR) {
      ctx.log.warn("interval is under an hour: PhishTank rebuilds the dump hourly and answers 509 to clients that fetch it more often", {
        interval_ms: opts.interval,
      });
    }
    const saved = await ctx.loadState();
    this.seen = SeenSet.from(saved?.seen, {
      maxEntries: opts.max_seen,
      ttlMs: opts.dedup_ttl,
      onInvalid: (reason) => ctx.log.warn(reason),
    });
    // Validators are worth sending only for the same URL and with the records they cover.
    if (saved?.source === this.source && saved.seen && this.seen.size > 0) {
      this.validators = saved.validators;
      this.fullAt = saved.full_at;
    }
    ctx.setDetail({ url: this.display(this.url), remembered: this.seen.size });
    const http = new HttpClient({
      timeoutMs: opts.timeout,
      userAgent: `phishtank/${opts.username}`,
      secrets: this.secrets,
      tlsVerify: opts.tls_verify,
      caFile: opts.ca_file,
      log: ctx.log,
    });
    try {
      await runPolls(ctx, { intervalMs: opts.interval, secrets: this.secrets }, (signal) => this.poll(http, signal));
    } finally {
      this.stopped = true;
      http.close();
    }
  }

  private display(text: string): string {
    return redactText(text, this.secrets);
  }

  private async poll(http: HttpClient, signal: AbortSignal): Promise<string> {
    const { ctx, opts, seen } = this;
    const started = Date.now();
    // Every record in the dump is marked on each full read, so a dump that stays "not
    // modified" for long would let its records expire: read it in full now and then.
    const fresh = this.fullAt !== undefined && started - this.fullAt < opts.dedup_ttl / 2;
    let res;
    try {
      res = await http.request(this.url, { signal, validators: fresh ? this.validators : null });
    } catch (err) {
      // PhishTank's "bandwidth exceeded" rarely says for how long: wait an interval, at least an hour.
      if (err instanceof HttpError && err.status === 509 && err.waitMs === null) {
        throw new WaitError(err.message, Math.max(opts.interval, HOUR));
      }
      throw err;
    }
    if (res.notModified) {
      if (!sameValidators(res.validators, this.validators)) {
        this.validators = res.validators;
        this.save();
      }
      return "not modified";
    }

    const counts: PollCounts = { records: 0, new: 0, changed: 0, skipped: 0 };
    let posted = false;
    try {
      for await (const batch of jsonArrayBatches(res.body, { batchSize: BATCH, parse: false })) {
        const { post, keys, hashes } = this.diff(batch, started, counts);
        if (post.length > 0) {
          await ctx.emitJsonLines(post);
          posted = true;
        }
        for (let i = 0; i < keys.length; i++) seen.mark(keys[i]!, hashes[i]!, started);
        if (signal.aborted) break;
      }
    } catch (err) {
      // What was posted is marked: keep that even though the dump was not read to its end.
      if (posted) this.save();
      throw err;
    }
    if (signal.aborted) {
      if (posted) this.save();
      return "stopped";
    }
    seen.prune(started);
    this.validators = res.validators;
    this.fullAt = started;
    this.save();
    const ms = Date.now() - started;
    ctx.setDetail({ records: counts.records, posted_new: counts.new, posted_changed: counts.changed, skipped: counts.skipped, remembered: seen.size });
    ctx.log.info("dump read", { ...counts, remembered: seen.size, compression: res.compression, ms });
    const skipped = counts.skipped > 0 ? `, ${counts.skipped} skipped` : "";
    return `${counts.records} records: ${counts.new} new, ${counts.changed} changed${skipped}`;
  }

  /**
   * The batch compared with the seen-set: the texts to post (new or changed records), and
   * the phish_id and hash of every valid record, to mark once the posted ones are spooled.
   */
  private diff(batch: JsonElement[], now: number, counts: PollCounts): { post: string[]; keys: string[]; hashes: string[] } {
    const post: string[] = [];
    const keys: string[] = [];
    const hashes: string[] = [];
    let postedHere: Set<string> | undefined;
    for (const el of batch) {
      counts.records++;
      // Most records are as they were last hour: those are recognised by the hash of their
      // text and never parsed (a record whose text was posted was checked then).
      let value: unknown = NOT_PARSED;
      let id = leadingPhishId(el.text);
      if (id === undefined) id = phishId((value = parse(el.text)));
      if (id === undefined) {
        this.skip(counts, `the record at byte ${el.offset} of the dump is ${value === INVALID ? "not valid JSON" : "not an object with a phish_id"}`);
        continue;
      }
      const hash = hashString(el.text);
      const change = this.seen.changed(id, hash, now);
      if (change !== "same") {
        if (value === NOT_PARSED) value = parse(el.text);
        if (typeof value !== "object" || value === null || Array.isArray(value)) {
          this.skip(counts, `the record at byte ${el.offset} of the dump is ${value === INVALID ? "not valid JSON" : "not an object"}`);
          continue;
        }
      }
      keys.push(id);
      hashes.push(hash);
      if (change === "same") continue;
      // A dump listing one record twice posts it once.
      postedHere ??= new Set();
      const both = `${id}\n${hash}`;
      if (postedHere.has(both)) continue;
      postedHere.add(both);
      if (change === "new") counts.new++;
      else counts.changed++;
      post.push(el.text);
    }
    return { post, keys, hashes };
  }

  private skip(counts: PollCounts, why: string): void {
    counts.skipped++;
    this.ctx.reportError(new Error(why));
    if (counts.skipped <= SKIPS_LOGGED) this.ctx.log.warn("record skipped", { reason: why });
  }

  /** Checkpoint the state as it is now (saved once the spool holds what was posted). */
  private save(): void {
    if (this.stopped) return;
    const state: PhishtankState = { v: 1, source: this.source, seen: this.seen.toJSON() };
    if (this.validators && (this.validators.etag || this.validators.lastModified)) state.validators = { ...this.validators };
    if (this.fullAt !== undefined) state.full_at = this.fullAt;
    // A failed save is counted and logged by the context; the next poll saves again.
    this.ctx.checkpoint(state).catch(() => {});
  }
}

const NOT_PARSED = Symbol("not parsed");
const INVALID = Symbol("invalid JSON");

function parse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return INVALID;
  }
}

// PhishTank writes phish_id first. Only plain ids are read this way, so the key is the one
// phishId() would give for the parsed record.
const LEADING_ID = /^\{\s*"phish_id"\s*:\s*(?:"([0-9A-Za-z_.-]+)"|(0|[1-9]\d{0,14}))\s*[,}]/;

/** The phish_id of a record whose text starts with it, without parsing the record. */
function leadingPhishId(text: string): string | undefined {
  const m = LEADING_ID.exec(text);
  return m ? (m[1] ?? m[2]) : undefined;
}

/** The record's phish_id as a string (PhishTank sends strings; numbers are accepted too). */
function phishId(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const id = (value as { phish_id?: unknown }).phish_id;
  if (typeof id === "string" && id.length > 0) return id;
  if (typeof id === "number" && Number.isFinite(id)) return String(id);
  return undefined;
}

function sameValidators(a: Validators | undefined, b: Validators | undefined): boolean {
  return (a?.etag ?? null) === (b?.etag ?? null) && (a?.lastModified ?? null) === (b?.lastModified ?? null);
}
