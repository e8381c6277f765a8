// One running `openphish` input: the poll loop, the URL dedup and the persisted state.
//
// A poll downloads the feed (conditional GET) and reads it line by line. Each URL not in the
// seen-set is posted (text format: the URL as a text event; jsonl: the line's JSON object as
// it is, keyed by its "url"), and every URL in the feed is marked as present, so one that
// leaves the feed is forgotten dedup_ttl later. Only once the whole feed was read are the
// validators (ETag / Last-Modified) replaced, and the state is saved once the spool holds
// what was posted.
import type { InputContext } from "../../agent/plugin.ts";
import { HttpClient, redactText, type Validators } from "../../agent/helpers/http.ts";
import { runPolls } from "../../agent/helpers/poll.ts";
import { hashString, SeenSet, type SeenSetJSON } from "../../agent/helpers/seen.ts";
import type { OpenphishOptions } from "./index.ts";
import { lineBatches, type Line } from "./lines.ts";

export interface OpenphishState {
  v: 1;
  /** hashString of the URL the validators belong to. */
  source: string;
  validators?: Validators;
  /** When the feed was last read in full (epoch ms). */
  full_at?: number;
  seen?: SeenSetJSON;
}

export const DEFAULT_FEED_URL = "https://openphish.com/feed.txt";

const HOUR = 3_600_000;
const PREMIUM_MIN_INTERVAL = 5 * 60_000;
const BATCH = 1000;
/** A feed line longer than this is not a URL or a record: skipped and counted. */
const MAX_LINE_CHARS = 1 << 20;
/** Skipped lines named in the log per poll (the rest are only counted). */
const SKIPS_LOGGED = 3;
/** What a line of the text feed must look like: a URL with a scheme and no blanks. */
const URL_LINE = /^[a-z][a-z0-9+.-]*:\/\/\S+$/i;
/** The seen-set's value: URLs are posted once, whatever their premium record says later. */
const PRESENT = "1";

interface PollCounts {
  lines: number;
  new: number;
  skipped: number;
}

export class OpenphishInput {
  private readonly source: string;
  private readonly secrets: string[];
  private readonly headers: Record<string, string> = {};
  private seen!: SeenSet;
  private validators: Validators | undefined;
  private fullAt: number | undefined;
  /** Set once run() returns: a poll left behind at stop must not save state any more. */
  private stopped = false;

  constructor(
    private readonly opts: OpenphishOptions,
    private readonly ctx: InputContext<OpenphishState>,
  ) {
    this.source = hashString(opts.url);
    this.secrets = opts.password ? [opts.password] : [];
    if (opts.username !== undefined && opts.password !== undefined) {
      this.headers.authorization = `Basic ${base64(`${opts.username}:${opts.password}`)}`;
    }
  }

