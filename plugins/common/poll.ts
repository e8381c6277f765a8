// The schedule of a polling input (the original module's "CybexSourceFetcher"): poll at
// start, then every `interval`; after a failure retry with exponential backoff and full
// jitter; honour a source that asks to wait; stop within a second of ctx.signal.
//
//   run: () => runPolls(ctx, { intervalMs: opts.interval, secrets: [opts.key] }, async (signal) => {
//     const res = await http.request(url, { signal, validators });
//     if (res.notModified) return "not modified";
//     ...emit, checkpoint...
//     return `${n} new records`;                           // shown as last_status
//   })
//
// The poll function gets a signal that aborts on stop; it passes it to every request (the
// HttpClient then aborts at once). A poll that ignores it is waited for `stopGraceMs`, then
// left behind so run() still returns in time.
//
// Outcomes of one poll:
// - returns (optionally { status, nextPollInMs }): success. The next poll starts `interval`
//   after this one started (at once if it took longer), or after nextPollInMs (e.g. "more
//   pages to fetch": 0). Backoff resets.
// - throws a wait (WaitError, or an HttpError of kind "wait": 429, 509, 5xx + Retry-After):
//   the next try comes after the wait the source asked for, kept within [1 s, maxWaitMs];
//   with no stated wait, after backoffCapMs.
// - throws FatalInputError: the loop ends with it (the supervisor marks the input failed).
// - throws anything else: the next try comes after a backoff delay, random in
//   [0, min(backoffCapMs, backoffBaseMs * 2^(failures-1))].
// Every failure goes to ctx.reportError and the log as one line with secrets replaced (the
// `secrets` given here, plus URL credentials).
//
// Status detail (ctx.setDetail): last_poll, last_success, next_poll (ISO times or null),
// last_status ("ok", the poll's own status, "error: ...", "waiting: ..."), consecutive_failures,
// and what /health judges by (see the supervisor): `problem` (set once FAILURES_FOR_PROBLEM
// polls in a row failed, naming the last error; null again after a success) and
// `healthy_until` (3 intervals after the last success, or after the loop started: past it,
// with no success since, the input is a problem even if its polls hang or keep waiting).
import { FatalInputError, type InputContext } from "../../agent/plugin.ts";
import { Backoff, sleep } from "../../agent/backoff.ts";
import { redactText } from "../../agent/redact.ts";
import { errorMessageOrName } from "../../agent/errortext.ts";
import { HttpError } from "./httperror.ts";

export interface PollOptions {
  /** From the start of one successful poll to the start of the next. */
  intervalMs: number;
  /** Ceiling of the first retry delay. Default 1 s (at most the cap). */
  backoffBaseMs?: number;
  /** Largest retry delay. Default: interval or 1 h, whichever is smaller. */
  backoffCapMs?: number;
  /** Longest wait honoured when the source asks for one. Default: interval or 1 h, whichever is larger. */
  maxWaitMs?: number;
  /** When the first poll may start (epoch ms), e.g. from a saved last-poll time. Default: at once. */
  firstPollAt?: number;
  /** Literal values never to show in reported errors (API keys, passwords). */
  secrets?: Array<string | undefined | null>;
  /** How long stop waits for a poll that ignores its signal. Default 800 ms. */
  stopGraceMs?: number;
  /** For tests: the jitter source (default Math.random). */
  random?: () => number;
}

export interface PollResult {
  /** Shown as last_status (default "ok"). */
  status?: string;
  /** Poll again after this long instead of the interval (e.g. 0 while pages remain). */
  nextPollInMs?: number;
}

export type PollFunction = (signal: AbortSignal) => Promise<PollResult | string | void>;

/** Thrown by a poll when the source asked to wait (e.g. MISP's X-Rate-Limit-Reset). */
export class WaitError extends Error {
  constructor(
    message: string,
    /** How long (ms), or null if the source did not say. */
    readonly waitMs: number | null,
  ) {
    super(message);
    this.name = "WaitError";
  }
}

/** The wait an error asks for: ms, null (a wait of unstated length), or undefined (not a wait). */
export function waitOf(err: unknown): number | null | undefined {
  if (err instanceof WaitError) return err.waitMs;
  if (err instanceof HttpError && err.kind === "wait") return err.waitMs;
  return undefined;
}

const HOUR = 3_600_000;
/** Polls in a row that must fail before the input counts as a problem in /health. */
export const FAILURES_FOR_PROBLEM = 3;
/** Intervals without a success after which the input counts as a problem. */
export const INTERVALS_FOR_PROBLEM = 3;
/** Floor of one interval in that count, so a very short interval does not flag a poll that merely takes a moment. */
const MIN_HEALTH_INTERVAL_MS = 1000;
const MIN_WAIT_MS = 1000;
const MESSAGE_CHARS = 500;
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The delays of the loop, apart from the timers (so they can be checked exactly). */
export class PollSchedule {
  readonly intervalMs: number;
  readonly backoffCapMs: number;
  readonly maxWaitMs: number;
  consecutiveFailures = 0;
  private readonly backoff: Backoff;

  constructor(opts: Omit<PollOptions, "firstPollAt" | "secrets" | "stopGraceMs">) {
    this.intervalMs = Math.max(0, opts.intervalMs);
    this.backoffCapMs = Math.max(1, opts.backoffCapMs ?? Math.min(this.intervalMs, HOUR));
    const base = Math.min(Math.max(1, opts.backoffBaseMs ?? 1000), this.backoffCapMs);
    this.maxWaitMs = Math.max(MIN_WAIT_MS, opts.maxWaitMs ?? Math.max(this.intervalMs, HOUR));
    this.backoff = new Backoff({ baseMs: base, capMs: this.backoffCapMs, random: opts.random });
  }

