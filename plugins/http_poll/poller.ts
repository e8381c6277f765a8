// One http_poll input at work: each poll requests the first page, reads its records, posts
// the ones not posted before, follows the next page while there is one, then saves its state
// (seen-set, validators, last poll time) once the posted records are durable.
//
// Conditional GET (If-None-Match / If-Modified-Since) is used only for single-page sources:
// with pages, an unchanged first page says nothing about the others.
// Every poll starts from `url`: a source's position is not carried between polls (dedup
// keeps what was posted from being posted again).
import { z } from "zod";
import { FatalInputError, type InputContext } from "../../agent/plugin.ts";
import { epochMsState, runHttpPolls, validatorsState, warnShortInterval } from "../common/feed.ts";
import { HttpError, takeUserinfo, type HttpClient, type HttpResponse, type Validators } from "../common/http.ts";
import { SeenSet, hashString, seenSetState, stringHash } from "../common/seen.ts";
import { JsonStreamError } from "../common/jsonstream.ts";
import { DecompressError } from "../common/decompress.ts";
import { errorMessage } from "../../agent/errortext.ts";
import type { HttpPollOptions } from "./options.ts";
import { CsvError } from "./csv.ts";
import { Dedup, type DedupMode } from "./dedup.ts";
import { nextLink } from "./paths.ts";
import { FormatError, PageReader, type FormatOptions, type PollRecord } from "./records.ts";

/** The saved state: the input's state schema. */
export const httpPollState = z.strictObject({
  v: z.literal(1),
  /** What the validators and last_poll belong to (URL, method, body, format, records). */
  source: stringHash,
  validators: validatorsState.optional(),
  seen: seenSetState.optional(),
  /** Start of the last successful poll (epoch ms): a restart waits out the interval from it. */
  last_poll: epochMsState.optional(),
});

export type HttpPollState = z.infer<typeof httpPollState>;

const BATCH = 1000;

export class HttpPoller {
  private readonly url: string;
  private readonly origin: string;
  private readonly headers: Record<string, string>;
  /** Names of the headers whose values are secrets: the configured ones and our basic auth. */
  private readonly secretHeaders: string[];
  private readonly secrets: string[];
  private readonly paginated: boolean;
  private readonly format: FormatOptions;
  private readonly source: string;

  constructor(private readonly opts: HttpPollOptions, private readonly ctx: InputContext<HttpPollState>) {
    const target = new URL(opts.url);
    this.headers = { ...opts.headers };
    this.secrets = Object.values(opts.headers);
    this.secretHeaders = Object.keys(opts.headers);
    // URL credentials become a basic-auth header of our own, so that pages reached from a
    // relative link (which carries no userinfo) are sent them too, on the same origin only.
    const userinfo = takeUserinfo(target);
    if (userinfo) {
      this.secrets.push(...userinfo.secrets);
      if (!Object.keys(this.headers).some((k) => k.toLowerCase() === "authorization")) {
        this.headers["Authorization"] = userinfo.authorization;
        this.secretHeaders.push("Authorization");
      }
    }
    if (opts.body !== undefined && !Object.keys(this.headers).some((k) => k.toLowerCase() === "content-type") && looksLikeJson(opts.body)) {
      this.headers["Content-Type"] = "application/json";
    }
    this.url = target.toString();
    this.origin = target.origin;
    this.paginated = opts.next_field !== undefined || opts.next_link_header || opts.page_param !== undefined;
    this.format = {
      format: opts.format,
      records: opts.records?.split("."),
      nextField: opts.next_field,
      whole: this.paginated,
      csvHeader: opts.csv_header,
      csvColumns: opts.csv_columns,
      csvDelimiter: opts.csv_delimiter,
      batchSize: BATCH,
    };
    this.source = hashString(JSON.stringify([this.url, opts.method, opts.body ?? null, opts.format, opts.records ?? null]));
    warnShortInterval(ctx.log, opts.interval, 1000, "interval is under a second: fine for tests, hard on a real API");
  }

  async run(): Promise<void> {
    const { ctx, opts } = this;
    const saved = await ctx.loadState();
    const state: HttpPollState = { v: 1, source: this.source };
    // Validators and the schedule belong to the source asked before: a changed URL, body
    // or format is asked at once and in full.
    if (saved?.source === this.source) {
      if (saved.validators) state.validators = saved.validators;
      if (saved.last_poll !== undefined) state.last_poll = saved.last_poll;
    } else if (saved) {
      ctx.log.info("url, method, body, format or records changed: asking at once and in full (records already posted are not posted again)");
    }
    const seen = SeenSet.from(saved?.seen, { maxEntries: opts.max_seen, ttlMs: opts.dedup_ttl });
    const dedup = new Dedup(this.dedupMode(), seen);
    const firstPollAt = state.last_poll !== undefined ? Math.min(Date.now(), state.last_poll) + opts.interval : undefined;
    await runHttpPolls(ctx, opts, { userAgent: opts.user_agent, secretHeaders: this.secretHeaders, secrets: this.secrets, firstPollAt }, (http, signal) =>
      this.poll(signal, http, dedup, seen, state));
  }

  private dedupMode(): DedupMode {
    const { dedup, dedup_key, format } = this.opts;
    if (!dedup) return { kind: "off" };
    if (dedup_key === undefined || format === "text") return { kind: "content" };
    return { kind: "key", path: dedup_key };
  }

