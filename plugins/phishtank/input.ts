// One running `phishtank` input: the poll loop, the dump diff and the persisted state.
//
// A poll downloads the dump (conditional GET), streams it through the decompressor and the
// JSON array reader, and compares each record with the seen-set (phish_id -> hash of the
// record's text): new or changed records are posted as they are, in batches of 1000, and
// every record in the dump is marked as present. Only once the whole dump was read are the
// validators (ETag / Last-Modified) replaced, and the state is saved once the spool holds
// what was posted.
import type { InputContext } from "../../agent/plugin.ts";
import { runHttpPolls, warnShortInterval, WholeFeed, type FeedState } from "../common/feed.ts";
import { HttpError, type HttpClient, type HttpResponse, type Validators } from "../common/http.ts";
import { redactText } from "../../agent/redact.ts";
import { jsonArrayBatches, type JsonElement } from "../common/jsonstream.ts";
import { WaitError } from "../common/poll.ts";
import { hashString } from "../common/seen.ts";
import type { PhishtankOptions } from "./options.ts";

export type PhishtankState = FeedState;

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
  private readonly secrets: string[];
  private feed!: WholeFeed;

  constructor(
    private readonly opts: PhishtankOptions,
    private readonly ctx: InputContext<PhishtankState>,
  ) {
    this.url = opts.url ?? defaultDumpUrl(opts.app_key);
    this.secrets = opts.app_key ? [opts.app_key, encodeURIComponent(opts.app_key)] : [];
  }

  async run(): Promise<void> {
    const { ctx, opts } = this;
    warnShortInterval(ctx.log, opts.interval, HOUR,
      "interval is under an hour: PhishTank rebuilds the dump hourly and answers 509 to clients that fetch it more often");
    this.feed = new WholeFeed(ctx, await ctx.loadState(), { source: hashString(this.url), maxSeen: opts.max_seen, ttlMs: opts.dedup_ttl });
    ctx.setDetail({ url: redactText(this.url, this.secrets), remembered: this.feed.seen.size });
    await runHttpPolls(ctx, opts, { userAgent: `phishtank/${opts.username}`, secrets: this.secrets }, (http, signal) => this.poll(http, signal));
  }

  private async poll(http: HttpClient, signal: AbortSignal): Promise<string> {
    const { ctx } = this;
    const counts: PollCounts = { records: 0, new: 0, changed: 0, skipped: 0 };
    const read = await this.feed.read(signal, {
      request: (validators) => this.request(http, validators, signal),
      batches: (res) => jsonArrayBatches(res.body, { batchSize: BATCH, parse: false }),
      post: async (batch, started) => {
        const { post, keys, hashes } = this.diff(batch, started, counts);
        if (post.length > 0) await ctx.emitJsonLines(post);
        for (let i = 0; i < keys.length; i++) this.feed.seen.mark(keys[i]!, hashes[i]!, started);
        return post.length;
      },
    });
    if (!read.read) return read.status;
    const { seen } = this.feed;
    const ms = Date.now() - read.started;
    ctx.setDetail({ records: counts.records, posted_new: counts.new, posted_changed: counts.changed, skipped: counts.skipped, remembered: seen.size });
    ctx.log.info("dump read", { ...counts, remembered: seen.size, compression: read.res.compression, ms });
    const skipped = counts.skipped > 0 ? `, ${counts.skipped} skipped` : "";
    return `${counts.records} records: ${counts.new} new, ${counts.changed} changed${skipped}`;
  }

  private async request(http: HttpClient, validators: Validators | null, signal: AbortSignal): Promise<HttpResponse> {
    try {
      return await http.request(this.url, { signal, validators });
    } catch (err) {
      // PhishTank's "bandwidth exceeded" rarely says for how long: wait an interval, at least an hour.
      if (err instanceof HttpError && err.status === 509 && err.waitMs === null) {
        throw new WaitError(err.message, Math.max(this.opts.interval, HOUR));
      }
      throw err;
    }
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
      const change = this.feed.seen.changed(id, hash, now);
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
