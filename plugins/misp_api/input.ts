// One running `misp_api` input: the poll loop, the timestamp cursor and the seen-set.
//
// A poll asks POST {url}/events/restSearch for the events with `timestamp` >= the cursor
// (MISP's filter is an inclusive "from"), page 1, 2, ... until a page comes back shorter than
// `page_size`. An event is posted when its version (uuid + timestamp) is newer than the one
// posted before, so the events sitting on the cursor's second, which every poll sees again,
// are not posted twice, and an event edited later (newer timestamp) is posted again.
//
// State: the cursor (the highest event timestamp seen, kept a margin behind MISP's clock,
// see advance()), the seen-set (uuid -> last posted timestamp) and a hash of url + filters.
// The seen-set is checkpointed after pages that posted something (at most once a second)
// and at the poll's end; the cursor only once a poll's last page is read, so a crash or an
// error mid-poll repeats the poll from the old cursor and the seen-set keeps it from
// re-posting.
import { z } from "zod";
import { FatalInputError, type InputContext } from "../../agent/plugin.ts";
import { runHttpPolls } from "../common/feed.ts";
import { HttpError, type HttpClient } from "../common/http.ts";
import { redactText } from "../../agent/redact.ts";
import { WaitError, type PollResult } from "../common/poll.ts";
import { hashString, SeenSet, seenSetState, stringHash } from "../common/seen.ts";
import { eventVersion } from "../common/misp.ts";
import { pageEvents } from "./events.ts";
import type { MispApiOptions } from "./options.ts";

/** The saved state: the input's state schema. */
export const mispApiState = z.strictObject({
  v: z.literal(1),
  /** hashString of the url and filters the cursor belongs to. */
  source: stringHash,
  /** Highest event timestamp seen (unix seconds), null before the first event. */
  cursor: z.number().int().nonnegative().nullable(),
  /** uuid -> the timestamp of the version posted. */
  seen: seenSetState.optional(),
});

export type MispApiState = z.infer<typeof mispApiState>;

const BATCH = 1000;
/** During a long poll the seen-set is saved at most this often (and always at its end). */
const SAVE_EVERY_MS = 1000;
/**
 * How far behind MISP's clock the cursor stays: an edit stamped a little before page 1 was
 * answered but committed after it (or a clock a little off) is still in the next window.
 */
const EDIT_MARGIN_S = 60;
/** Bad elements named in the log per poll (the rest are only counted). */
const SKIPS_LOGGED = 3;

interface PollCounts {
  pages: number;
  events: number;
  posted: number;
  skipped: number;
}

export class MispApiInput {
  private readonly endpoint: string;
  private readonly source: string;
  private readonly secrets: string[];
  private seen!: SeenSet;
  private cursor: number | null = null;
  private dirty = false;
  private lastSave = 0;

  constructor(
    private readonly opts: MispApiOptions,
    private readonly ctx: InputContext<MispApiState>,
  ) {
    this.endpoint = `${opts.url.replace(/\/+$/, "")}/events/restSearch`;
    this.source = hashString(JSON.stringify([opts.url.replace(/\/+$/, ""), opts.filters]));
    this.secrets = [opts.key];
  }

  async run(): Promise<void> {
    const { ctx, opts } = this;
    const saved = await ctx.loadState();
    // Entries never expire by age: the bound is max_seen (least recently seen go first).
    this.seen = SeenSet.from(saved?.seen, { maxEntries: opts.max_seen, ttlMs: Infinity });
    if (saved?.source === this.source) this.cursor = saved.cursor;
    else if (saved) ctx.log.info("url or filters changed: searching again from `since` (events already posted are not posted again)");
    this.showDetail();
    const headers = { authorization: opts.key, accept: "application/json", "content-type": "application/json" };
    await runHttpPolls(ctx, opts, { headers, secrets: this.secrets }, (http, signal) => this.poll(http, signal));
  }

