// What the polling HTTP inputs share beyond the schedule (poll.ts) and the HTTP client
// (http.ts): their HTTP poll loop, and the state of a feed read whole on each poll. Their
// option fragments are in options.ts (inputs that make no HTTP calls use those alone).
//
// HTTP polls: one HttpClient built from the options, closed when the input stops.
//
//   await runHttpPolls(ctx, opts, { secrets: [opts.key] }, (http, signal) => this.poll(http, signal));
//
// A whole feed (a list or dump fetched in full, e.g. OpenPhish's feed.txt, PhishTank's dump):
// WholeFeed keeps the seen-set and the validators, and runs one read of the feed: a
// conditional GET, then batch by batch "post the new records, then mark every record", and
// the state checkpointed so that a crash never loses a record and a restart re-posts nothing.
import { z } from "zod";
import type { InputContext, Logger } from "../../agent/plugin.ts";
import { HttpClient, type HttpClientOptions, type HttpResponse, type Validators } from "./http.ts";
import { runPolls, type PollResult } from "./poll.ts";
import { SeenSet, seenSetState, stringHash } from "./seen.ts";

/** Warns at start when `interval` is shorter than the source asks of its clients. */
export function warnShortInterval(log: Logger, intervalMs: number, advisedMs: number, message: string): void {
  if (intervalMs < advisedMs) log.warn(message, { interval_ms: intervalMs });
}

// ---- HTTP polls -----------------------------------------------------------------------------

/** The options every HTTP source has (intervalOption, timeoutOption, tlsOptions). */
export interface HttpSourceOptions {
  interval: number;
  timeout: number;
  tls_verify: boolean;
  ca_file?: string | undefined;
}

export interface HttpPollsOptions extends Pick<HttpClientOptions, "userAgent" | "headers" | "secretHeaders"> {
  /** Never shown in messages: given to the client and to the poll loop's error reports. */
  secrets?: string[];
  /** When the first poll may start (epoch ms); default at once. */
  firstPollAt?: number;
}

/** Runs `poll` on the input's schedule with one HttpClient (closed when the loop ends). */
export async function runHttpPolls(
  ctx: InputContext<any>,
  source: HttpSourceOptions,
  opts: HttpPollsOptions,
  poll: (http: HttpClient, signal: AbortSignal) => Promise<PollResult | string | void>,
): Promise<void> {
  const { firstPollAt, ...client } = opts;
  const http = new HttpClient({ ...client, timeoutMs: source.timeout, tlsVerify: source.tls_verify, caFile: source.ca_file, log: ctx.log });
  try {
    await runPolls(ctx, { intervalMs: source.interval, secrets: opts.secrets, firstPollAt }, (signal) => poll(http, signal));
  } finally {
    http.close();
  }
}

// ---- a feed read whole ----------------------------------------------------------------------

/** Saved validators (http.ts Validators): what the server answered, never empty strings. */
export const validatorsState = z.strictObject({
  etag: z.string().min(1).optional(),
  lastModified: z.string().min(1).optional(),
});

/** An epoch-ms time saved in state (Date.now()). */
export const epochMsState = z.number().int().nonnegative();

/** The saved state of a WholeFeed: the input's state schema (openphish, phishtank). */
export const feedState = z.strictObject({
  v: z.literal(1),
  /** hashString of the URL the validators belong to (the URL itself may hold a key). */
  source: stringHash,
  validators: validatorsState.optional(),
  /** When the feed was last read in full (epoch ms). */
  full_at: epochMsState.optional(),
  seen: seenSetState.optional(),
});

export type FeedState = z.infer<typeof feedState>;

/** How one read of the feed goes; WholeFeed.read calls these in order. */
export interface FeedReadSteps<Batch> {
  /** The request, conditional on `validators` unless null. */
  request(validators: Validators | null): Promise<HttpResponse>;
  /** The records of a full answer, in batches. */
  batches(res: HttpResponse): AsyncIterable<Batch>;
  /**
   * Posts the batch's new records and then marks every record of it in the seen-set, as of
   * `started`; returns how many were posted.
   */
  post(batch: Batch, started: number): Promise<number>;
}

/** The outcome of a read: nothing to do, or the whole feed read (started = its start, epoch ms). */
export type FeedRead = { read: false; status: "not modified" | "stopped" } | { read: true; res: HttpResponse; started: number };

export interface WholeFeedOptions {
  /** hashString of the feed's URL: validators saved for another URL are not sent. */
  source: string;
  maxSeen: number;
  /** dedup_ttl: a record gone from the feed this long is forgotten. */
  ttlMs: number;
}

export class WholeFeed {
  readonly seen: SeenSet;
  private readonly source: string;
  private readonly ttlMs: number;
  private validators: Validators | undefined;
  private fullAt: number | undefined;

  constructor(private readonly ctx: InputContext<FeedState>, saved: FeedState | undefined, opts: WholeFeedOptions) {
    this.source = opts.source;
    this.ttlMs = opts.ttlMs;
    // The seen-set is kept across a change of URL: a record posted from the old feed is not
    // posted again from the new one.
    this.seen = SeenSet.from(saved?.seen, { maxEntries: opts.maxSeen, ttlMs: opts.ttlMs });
    if (saved && saved.source !== opts.source) {
      ctx.log.info("url changed: the feed is read in full (records already posted are not posted again)");
    } else if (saved?.seen && this.seen.size > 0) {
      // Validators are worth sending only with the records they cover.
      this.validators = saved.validators;
      this.fullAt = saved.full_at;
    }
  }

  /**
   * One poll of the feed. Only once the whole feed was read are its validators kept and the
   * entries not in it pruned; what a failed or stopped read posted is saved as marked.
   */
  async read<Batch>(signal: AbortSignal, steps: FeedReadSteps<Batch>): Promise<FeedRead> {
    const started = Date.now();
    // Every record is marked on each full read, so a feed that stays "not modified" for long
    // would let its records expire: read it in full now and then.
    const fresh = this.fullAt !== undefined && started - this.fullAt < this.ttlMs / 2;
    const res = await steps.request(fresh ? (this.validators ?? null) : null);
    if (res.notModified) {
      if (!sameValidators(res.validators, this.validators)) {
        this.validators = res.validators;
        this.save();
      }
      return { read: false, status: "not modified" };
    }
    let posted = false;
    try {
      for await (const batch of steps.batches(res)) {
        if ((await steps.post(batch, started)) > 0) posted = true;
        if (signal.aborted) break;
      }
    } catch (err) {
      // What was posted is marked: keep that even though the feed was not read to its end.
      if (posted) this.save();
      throw err;
    }
    if (signal.aborted) {
      if (posted) this.save();
      return { read: false, status: "stopped" };
    }
    this.seen.prune(started);
    this.validators = res.validators;
    this.fullAt = started;
    this.save();
    return { read: true, res, started };
  }

  /** Checkpoint the state as it is now (saved once the spool holds what was posted). */
  private save(): void {
    const state: FeedState = { v: 1, source: this.source, seen: this.seen.toJSON() };
    if (this.validators && (this.validators.etag || this.validators.lastModified)) state.validators = { ...this.validators };
    if (this.fullAt !== undefined) state.full_at = this.fullAt;
    // A failed save is counted and logged by the context; the next poll saves again.
    this.ctx.checkpoint(state).catch(() => {});
  }
}

function sameValidators(a: Validators | undefined, b: Validators | undefined): boolean {
  return (a?.etag ?? null) === (b?.etag ?? null) && (a?.lastModified ?? null) === (b?.lastModified ?? null);
}