  /** Delay before the next poll after one that started at `startedAt` succeeded (now = `now`). */
  afterSuccess(startedAt: number, now: number, nextPollInMs?: number): number {
    this.consecutiveFailures = 0;
    this.backoff.reset();
    if (nextPollInMs !== undefined && Number.isFinite(nextPollInMs)) return Math.max(0, nextPollInMs);
    return Math.max(0, startedAt + this.intervalMs - now);
  }

  /** Delay before the next try after a failure. */
  afterFailure(err: unknown): number {
    this.consecutiveFailures++;
    // A wait still raises the backoff: the failures after it keep growing their delays.
    const backoff = this.backoff.next();
    const wait = waitOf(err);
    if (wait === undefined) return backoff;
    if (wait === null) return this.backoffCapMs;
    return Math.min(this.maxWaitMs, Math.max(MIN_WAIT_MS, wait));
  }
}

interface PollDetail {
  last_poll: string | null;
  last_success: string | null;
  next_poll: string | null;
  last_status: string | null;
  consecutive_failures: number;
  problem: string | null;
  healthy_until: string | null;
}

/** Runs `poll` on the schedule until ctx.signal aborts (resolves) or a FatalInputError (rejects). */
export async function runPolls(ctx: InputContext<any>, opts: PollOptions, poll: PollFunction): Promise<void> {
  const signal = ctx.signal;
  const schedule = new PollSchedule(opts);
  const graceMs = Math.max(0, opts.stopGraceMs ?? 800);
  const secrets = opts.secrets ?? [];
  const healthWindowMs = INTERVALS_FOR_PROBLEM * Math.max(MIN_HEALTH_INTERVAL_MS, schedule.intervalMs);
  // A first poll put off on purpose (a saved last-poll time) does not count against the input.
  // One pass (ctx.runOnce) polls now, and again only while the source says more is waiting.
  const firstAt = ctx.runOnce ? Date.now() : (opts.firstPollAt ?? Date.now());
  const detail: PollDetail = {
    last_poll: null, last_success: null, next_poll: null, last_status: null, consecutive_failures: 0,
    problem: null, healthy_until: iso(Math.max(firstAt, Date.now()) + healthWindowMs),
  };
  const show = () => ctx.setDetail({ ...detail });
  let nextAt = firstAt;

  while (!signal.aborted) {
    detail.next_poll = iso(nextAt);
    show();
    // Timers overflow past 2^31 - 1 ms (fire at once): long waits go in pieces.
    for (let left = nextAt - Date.now(); left > 0 && !signal.aborted; left = nextAt - Date.now()) {
      await sleep(Math.min(left, MAX_TIMER_MS), signal);
    }
    if (signal.aborted) break;

    const started = Date.now();
    detail.last_poll = iso(started);
    detail.next_poll = null;
    show();
    let result: PollResult | string | void;
    try {
      result = await untilStopped(poll(signal), signal, graceMs);
    } catch (err) {
      if (signal.aborted) {
        if (err instanceof StillRunning) ctx.log.warn("a poll was still running at stop; not waiting for it", { waited_ms: graceMs });
        break;
      }
      const message = oneLine(redactText(errorMessageOrName(err), secrets));
      const fatal = err instanceof FatalInputError || (err instanceof Error && err.name === "FatalInputError");
      if (fatal || ctx.runOnce) {
        detail.last_status = `failed: ${message}`;
        show();
        // One pass has no later poll to wait for: its failure is the input's, in the redacted words.
        throw fatal ? err : new Error(message);
      }
      const delay = schedule.afterFailure(err);
      const waiting = waitOf(err) !== undefined;
      detail.last_status = `${waiting ? "waiting" : "error"}: ${message}`;
      detail.consecutive_failures = schedule.consecutiveFailures;
      if (schedule.consecutiveFailures >= FAILURES_FOR_PROBLEM)
        detail.problem = `failed its last ${schedule.consecutiveFailures} polls: ${message}`;
      ctx.reportError(new Error(message));
      ctx.log.warn(waiting ? "the source asks to wait" : "poll failed", {
        error: message,
        retry_in_ms: delay,
        consecutive_failures: schedule.consecutiveFailures,
      });
      nextAt = Date.now() + delay;
      continue;
    }
    if (signal.aborted) break;
    const r: PollResult = typeof result === "string" ? { status: result } : (result ?? {});
    const now = Date.now();
    detail.last_success = iso(now);
    detail.last_status = r.status !== undefined ? oneLine(redactText(r.status, secrets)) : "ok";
    detail.consecutive_failures = 0;
    detail.problem = null;
    if (ctx.runOnce && r.nextPollInMs !== 0) break;
    nextAt = now + schedule.afterSuccess(started, now, r.nextPollInMs);
    // A success followed by a deliberately later poll (a source's own schedule) keeps its window from then.
    detail.healthy_until = iso(Math.max(now + healthWindowMs, nextAt + healthWindowMs - schedule.intervalMs));
  }
  detail.next_poll = null;
  // A stopped loop is judged by its state, not by its schedule.
  detail.problem = null;
  detail.healthy_until = null;
  show();
}

class StillRunning extends Error {}

/** `p`, or a StillRunning rejection `graceMs` after `signal` aborts while p is pending. */
function untilStopped<T>(p: Promise<T>, signal: AbortSignal, graceMs: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const onAbort = () => {
      timer = setTimeout(() => reject(new StillRunning()), graceMs);
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => {
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
    });
  });
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function oneLine(s: string): string {
  const line = s.replace(/\s+/g, " ").trim();
  return line.length > MESSAGE_CHARS ? `${line.slice(0, MESSAGE_CHARS)}...` : line;
}
