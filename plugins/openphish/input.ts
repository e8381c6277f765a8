// One running `openphish` input: the poll loop, the URL dedup and the persisted state.
//
// A poll downloads the feed (conditional GET) and reads it line by line. Each URL not in the
// seen-set is posted (text format: the URL as a text event; jsonl: the line's JSON object as
// it is, keyed by its "url"), and every URL in the feed is marked as present, so one that
// leaves the feed is forgotten dedup_ttl later. Only once the whole feed was read are the
// validators (ETag / Last-Modified) replaced, and the state is saved once the spool holds
// what was posted.
import type { InputContext } from "../../agent/plugin.ts";
import { runHttpPolls, warnShortInterval, WholeFeed, type FeedState } from "../common/feed.ts";
import { basicAuth, type HttpClient, type HttpResponse, type Validators } from "../common/http.ts";
import { errorMessage } from "../../agent/errortext.ts";
import { redactText } from "../../agent/redact.ts";
import { hashString } from "../common/seen.ts";
import { DEFAULT_FEED_URL, type OpenphishOptions } from "./options.ts";
import { lineBatches, type Line } from "./lines.ts";

export type OpenphishState = FeedState;

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
  private readonly secrets: string[];
  private readonly headers: Record<string, string> = {};
  private feed!: WholeFeed;

  constructor(
    private readonly opts: OpenphishOptions,
    private readonly ctx: InputContext<OpenphishState>,
  ) {
    this.secrets = opts.password ? [opts.password] : [];
    if (opts.username !== undefined && opts.password !== undefined) {
      this.headers.authorization = basicAuth(opts.username, opts.password);
    }
  }

  async run(): Promise<void> {
    const { ctx, opts } = this;
    const premium = opts.username !== undefined;
    warnShortInterval(ctx.log, opts.interval, premium ? PREMIUM_MIN_INTERVAL : HOUR,
      premium ? "interval is under 5 minutes: the premium feed changes no faster" : "interval is under an hour: OpenPhish asks the public feed to be fetched at most hourly");
    if (opts.format === "jsonl" && opts.url === DEFAULT_FEED_URL) {
      ctx.log.warn("format is jsonl but url is the public text feed: set url to your premium feed");
    }
    this.feed = new WholeFeed(ctx, await ctx.loadState(), { source: hashString(opts.url), maxSeen: opts.max_seen, ttlMs: opts.dedup_ttl });
    ctx.setDetail({ url: redactText(opts.url, this.secrets), remembered: this.feed.seen.size });
    await runHttpPolls(ctx, opts, { headers: this.headers, secrets: this.secrets }, (http, signal) => this.poll(http, signal));
  }

  private async poll(http: HttpClient, signal: AbortSignal): Promise<string> {
    const { ctx, opts } = this;
    const counts: PollCounts = { lines: 0, new: 0, skipped: 0 };
    const read = await this.feed.read(signal, {
      request: (validators) => this.request(http, validators, signal),
      batches: (res) => lineBatches(res.body, BATCH, MAX_LINE_CHARS),
      post: (batch, started) => this.post(batch, started, counts),
    });
    if (!read.read) return read.status;
    const { seen } = this.feed;
    ctx.setDetail({ feed_lines: counts.lines, posted_new: counts.new, skipped: counts.skipped, remembered: seen.size });
    ctx.log.info("feed read", { ...counts, remembered: seen.size, ms: Date.now() - read.started });
    const skipped = counts.skipped > 0 ? `, ${counts.skipped} skipped` : "";
    return `${counts.lines} lines: ${counts.new} new${skipped}`;
  }

  private async request(http: HttpClient, validators: Validators | null, signal: AbortSignal): Promise<HttpResponse> {
    const res = await http.request(this.opts.url, { signal, validators });
    // An error or login page served with 200 (a proxy, an expired subscription) is not the feed.
    if (!res.notModified && /^\s*text\/html\b/i.test(res.headers.get("content-type") ?? "")) {
      await res.cancel();
      throw new Error(`${redactText(res.url, this.secrets)} answered with an HTML page, not the feed`);
    }
    return res;
  }

  /** Posts the batch's URLs not seen before, then marks every URL in it as present. */
  private async post(batch: Line[], started: number, counts: PollCounts): Promise<number> {
    const { ctx, opts } = this;
    const { seen } = this.feed;
    const jsonl = opts.format === "jsonl";
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
    }
    for (const key of keys) seen.mark(key, PRESENT, started);
    return events.length;
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
      return this.skip(counts, `line ${line.no} of the feed is not valid JSON (${errorMessage(err)})`);
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
}