  private async poll(http: HttpClient, signal: AbortSignal): Promise<PollResult> {
    const { ctx, opts, seen } = this;
    const started = Date.now();
    const from = this.cursor ?? Math.max(0, Math.floor((started - opts.since) / 1000));
    const counts: PollCounts = { pages: 0, events: 0, posted: 0, skipped: 0 };
    let highest = this.cursor ?? 0;
    /** MISP's clock when it answered page 1 (its Date header, unix seconds). */
    let firstAnswerAt: number | null = null;
    let lastCount: number | null = null;
    let shrank = false;
    let previousPage = "";
    let completed = false;
    try {
      for (let page = 1; ; page++) {
        const res = await this.search(http, { ...opts.filters, returnFormat: "json", timestamp: from, limit: opts.page_size, page }, signal);
        counts.pages++;
        if (page === 1) firstAnswerAt = headerSeconds(res.headers.get("date"));
        const count = resultCount(res.headers.get("x-result-count"));
        if (count !== null) {
          if (lastCount !== null && count < lastCount) shrank = true;
          lastCount = count;
        }
        let inPage = 0;
        let postedHere = 0;
        let uuids = "";
        for await (const batch of pageEvents(res.body, BATCH)) {
          const fresh: string[] = [];
          const marks: Array<[string, string]> = [];
          for (const el of batch) {
            inPage++;
            const v = eventVersion(el.value);
            if (typeof v === "string") {
              this.skip(counts, `page ${page}, element ${inPage}: ${v}`);
              continue;
            }
            uuids += v.uuid;
            if (v.timestamp > highest) highest = v.timestamp;
            const prev = seen.get(v.uuid);
            if (prev !== undefined && Number(prev) >= v.timestamp) {
              marks.push([v.uuid, prev]);
              continue;
            }
            fresh.push(el.text);
            marks.push([v.uuid, String(v.timestamp)]);
          }
          await ctx.emitJsonLines(fresh);
          // Marked only once the spool took them: a failed emit posts them on the next poll.
          const now = Date.now();
          for (const [uuid, ts] of marks) seen.mark(uuid, ts, now);
          postedHere += fresh.length;
          if (fresh.length > 0) this.dirty = true;
        }
        counts.events += inPage;
        counts.posted += postedHere;
        if (this.dirty && Date.now() - this.lastSave >= SAVE_EVERY_MS) this.save();
        if (signal.aborted) return { status: "stopped" };
        if (inPage < opts.page_size) break;
        // A server that ignores `page` would answer the same page for ever.
        const pageId = hashString(uuids);
        if (pageId === previousPage) {
          ctx.log.warn("MISP answered the same page twice: it seems to ignore `page`; this poll ends here", { page });
          break;
        }
        previousPage = pageId;
      }
      completed = true;
    } finally {
      // What a failed or stopped poll posted stays marked as posted.
      if (!completed && this.dirty) this.save();
    }
    this.advance(highest, firstAnswerAt, shrank);
    if (this.dirty) this.save();
    this.showDetail();
    ctx.log.info("MISP searched", { ...counts, from, cursor: this.cursor, ms: Date.now() - started });
    const skipped = counts.skipped > 0 ? `, ${counts.skipped} skipped` : "";
    return { status: `${counts.events} events in ${counts.pages} pages: ${counts.posted} posted${skipped}` };
  }

  /**
   * Moves the cursor after a whole poll. Pages are a moving window over the result set: an
   * event edited while the poll pages (its new timestamp is MISP's "now") can enter at a page
   * already read, so the cursor goes no further than MISP's clock at page 1 less a margin;
   * the next poll then sees that event. An event leaving the set (deleted, no longer
   * matching) moves later ones back a page, so one can be passed over: when MISP's result
   * count drops between pages, the cursor stays and the next poll reads the window again.
   */
  private advance(highest: number, firstAnswerAt: number | null, shrank: boolean): void {
    if (shrank) {
      this.ctx.log.warn("the result set shrank while paging: the cursor stays, the next poll reads the same window again");
      return;
    }
    const next = firstAnswerAt === null ? highest : Math.min(highest, firstAnswerAt - EDIT_MARGIN_S);
    if (next > 0 && next > (this.cursor ?? 0)) {
      this.cursor = next;
      this.dirty = true;
    }
  }

  /** One restSearch request; MISP's refusal of the key and its rate limit become the poll loop's errors. */
  private async search(http: HttpClient, body: Record<string, unknown>, signal: AbortSignal) {
    try {
      return await http.request(this.endpoint, { method: "POST", json: body, signal });
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      if (err.status === 401 || err.status === 403) {
        const said = mispMessage(err.bodyExcerpt);
        throw new FatalInputError(
          `inputs.${this.ctx.name}.key: MISP refused the API key (HTTP ${err.status} from ${redactText(this.endpoint, this.secrets)}${said ? `: ${said}` : ""}); ` +
            "set key to the automation key of an API-enabled user allowed to search events",
        );
      }
      if (err.status === 429) {
        const reset = parseResetSeconds(err.headers?.get("x-rate-limit-reset") ?? null);
        if (reset !== null) throw new WaitError(`MISP rate limit reached (HTTP 429); it resets in ${reset} s`, reset * 1000);
      }
      throw err;
    }
  }

  private skip(counts: PollCounts, why: string): void {
    counts.skipped++;
    const message = `not a MISP event, skipped: ${why}`;
    this.ctx.reportError(new Error(message));
    if (counts.skipped <= SKIPS_LOGGED) this.ctx.log.warn("restSearch element skipped", { reason: why });
  }

  private save(): void {
    this.dirty = false;
    this.lastSave = Date.now();
    this.ctx.checkpoint({ v: 1, source: this.source, cursor: this.cursor, seen: this.seen.toJSON() }).catch(() => {
      // The context reports a failed save; the next checkpoint tries again.
    });
  }

  private showDetail(): void {
    this.ctx.setDetail({
      url: redactText(this.opts.url, this.secrets),
      cursor: this.cursor === null ? null : new Date(this.cursor * 1000).toISOString(),
      remembered: this.seen.size,
    });
  }
}

/** MISP's own words from an error body ({"name": ..., "message": ...}), if they can be found. */
function mispMessage(excerpt: string): string {
  const m = /"(?:message|name)"\s*:\s*"((?:[^"\\]|\\.)*)"/.exec(excerpt);
  return m ? m[1]!.replace(/\\(.)/g, "$1") : "";
}

/** An HTTP date header as unix seconds, or null. */
function headerSeconds(value: string | null): number | null {
  const ms = value === null ? NaN : Date.parse(value);
  return Number.isFinite(ms) ? Math.floor(ms / 1000) : null;
}

/** X-Result-Count: how many events match in all, or null. */
function resultCount(value: string | null): number | null {
  return value !== null && /^\s*\d+\s*$/.test(value) ? Number(value) : null;
}

/** X-Rate-Limit-Reset: seconds until the limit resets (MISP's meaning), or null. */
function parseResetSeconds(value: string | null): number | null {
  if (value === null || !/^\s*\d+\s*$/.test(value)) return null;
  return Number(value);
}