  private async poll(signal: AbortSignal, http: HttpClient, dedup: Dedup, seen: SeenSet, state: HttpPollState) {
    const { opts, ctx } = this;
    const started = Date.now();
    const fetched = new Set<string>();
    let url = this.pageUrl(0);
    let pages = 0;
    let records = 0;
    let posted = 0;
    let marked = false;
    let succeeded = false;
    let notModified = false;
    let note = "";
    try {
      for (;;) {
        fetched.add(url);
        const res = await this.request(http, url, signal, state);
        pages++;
        if (res.notModified) {
          notModified = true;
          state.validators = res.validators;
          break;
        }
        const reader = new PageReader(res.body, this.format);
        let count = 0;
        try {
          if (res.status === 204) await res.cancel();
          else {
            for await (const batch of reader.batches()) {
              count += batch.length;
              const now = Date.now();
              const { fresh, marks } = dedup.select(batch, now);
              await this.emit(fresh);
              dedup.commit(marks, now);
              marked ||= marks.keys.length > 0;
              posted += fresh.length;
            }
          }
        } catch (err) {
          throw this.answerError(err, res);
        }
        records += count;
        if (!this.paginated) {
          if (Object.keys(res.validators).length > 0) state.validators = res.validators;
          else delete state.validators;
          break;
        }
        if (count === 0) break;
        const next = this.nextUrl(pages, res, reader);
        if (next === null) break;
        if (pages >= opts.max_pages) {
          note = `stopped at max_pages (${opts.max_pages})`;
          ctx.log.warn("more pages remain, but max_pages were read in this poll", { max_pages: opts.max_pages });
          break;
        }
        if (fetched.has(next)) {
          note = "the next page repeats an earlier one";
          ctx.log.warn("the next page repeats a page already read in this poll: stopped paging", { url: res.redact(next) });
          break;
        }
        url = next;
      }
      state.last_poll = started;
      succeeded = true;
    } finally {
      if (succeeded || marked) {
        seen.prune(Date.now());
        // A failed save is counted and logged by the context; the next poll saves again.
        ctx.checkpoint({ ...state, seen: seen.toJSON() }).catch(() => {});
      }
    }
    if (notModified) return { status: "not modified" };
    const summary = `${pages} page${pages === 1 ? "" : "s"}, ${records} records, ${posted} new`;
    return { status: note ? `${summary}; ${note}` : summary };
  }

  /** The first URL (n = 0) or, with page_param, the n-th page's. */
  private pageUrl(n: number): string {
    if (this.opts.page_param === undefined) return this.url;
    const u = new URL(this.url);
    u.searchParams.set(this.opts.page_param, String(this.opts.page_start + n));
    return u.toString();
  }

  private async request(http: HttpClient, url: string, signal: AbortSignal, state: HttpPollState): Promise<HttpResponse> {
    const { opts } = this;
    const validators = this.paginated ? undefined : state.validators;
    try {
      // A page on another origin (a link in the answer) gets none of our headers or body,
      // as a redirect would not.
      if (new URL(url).origin !== this.origin) return await http.request(url, { signal });
      return await http.request(url, { method: opts.method, headers: this.headers, body: opts.body, validators, signal });
    } catch (err) {
      if (err instanceof HttpError && err.status === 401) {
        throw new FatalInputError(`${err.message} (the API refuses the credentials: check headers and the URL, then restart the input)`);
      }
      throw err;
    }
  }

  /** The next page after `pages` pages, or null. */
  private nextUrl(pages: number, res: HttpResponse, reader: PageReader): string | null {
    const { opts } = this;
    if (opts.page_param !== undefined) return this.pageUrl(pages);
    let link: string | null = null;
    if (opts.next_link_header) link = nextLink(res.headers.get("link"));
    else {
      const v = reader.nextValue;
      if (typeof v === "string" && v.trim() !== "") link = v.trim();
      else if (v !== undefined && v !== null && v !== "" && v !== false) {
        throw new Error(`${opts.next_field} in the answer from ${res.redact(res.url)} is not a URL (${typeof v})`);
      }
    }
    if (link === null) return null;
    let next: URL;
    try {
      next = new URL(link, res.url);
    } catch {
      throw new Error(`the next page's URL in the answer from ${res.redact(res.url)} is not valid: ${res.redact(link)}`);
    }
    if (next.protocol !== "http:" && next.protocol !== "https:") {
      throw new Error(`the next page's URL in the answer from ${res.redact(res.url)} is not http(s): ${res.redact(link)}`);
    }
    return next.toString();
  }

  private async emit(records: PollRecord[]): Promise<void> {
    const json: string[] = [];
    const text: string[] = [];
    for (const r of records) (r.kind === "json" ? json : text).push(r.text);
    if (json.length > 0) await this.ctx.emitJsonLines(json);
    if (text.length > 0) await this.ctx.emitText(text);
  }

  /** An error while reading an answer, naming the answer when the data is at fault. */
  private answerError(err: unknown, res: HttpResponse): unknown {
    if (err instanceof FormatError || err instanceof JsonStreamError || err instanceof CsvError || err instanceof DecompressError || err instanceof SyntaxError) {
      return new Error(`bad ${this.opts.format} answer from ${res.redact(res.url)}: ${errorMessage(err)}`);
    }
    return err;
  }
}

function looksLikeJson(body: string): boolean {
  const t = body.trim();
  if (!t.startsWith("{") && !t.startsWith("[")) return false;
  try {
    JSON.parse(t);
    return true;
  } catch {
    return false;
  }
}