  async run(): Promise<void> {
    const { ctx, opts } = this;
    const premium = opts.username !== undefined;
    const advised = premium ? PREMIUM_MIN_INTERVAL : HOUR;
    if (opts.interval < advised) {
      ctx.log.warn(premium ? "interval is under 5 minutes: the premium feed changes no faster" : "interval is under an hour: OpenPhish asks the public feed to be fetched at most hourly", {
        interval_ms: opts.interval,
      });
    }
    if (opts.format === "jsonl" && opts.url === DEFAULT_FEED_URL) {
      ctx.log.warn("format is jsonl but url is the public text feed: set url to your premium feed");
    }
    const saved = await ctx.loadState();
    this.seen = SeenSet.from(saved?.seen, {
      maxEntries: opts.max_seen,
      ttlMs: opts.dedup_ttl,
      onInvalid: (reason) => ctx.log.warn(reason),
    });
    // Validators are worth sending only for the same URL and with the URLs they cover.
    if (saved?.source === this.source && saved.seen && this.seen.size > 0) {
      this.validators = saved.validators;
      this.fullAt = saved.full_at;
    }
    ctx.setDetail({ url: redactText(opts.url, this.secrets), remembered: this.seen.size });
    const http = new HttpClient({
      timeoutMs: opts.timeout,
      headers: this.headers,
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

  private async poll(http: HttpClient, signal: AbortSignal): Promise<string> {
    const { ctx, opts, seen } = this;
    const started = Date.now();
    // Every URL in the feed is marked on each full read, so a feed that stays "not
    // modified" for long would let its URLs expire: read it in full now and then.
    const fresh = this.fullAt !== undefined && started - this.fullAt < opts.dedup_ttl / 2;
    const res = await http.request(opts.url, { signal, validators: fresh ? this.validators : null });
    if (res.notModified) {
      if (!sameValidators(res.validators, this.validators)) {
        this.validators = res.validators;
        this.save();
      }
      return "not modified";
    }

    // An error or login page served with 200 (a proxy, an expired subscription) is not the feed.
    if (/^\s*text\/html\b/i.test(res.headers.get("content-type") ?? "")) {
      await res.cancel();
      throw new Error(`${redactText(res.url, this.secrets)} answered with an HTML page, not the feed`);
    }
    const counts: PollCounts = { lines: 0, new: 0, skipped: 0 };
    const jsonl = opts.format === "jsonl";
    let posted = false;
    try {
      for await (const batch of lineBatches(res.body, BATCH, MAX_LINE_CHARS)) {
        const keys: string[] = [];
        const events: string[] = [];
        let postedHere: Set<string> | undefined;
        for (const line of batch) {
          counts.lines++;
          const rec = jsonl ? this.premiumRecord(line, counts) : this.textRecord(line, counts);
          if (rec === undefined) continue;
          keys.push(rec.key);
          if (seen.has(rec.key, started)) continue;
          // A feed listing one URL twice posts it once.
          postedHere ??= new Set();
          if (postedHere.has(rec.key)) continue;
          postedHere.add(rec.key);
          counts.new++;
          events.push(rec.event);
        }
        if (events.length > 0) {
          if (jsonl) await ctx.emitJsonLines(events);
          else await ctx.emitText(events);
          posted = true;
        }
        for (const key of keys) seen.mark(key, PRESENT, started);
        if (signal.aborted) break;
      }
    } catch (err) {
      // What was posted is marked: keep that even though the feed was not read to its end.
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
    ctx.setDetail({ feed_lines: counts.lines, posted_new: counts.new, skipped: counts.skipped, remembered: seen.size });
    ctx.log.info("feed read", { ...counts, remembered: seen.size, ms: Date.now() - started });
    const skipped = counts.skipped > 0 ? `, ${counts.skipped} skipped` : "";
    return `${counts.lines} lines: ${counts.new} new${skipped}`;
  }

  private textRecord(line: Line, counts: PollCounts): { key: string; event: string } | undefined {
    if (line.text === null) return this.skip(counts, `line ${line.no} of the feed is longer than ${MAX_LINE_CHARS} characters`);
    if (!URL_LINE.test(line.text)) return this.skip(counts, `line ${line.no} of the feed is not a URL`);
    return { key: line.text, event: line.text };
  }

  /** A premium line: the JSON object as it is, keyed by its "url". */
  private premiumRecord(line: Line, counts: PollCounts): { key: string; event: string } | undefined {
    if (line.text === null) return this.skip(counts, `line ${line.no} of the feed is longer than ${MAX_LINE_CHARS} characters`);
    let value: unknown;
    try {
      value = JSON.parse(line.text);
    } catch (err) {
      return this.skip(counts, `line ${line.no} of the feed is not valid JSON (${err instanceof Error ? err.message : String(err)})`);
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      return this.skip(counts, `line ${line.no} of the feed is not a JSON object`);
    }
    const url = (value as { url?: unknown }).url;
    if (typeof url !== "string" || url.length === 0) return this.skip(counts, `line ${line.no} of the feed has no "url"`);
    return { key: url, event: line.text };
  }

  private skip(counts: PollCounts, why: string): undefined {
    counts.skipped++;
    const message = redactText(why, this.secrets);
    this.ctx.reportError(new Error(message));
    if (counts.skipped <= SKIPS_LOGGED) this.ctx.log.warn("feed line skipped", { reason: message });
    return undefined;
  }

  /** Checkpoint the state as it is now (saved once the spool holds what was posted). */
  private save(): void {
    if (this.stopped) return;
    const state: OpenphishState = { v: 1, source: this.source, seen: this.seen.toJSON() };
    if (this.validators && (this.validators.etag || this.validators.lastModified)) state.validators = { ...this.validators };
    if (this.fullAt !== undefined) state.full_at = this.fullAt;
    // A failed save is counted and logged by the context; the next poll saves again.
    this.ctx.checkpoint(state).catch(() => {});
  }
}

function sameValidators(a: Validators | undefined, b: Validators | undefined): boolean {
  return (a?.etag ?? null) === (b?.etag ?? null) && (a?.lastModified ?? null) === (b?.lastModified ?? null);
}

function base64(s: string): string {
  const bytes = new TextEncoder().encode(s);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}
