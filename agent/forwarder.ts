// The forwarder: takes records out of the spool, groups them per route into batches and hands
// each batch to the output (an upload to the Cybex-P API, or a JetStream message). A record is
// acked, and so leaves the spool, only once the output delivered it or it was written to dead
// letters.
//
// Failure handling follows the contract: network errors, timeouts, 408, 429 and 5xx retry
// the same batch with exponential backoff and full jitter (honouring Retry-After); 413
// splits the batch; other 4xx but 401/403 go to dead letters; 401/403 keep the data and
// retry slowly. While the API fails, a single upload at a time probes it.
//
// Visible failure: the output is "failing" after a minute of retryable failures, or while the
// API rejects most of what it is sent (see REJECT_*). Waiting long for a backoff after the API
// was unreachable, a cheap unauthenticated HEAD of [api] url every probeIntervalMs notices its
// return, so the first retry comes within seconds of it rather than minutes (see probe()).
//
// Dead letters are bounded: the folder's bytes are counted once at start and then kept up to
// date by this forwarder's writes and removals; beyond maxBytes the oldest are removed
// (counted). Writing them is serialised, so removals never race a half-written dead letter.
//
// Where batches go is the transport's business (agent/output/): the Cybex-P API (http.ts) or
// NATS JetStream (nats.ts); the forwarder reads their outcomes.
import { mkdir, readdir, stat, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Backoff, sleep } from "./backoff.ts";
import { concat, countNewlines } from "./bytes.ts";
import type { BatchLimits } from "./config.ts";
import { errorMessage } from "./errortext.ts";
import type { EventKind, Logger } from "./plugin.ts";
import { isNoSpace } from "./fserrors.ts";
import type { Spool, SpoolRecord } from "./spool/index.ts";
import { fileNameFor, type RouteMeta } from "./upload.ts";
import type { OutputTransport, SendOutcome } from "./output/transport.ts";

export type { RouteMeta };

/** The spool route of an input: its upload metadata as a JSON text with a fixed key order. */
export function routeKey(m: RouteMeta): string {
  // `file` only when given, so that the key of an input's own route stays what earlier versions wrote.
  return JSON.stringify({ input: m.input, name: m.name, orgid: m.orgid, typetag: m.typetag, timezone: m.timezone, file: m.file });
}

export type OutputState = "ok" | "retrying" | "unauthorized" | "failing";

export interface ForwarderStatus {
  state: OutputState;
  sent_events: number;
  sent_uploads: number;
  retries: number;
  dead_lettered: number;
  /** Cleared once the output has been ok for lastErrorKeepMs after it (and something was delivered since). */
  last_error: string | null;
  last_error_at: string | null;
  /** Bytes in the dead-letter folder (bodies and their .json answers). */
  dead_letter_bytes: number;
  /** Dead letters removed (oldest first) to keep the folder within its bound. */
  dead_letter_removed: number;
  /** The output: "cybexp_api" or "nats". */
  type: string;
  /** What the output adds (nats: the connected server, the stream). */
  [detail: string]: unknown;
}

/**
 * Counters for the metrics endpoint. `uploads`, `events`, `bytes` (file part bytes) count
 * what the API accepted; `retries` counts failed attempts that will be retried (and 413
 * splits); `dead_lettered` counts dead-letter files; `inflight` uploads on the wire now;
 * `queued` batches formed and waiting for a slot; `per_input` what the API accepted per input.
 */
export interface ForwarderMetrics {
  uploads: number;
  events: number;
  bytes: number;
  retries: number;
  dead_lettered: number;
  inflight: number;
  queued: number;
  per_input: Map<string, { events: number; uploads: number; bytes: number }>;
}

export interface RetryOptions {
  /** First backoff ceiling (the delay is random below it). Default 1000. */
  baseMs?: number;
  /** Backoff ceiling at most. Default 300000. */
  capMs?: number;
  /** Retry interval while the API answers 401/403. Default 60000. */
  unauthorizedMs?: number;
  /** Continuous failure for this long turns "retrying" into "failing". Default 60000. */
  failingAfterMs?: number;
  /** Probe the API only while the next retry is further away than this. Default 15000. */
  probeAfterMs?: number;
  /** Time between probe starts (one probe at a time). Default 10000. */
  probeIntervalMs?: number;
  /** Timeout of one probe. Default 5000. */
  probeTimeoutMs?: number;
  /** last_error stays this long after the output is ok again. Default 60000. */
  lastErrorKeepMs?: number;
  /** Backoff jitter source in [0, 1) (tests pin it). Default Math.random. */
  random?: () => number;
}

export interface ForwarderOptions {
  spool: Spool;
  /** Where batches go. */
  output: OutputTransport;
  /** Batch limits of an input (the input may be gone from the config: then the defaults). */
  batchFor: (meta: RouteMeta) => BatchLimits;
  deadLetterDir: string;
  /** Bound on the dead-letter folder's bytes. Default 256 MiB. */
  deadLetterMaxBytes?: number;
  log: Logger;
  retry?: RetryOptions;
}

/** A spool record handed out to the forwarder and not yet acked. */
interface Held {
  id: number;
  /** Pieces of this record not yet delivered (more than one after a 413 split it). */
  parts: number;
}

interface Piece {
  held: Held;
  payload: Uint8Array;
  count: number;
  position: string;
  appendedAt: number;
}

interface Batch {
  key: string;
  meta: RouteMeta;
  kind: EventKind;
  limits: BatchLimits;
  pieces: Piece[];
  events: number;
  bytes: number;
  /** When the batch must go even if not full (first record's append time + max_wait). */
  deadline: number;
}


/** Bytes read from the spool per call: enough for several full batches, little memory. */
const READ_BYTES = 2 * 1024 * 1024;
/**
 * The output is "failing" while, of the last REJECT_WINDOW uploads the API judged (accepted or
 * rejected into dead letters) within REJECT_WINDOW_MS, at least REJECT_MIN and more than half
 * were rejected: an API refusing everything shows within a few uploads, one bad input among
 * several healthy ones does not, and as many acceptances as rejections in the window end it.
 */
const REJECT_WINDOW = 10;
const REJECT_WINDOW_MS = 5 * 60_000;
const REJECT_MIN = 3;
const DEFAULT_DEAD_LETTER_MAX_BYTES = 256 * 1024 * 1024;
/** Oldest dead letters listed per directory scan: removals between scans need no listing. */
const OLDEST_PER_SCAN = 256;

/** One dead letter on disk: an upload body and its .json answer, or whatever files share a name. */
interface DeadLetterFiles {
  names: string[];
  bytes: number[];
}

export class Forwarder {
  private readonly output: OutputTransport;
  private readonly spool: Spool;
  private readonly log: Logger;
  private readonly backoff: Backoff;
  private readonly unauthorizedMs: number;
  private readonly failingAfterMs: number;
  private readonly probeAfterMs: number;
  private readonly probeIntervalMs: number;
  private readonly probeTimeoutMs: number;
  private readonly lastErrorKeepMs: number;
  private deadLetterMaxBytes: number;

  private readonly routes = new Map<string, RouteMeta | null>();
  private readonly pending = new Map<string, Batch>();
  private ready: Batch[] = [];
  private readonly held = new Map<number, Held>();
  private readonly uploads = new Set<Promise<void>>();

  private running = false;
  private stopping = false;
  private stopped: Promise<void> | undefined;
  private pumpDone: Promise<void> = Promise.resolve();
  private readonly pumpStop = new AbortController();
  /** Aborts in-flight uploads when stop() runs out of time. */
  private readonly uploadStop = new AbortController();
  private wakePump: (() => void) | null = null;
  private flushTimer: ReturnType<typeof setTimeout> | null = null;
  private flushAt = Infinity;
  private gateTimer: ReturnType<typeof setTimeout> | null = null;

  /** No new upload starts before this time (backoff, Retry-After, unauthorized wait). */
  private gateUntil = 0;
  /** Set while the API is failing: one upload at a time probes it. */
  private degraded: null | "retry" | "unauthorized" = null;
  private failingSince = 0;
  /** Retry-After gates are the API's word: a probe never opens the gate before this. */
  private retryAfterUntil = 0;
  /** What the latest retryable failure was: a probe's answer means "back" only after network trouble. */
  private lastFailure: "network" | "http" | "local" = "http";
  /** A probe in this outage found the API unreachable or answering >= 500. */
  private probeSawDown = false;
  private probeTimer: ReturnType<typeof setTimeout> | null = null;
  private probing = false;

  /** The API's latest verdicts (true = rejected into dead letters), oldest first. */
  private readonly verdicts: Array<{ at: number; rejected: boolean }> = [];

  private deadLetterSeq = 0;
  private deadLetterBytes = 0;
  private deadLetterRemoved = 0;
  /** The start-up scan of the folder; every dead-letter write waits for it. */
  private deadLetterScan: Promise<void> | null = null;
  /** Dead-letter writes and removals, one at a time. */
  private deadLetterQueue: Promise<unknown> = Promise.resolve();
  /** The oldest dead letters from the latest listing, oldest first: the next to remove. */
  private oldestDeadLetters: DeadLetterFiles[] = [];

  private readonly counters = { uploads: 0, events: 0, bytes: 0, retries: 0, dead_lettered: 0 };
  private readonly perInput = new Map<string, { events: number; uploads: number; bytes: number }>();
  private lastError: string | null = null;
  private lastErrorAt = 0;
  private lastDeliveredAt = 0;

  constructor(private readonly opts: ForwarderOptions) {
    this.spool = opts.spool;
    this.log = opts.log;
    this.output = opts.output;
    const retry = opts.retry ?? {};
    this.backoff = new Backoff({ baseMs: retry.baseMs ?? 1000, capMs: retry.capMs ?? 300_000, random: retry.random });
    this.unauthorizedMs = retry.unauthorizedMs ?? 60_000;
    this.failingAfterMs = retry.failingAfterMs ?? 60_000;
    this.probeAfterMs = retry.probeAfterMs ?? 15_000;
    this.probeIntervalMs = retry.probeIntervalMs ?? 10_000;
    this.probeTimeoutMs = retry.probeTimeoutMs ?? 5_000;
    this.lastErrorKeepMs = retry.lastErrorKeepMs ?? 60_000;
    this.deadLetterMaxBytes = Math.max(0, opts.deadLetterMaxBytes ?? DEFAULT_DEAD_LETTER_MAX_BYTES);
  }

  start(): void {
    if (this.running || this.stopping) return;
    this.running = true;
    this.deadLetterScan ??= this.scanDeadLetters();
    this.pumpDone = this.pump().catch((err) => {
      this.log.error("forwarder stopped reading the spool", { error: errorMessage(err) });
    });
  }

  /** Stop taking new work; wait up to deadlineMs for in-flight uploads, then abort them; release unsent records back to the spool. */
  stop(deadlineMs = 5000): Promise<void> {
    this.stopped ??= this.shutdown(deadlineMs);
    return this.stopped;
  }

  private async shutdown(deadlineMs: number): Promise<void> {
    this.stopping = true;
    this.pumpStop.abort();
    this.wakePump?.();
    this.clearTimers();
    await this.pumpDone;
    // Dead letters written while stopping get the folder's bound applied too.
    await this.deadLetterScan;
    if (this.uploads.size > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const deadline = new Promise<void>((r) => (timer = setTimeout(r, deadlineMs)));
      await Promise.race([Promise.allSettled([...this.uploads]), deadline]);
      clearTimeout(timer);
      if (this.uploads.size > 0) {
        this.log.warn("aborting uploads still in flight at shutdown", { uploads: this.uploads.size });
        this.uploadStop.abort();
        await Promise.allSettled([...this.uploads]);
      }
    }
    const ids = [...this.held.keys()];
    this.held.clear();
    this.pending.clear();
    this.ready = [];
    if (ids.length > 0) this.spool.release(ids);
    this.running = false;
  }

  /** The output's settings changed (config reload): new credentials or a new address deserve an attempt now, not after the old backoff. */
  retryNow(): void {
    this.gateUntil = 0;
    this.backoff.reset();
    this.dispatch();
  }

  /** A new [dead_letter] max_bytes (config reload): a lower bound removes the oldest at once. */
  setDeadLetterMaxBytes(maxBytes: number): Promise<void> {
    this.deadLetterMaxBytes = Math.max(0, maxBytes);
    const job = this.deadLetterQueue.then(async () => {
      await (this.deadLetterScan ??= this.scanDeadLetters());
      await this.trimDeadLetters();
    });
    this.deadLetterQueue = job.catch(() => {});
    return job;
  }

  status(): ForwarderStatus {
    const now = Date.now();
    const state = this.state(now);
    const rejected = this.rejections(now);
    // A fault that just passed stays in view a while; one long behind a healthy output is news no more.
    const stale = state === "ok" && this.lastDeliveredAt > this.lastErrorAt && now - this.lastErrorAt >= this.lastErrorKeepMs;
    let lastError = stale ? null : this.lastError;
    if (lastError !== null && rejected) lastError = `the API rejected ${rejected.rejected} of the last ${rejected.of} uploads (moved to dead letters); last error: ${lastError}`;
    return {
      state,
      sent_events: this.counters.events,
      sent_uploads: this.counters.uploads,
      retries: this.counters.retries,
      dead_lettered: this.counters.dead_lettered,
      last_error: lastError,
      last_error_at: lastError === null ? null : new Date(this.lastErrorAt).toISOString(),
      dead_letter_bytes: this.deadLetterBytes,
      dead_letter_removed: this.deadLetterRemoved,
      type: this.output.type,
      ...this.output.detail?.(),
    };
  }

  metrics(): ForwarderMetrics {
    return {
      ...this.counters,
      inflight: this.uploads.size,
      queued: this.ready.length,
      per_input: new Map([...this.perInput].map(([k, v]) => [k, { ...v }])),
    };
  }

  private state(now = Date.now()): OutputState {
    if (this.degraded === "unauthorized") return "unauthorized";
    if (this.rejections(now)) return "failing";
    if (this.degraded === "retry") return now - this.failingSince >= this.failingAfterMs ? "failing" : "retrying";
    return "ok";
  }

  /** Rejected and judged uploads of the recent window when the API rejects most of them, else null. */
  private rejections(now: number): { rejected: number; of: number } | null {
    let rejected = 0;
    let of = 0;
    for (const v of this.verdicts) {
      if (now - v.at > REJECT_WINDOW_MS) continue;
      of++;
      if (v.rejected) rejected++;
    }
    return rejected >= REJECT_MIN && rejected * 2 > of ? { rejected, of } : null;
  }

  private judged(rejected: boolean): void {
    this.verdicts.push({ at: Date.now(), rejected });
    if (this.verdicts.length > REJECT_WINDOW) this.verdicts.shift();
  }

  private setError(message: string): void {
    this.lastError = message;
    this.lastErrorAt = Date.now();
  }

  // ---- reading and batching ----

  private async pump(): Promise<void> {
    let idle = false;
    while (!this.stopping) {
      if (!this.hasRoom()) {
        await new Promise<void>((r) => (this.wakePump = r));
        this.wakePump = null;
        continue;
      }
      let records: SpoolRecord[];
      try {
        records = this.spool.read(READ_BYTES);
      } catch (err) {
        this.log.error("cannot read the spool; trying again in a second", { error: errorMessage(err) });
        await sleep(1000, this.pumpStop.signal);
        continue;
      }
      if (records.length === 0) {
        this.flushExpired();
        this.dispatch();
        // waitForData returns at once on a closed spool; never spin on it.
        if (idle) await sleep(50, this.pumpStop.signal);
        idle = true;
        // Partial batches may sit waiting for max_wait; the flush timer sends them.
        await this.spool.waitForData(this.pumpStop.signal);
        continue;
      }
      idle = false;
      const touched = new Set<string>();
      for (const r of records) touched.add(this.take(r));
      // A backlog's records are all past max_wait. A partial batch that just grew may grow
      // further from the next read, so only batches this read left alone go out partial: a
      // backlog of small records still combines into full uploads.
      this.flushExpired(touched);
      this.armFlushTimer();
      this.dispatch();
    }
  }

  /** Enough batches waiting to keep every upload slot busy means: read no further ahead. */
  private hasRoom(): boolean {
    return this.ready.length < Math.max(2, this.output.concurrency);
  }

  /** Add a record to its route's batch; returns the batch key. */
  private take(r: SpoolRecord): string {
    const meta = this.metaOf(r.route);
    const held: Held = { id: r.id, parts: 1 };
    this.held.set(r.id, held);
    const piece: Piece = { held, payload: r.payload, count: r.count, position: r.position, appendedAt: r.appendedAt };
    if (!meta) {
      // Not a route this agent writes (a spool from an incompatible version): nowhere to send it.
      const fallback: RouteMeta = { input: "unknown-route", name: "", orgid: "", typetag: "", timezone: "" };
      void this.deadLetterDetached(this.newBatch(r.route, fallback, r.kind, r.appendedAt, piece), 0, `unreadable spool route ${r.route.slice(0, 200)}`);
      return "";
    }
    const key = r.kind + r.route;
    let batch = this.pending.get(key);
    if (batch && (batch.events + r.count > batch.limits.maxEvents || batch.bytes + r.payload.byteLength > batch.limits.maxBytes)) {
      this.closeBatch(batch);
      batch = undefined;
    }
    if (!batch) {
      batch = this.newBatch(key, meta, r.kind, r.appendedAt, piece);
      this.pending.set(key, batch);
    } else {
      batch.pieces.push(piece);
      batch.events += piece.count;
      batch.bytes += piece.payload.byteLength;
    }
    if (this.output.recordPerBatch || batch.events >= batch.limits.maxEvents || batch.bytes >= batch.limits.maxBytes) this.closeBatch(batch);
    return key;
  }

  private newBatch(key: string, meta: RouteMeta, kind: EventKind, appendedAt: number, first: Piece): Batch {
    const limits = this.limitsFor(meta);
    return {
      key,
      meta,
      kind,
      limits,
      pieces: [first],
      events: first.count,
      bytes: first.payload.byteLength,
      deadline: appendedAt + limits.maxWaitMs,
    };
  }

  private limitsFor(meta: RouteMeta): BatchLimits {
    let l: BatchLimits;
    try {
      l = this.opts.batchFor(meta);
    } catch {
      l = { maxEvents: 1000, maxBytes: 1024 * 1024, maxWaitMs: 1000 };
    }
    return { maxEvents: Math.max(1, l.maxEvents), maxBytes: Math.max(1, l.maxBytes), maxWaitMs: Math.max(0, l.maxWaitMs) };
  }

  private metaOf(route: string): RouteMeta | null {
    let meta = this.routes.get(route);
    if (meta !== undefined) return meta;
    try {
      const m = JSON.parse(route);
      meta =
        m && typeof m.input === "string" && ["name", "orgid", "typetag", "timezone"].every((k) => typeof m[k] === "string")
          ? { input: m.input, name: m.name, orgid: m.orgid, typetag: m.typetag, timezone: m.timezone, ...(typeof m.file === "string" ? { file: m.file } : {}) }
          : null;
    } catch {
      meta = null;
    }
    if (this.routes.size > 10_000) this.routes.clear();
    this.routes.set(route, meta);
    return meta;
  }

  private closeBatch(batch: Batch): void {
    if (this.pending.get(batch.key) === batch) this.pending.delete(batch.key);
    this.ready.push(batch);
  }

  /** Send partial batches past max_wait, except those of routes in `keep`. */
  private flushExpired(keep?: Set<string>): void {
    const now = Date.now();
    for (const b of [...this.pending.values()]) if (b.deadline <= now && !keep?.has(b.key)) this.closeBatch(b);
  }

  /** Wake up at the next max_wait deadline; batches already past it are the pump's to send. */
  private armFlushTimer(): void {
    const now = Date.now();
    let next = Infinity;
    for (const b of this.pending.values()) if (b.deadline > now) next = Math.min(next, b.deadline);
    if (next === this.flushAt || this.stopping) return;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    this.flushAt = next;
    if (next === Infinity) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      this.flushAt = Infinity;
      this.flushExpired();
      this.armFlushTimer();
      this.dispatch();
    }, Math.max(0, next - Date.now()));
  }

  private clearTimers(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    if (this.gateTimer) clearTimeout(this.gateTimer);
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.flushTimer = this.gateTimer = this.probeTimer = null;
    this.flushAt = Infinity;
  }

  // ---- uploading ----

  private dispatch(): void {
    if (this.stopping) return;
    const limit = this.degraded ? 1 : Math.max(1, this.output.concurrency);
    while (this.ready.length > 0 && this.uploads.size < limit) {
      const wait = this.gateUntil - Date.now();
      if (wait > 0) {
        if (this.gateTimer) clearTimeout(this.gateTimer);
        this.gateTimer = setTimeout(() => {
          this.gateTimer = null;
          this.dispatch();
        }, wait);
        break;
      }
      const batch = this.ready.shift()!;
      const upload = this.upload(batch).catch((err) => {
        // A bug, not an API answer: keep the records (released at stop) and say so.
        this.log.error("upload handling failed", { error: errorMessage(err) });
      });
      this.uploads.add(upload);
      void upload.finally(() => {
        this.uploads.delete(upload);
        this.dispatch();
        if (this.hasRoom()) this.wakePump?.();
      });
    }
  }

  private async upload(batch: Batch): Promise<void> {
    const startedDegraded = this.degraded !== null;
    const outcome = await this.post(batch);
    if (this.stopping && outcome.type !== "sent" && outcome.type !== "rejected") return;
    switch (outcome.type) {
      case "sent":
        this.delivered(batch);
        return;
      case "aborted":
        return;
      case "retry":
        return this.retryLater(batch, outcome.error, outcome.retryAfterMs, startedDegraded, outcome.network ? "network" : "http");
      case "unauthorized":
        return this.unauthorized(batch, outcome.error);
      case "too_large":
        await this.split(batch, outcome.error, outcome.answer);
        return;
      case "rejected":
        // The API answered and judged the data: once that is on disk, stop probing gingerly.
        if ((await this.deadLetter(batch, outcome.status, outcome.answer, outcome.error)) && this.degraded === "retry") this.recovered();
        return;
    }
  }

  private post(batch: Batch): Promise<SendOutcome> {
    return this.output.send(
      { meta: batch.meta, kind: batch.kind, records: batch.pieces, events: batch.events, bytes: batch.bytes },
      this.uploadStop.signal,
    );
  }

  private delivered(batch: Batch): void {
    this.counters.uploads++;
    this.counters.events += batch.events;
    this.counters.bytes += batch.bytes;
    let per = this.perInput.get(batch.meta.input);
    if (!per) this.perInput.set(batch.meta.input, (per = { events: 0, uploads: 0, bytes: 0 }));
    per.uploads++;
    per.events += batch.events;
    per.bytes += batch.bytes;
    this.lastDeliveredAt = Date.now();
    this.judged(false);
    this.finish(batch);
    if (this.degraded) this.recovered();
  }

  private recovered(): void {
    this.log.info("the output delivers again", { after: this.degraded });
    this.degraded = null;
    this.backoff.reset();
    this.gateUntil = 0;
    this.retryAfterUntil = 0;
    this.probeSawDown = false;
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = null;
  }

  /** The batch's pieces are done (delivered or dead-lettered): ack records with no piece left. */
  private finish(batch: Batch): void {
    for (const p of batch.pieces) {
      if (--p.held.parts === 0 && this.held.delete(p.held.id)) this.spool.ack(p.held.id);
    }
  }

  private retryLater(
    batch: Batch,
    error: string,
    retryAfterMs: number | undefined,
    startedDegraded: boolean,
    failure: "network" | "http" | "local",
  ): void {
    this.counters.retries++;
    this.setError(error);
    this.lastFailure = failure;
    const now = Date.now();
    if (retryAfterMs !== undefined) this.retryAfterUntil = Math.max(this.retryAfterUntil, now + retryAfterMs);
    // Uploads already on the wire when the trouble began fail too; only the first failure
    // and each probe raise the backoff.
    if (!this.degraded || startedDegraded) {
      if (!this.degraded) this.failingSince = now;
      const delay = retryAfterMs ?? this.backoff.next();
      this.gateUntil = Math.max(this.gateUntil, now + delay);
      this.log.warn("upload failed, will retry", { error, retry_in_ms: Math.max(0, this.gateUntil - now), events: batch.events });
    } else if (retryAfterMs !== undefined) {
      this.gateUntil = Math.max(this.gateUntil, now + retryAfterMs);
    }
    if (this.degraded !== "unauthorized") this.degraded = "retry";
    this.ready.unshift(batch);
    this.armProbe();
  }

  // ---- probing the API while a long backoff runs ----

  /**
   * While the next retry is more than probeAfterMs away, probe every probeIntervalMs. Never
   * before a Retry-After the API asked for, never while unauthorized (retried every minute).
   */
  private armProbe(): void {
    if (this.stopping || this.degraded !== "retry" || this.probeTimer || this.probing) return;
    if (this.gateUntil - Date.now() <= this.probeAfterMs) return;
    this.probeTimer = setTimeout(() => {
      this.probeTimer = null;
      void this.probe();
    }, this.probeIntervalMs);
  }

  /**
   * One HEAD of [api] url without credentials (no token, no user:password from the URL) and
   * with a short timeout. An HTTP answer below 500 after network errors, or after a probe of
   * this outage found the API down or answering >= 500, means it is back: retry now. A probe
   * answering < 500 all along says nothing about POST /raw failing with 5xx, 408 or 429, so
   * those keep their backoff.
   */
  private async probe(): Promise<void> {
    if (this.stopping || this.degraded !== "retry" || Date.now() < this.retryAfterUntil) return;
    if (this.gateUntil - Date.now() <= 0) return;
    if (!this.output.probe) return;
    this.probing = true;
    const started = Date.now();
    let up = false;
    try {
      up = await this.output.probe(AbortSignal.any([AbortSignal.timeout(this.probeTimeoutMs), this.pumpStop.signal]));
    } finally {
      this.probing = false;
    }
    if (this.stopping || this.degraded !== "retry") return;
    if (up && (this.lastFailure === "network" || this.probeSawDown) && this.gateUntil > Date.now()) {
      this.log.info(`the ${this.output.type === "cybexp_api" ? "API" : "output"} answers again; retrying now`, { destination: this.output.destination() });
      this.gateUntil = Math.max(Date.now(), this.retryAfterUntil);
      this.dispatch();
      return;
    }
    if (!up) this.probeSawDown = true;
    const next = Math.max(0, started + this.probeIntervalMs - Date.now());
    // Probing stops once the retry itself comes before the next probe would.
    if (this.gateUntil - Date.now() > next) {
      this.probeTimer = setTimeout(() => {
        this.probeTimer = null;
        void this.probe();
      }, next);
    }
  }

  private unauthorized(batch: Batch, error: string): void {
    this.counters.retries++;
    this.setError(error);
    this.degraded = "unauthorized";
    this.gateUntil = Math.max(this.gateUntil, Date.now() + this.unauthorizedMs);
    this.log.error("the API refused the token (check [api] token); uploads are held and retried", {
      error,
      retry_in_ms: this.unauthorizedMs,
      events: batch.events,
    });
    this.ready.unshift(batch);
  }

  /** 413: halves by records, a lone record by lines; a lone event goes to dead letters. */
  private split(batch: Batch, error: string, answer: string): Promise<unknown> | void {
    this.setError(error);
    let halves: [Piece[], Piece[]] | null = null;
    if (batch.pieces.length > 1) {
      const mid = Math.ceil(batch.pieces.length / 2);
      halves = [batch.pieces.slice(0, mid), batch.pieces.slice(mid)];
    } else {
      const piece = batch.pieces[0]!;
      const cut = lineCut(piece.payload);
      if (cut !== -1) {
        const a = piece.payload.subarray(0, cut);
        const b = piece.payload.subarray(cut);
        const countA = countNewlines(a);
        piece.held.parts++;
        halves = [[{ ...piece, payload: a, count: countA }], [{ ...piece, payload: b, count: Math.max(0, piece.count - countA) }]];
      }
    }
    if (!halves) return this.deadLetter(batch, 413, answer, `${error} (a single event of ${batch.bytes} bytes is too large for the API)`);
    this.counters.retries++;
    this.log.warn("API refused the upload as too large; splitting it", { events: batch.events, bytes: batch.bytes });
    const parts = halves.map((pieces) => ({
      ...batch,
      pieces,
      events: pieces.reduce((n, p) => n + p.count, 0),
      bytes: pieces.reduce((n, p) => n + p.payload.byteLength, 0),
    }));
    this.ready.unshift(...parts);
  }

  private async deadLetterDetached(batch: Batch, status: number, error: string): Promise<void> {
    const upload = this.deadLetter(batch, status, "", error, false).then(() => {});
    this.uploads.add(upload);
    await upload.finally(() => this.uploads.delete(upload));
  }

  /**
   * Write the batch to dead letters and ack it (true). If that fails (a full disk, a folder
   * that cannot be made) the records stay in the spool: the upload is retried later like a
   * retryable failure (`retryOnFailure`), or held until stop releases them (false).
   */
  private deadLetter(batch: Batch, status: number, answer: string, error: string, retryOnFailure = true): Promise<boolean> {
    this.setError(error);
    const job = this.deadLetterQueue.then(() => this.writeDeadLetter(batch, status, answer, error, retryOnFailure));
    this.deadLetterQueue = job.catch(() => {});
    return job;
  }

  private async writeDeadLetter(batch: Batch, status: number, answer: string, error: string, retryOnFailure: boolean): Promise<boolean> {
    await (this.deadLetterScan ??= this.scanDeadLetters());
    const dir = this.opts.deadLetterDir;
    const stamp = new Date().toISOString().replace(/[:.]/g, "-");
    const ext = batch.kind === "json" ? "ndjson" : "txt";
    const payload = concat(batch.pieces.map((p) => p.payload), batch.bytes);
    const info = new TextEncoder().encode(
      JSON.stringify(
        {
          ...batch.meta,
          kind: batch.kind,
          file: fileNameFor(batch.meta.file ?? batch.meta.input, batch.kind),
          events: batch.events,
          bytes: batch.bytes,
          status,
          error,
          answer,
          url: this.output.destination(),
          at: new Date().toISOString(),
        },
        null,
        2,
      ) + "\n",
    );
    let base = "";
    const created: string[] = [];
    try {
      await mkdir(dir, { recursive: true });
      for (;;) {
        // The number is padded so that name order stays age order within one millisecond.
        base = join(dir, `${stamp}-${safeName(batch.meta.input)}-${String(++this.deadLetterSeq).padStart(6, "0")}`);
        try {
          await writeFile(`${base}.${ext}`, payload, { flag: "wx" });
          created.push(`${base}.${ext}`);
          break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException)?.code !== "EEXIST") {
            // "wx" may have created the file before the write failed (ENOSPC): a torn copy.
            created.push(`${base}.${ext}`);
            throw err;
          }
        }
      }
      created.push(`${base}.json`);
      await writeFile(`${base}.json`, info);
    } catch (err) {
      for (const path of created) await unlink(path).catch(() => {});
      const why = isNoSpace(err) ? `the disk is full (${errorMessage(err)})` : errorMessage(err);
      const message = `cannot write dead letter in ${dir}: ${why}; the upload stays in the spool (${error})`;
      this.log.error("cannot write dead letter; the upload stays in the spool and is retried", { dir, error: why, events: batch.events });
      if (!this.stopping && retryOnFailure) this.retryLater(batch, message, undefined, true, "local");
      else this.setError(message);
      return false;
    }
    this.deadLetterBytes += payload.byteLength + info.byteLength;
    this.counters.dead_lettered++;
    // status 0: no API verdict (a record this agent cannot route).
    if (status > 0) this.judged(true);
    this.log.error("the API rejected an upload; it was moved to dead letters", {
      input: batch.meta.input,
      status,
      events: batch.events,
      file: `${base}.${ext}`,
      error,
    });
    this.finish(batch);
    await this.trimDeadLetters();
    return true;
  }

  /** Once at start: the folder's bytes, and its oldest dead letters; trimmed if already over the bound. */
  private async scanDeadLetters(): Promise<void> {
    try {
      const { groups, bytes } = await this.listDeadLetters(true);
      this.deadLetterBytes += bytes;
      this.oldestDeadLetters = groups;
    } catch (err) {
      this.log.warn("cannot read the dead-letter folder; its size counts from now on", { dir: this.opts.deadLetterDir, error: errorMessage(err) });
    }
    await this.trimDeadLetters();
  }

  /**
   * The oldest OLDEST_PER_SCAN dead letters with their file sizes (names start with an ISO
   * time, so name order is age order), and with `all` the bytes of every file in the folder.
   */
  private async listDeadLetters(all: boolean): Promise<{ groups: DeadLetterFiles[]; bytes: number }> {
    const dir = this.opts.deadLetterDir;
    let entries: import("node:fs").Dirent[];
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException)?.code === "ENOENT") return { groups: [], bytes: 0 };
      throw err;
    }
    const names = entries.filter((e) => e.isFile()).map((e) => e.name).sort();
    const sizeOf = async (name: string) => {
      try {
        return (await stat(join(dir, name))).size;
      } catch {
        return 0; // removed meanwhile
      }
    };
    const groups: DeadLetterFiles[] = [];
    let bytes = 0;
    let last = "";
    for (const name of names) {
      const dot = name.lastIndexOf(".");
      const base = dot > 0 ? name.slice(0, dot) : name;
      const oldest = base === last || groups.length < OLDEST_PER_SCAN;
      if (!oldest && !all) break;
      const size = await sizeOf(name);
      bytes += size;
      if (!oldest) continue;
      if (base === last) {
        groups.at(-1)!.names.push(name);
        groups.at(-1)!.bytes.push(size);
      } else groups.push({ names: [name], bytes: [size] });
      last = base;
    }
    return { groups, bytes };
  }

  /** Remove the oldest dead letters while the folder is over its bound. */
  private async trimDeadLetters(): Promise<void> {
    const dir = this.opts.deadLetterDir;
    let removed = 0;
    let freed = 0;
    while (this.deadLetterBytes > this.deadLetterMaxBytes) {
      if (this.oldestDeadLetters.length === 0) {
        try {
          this.oldestDeadLetters = (await this.listDeadLetters(false)).groups;
        } catch (err) {
          this.log.warn("cannot list the dead-letter folder to remove the oldest", { dir, error: errorMessage(err) });
          break;
        }
        // Nothing there: what was counted is gone (removed by hand).
        if (this.oldestDeadLetters.length === 0) {
          this.deadLetterBytes = 0;
          break;
        }
      }
      const oldest = this.oldestDeadLetters.shift()!;
      let failed: unknown;
      for (let i = 0; i < oldest.names.length; i++) {
        try {
          await unlink(join(dir, oldest.names[i]!));
        } catch (err) {
          if ((err as NodeJS.ErrnoException)?.code !== "ENOENT") {
            failed = err;
            continue;
          }
        }
        this.deadLetterBytes = Math.max(0, this.deadLetterBytes - oldest.bytes[i]!);
        freed += oldest.bytes[i]!;
      }
      if (failed !== undefined) {
        // The next write tries again; a folder that refuses removals must not spin here.
        this.oldestDeadLetters = [];
        this.log.warn("cannot remove an old dead letter", { dir, file: oldest.names[0], error: errorMessage(failed) });
        break;
      }
      removed++;
      this.deadLetterRemoved++;
    }
    if (removed > 0) {
      this.log.warn("dead-letter folder over its bound ([dead_letter] max_bytes): removed the oldest", {
        removed,
        freed_bytes: freed,
        bytes: this.deadLetterBytes,
        max_bytes: this.deadLetterMaxBytes,
      });
    }
  }

}

/** Offset where a payload splits into two non-empty sets of whole lines, or -1 (one line). */
function lineCut(payload: Uint8Array): number {
  const mid = payload.byteLength >> 1;
  const after = payload.indexOf(10, mid);
  if (after !== -1 && after + 1 < payload.byteLength) return after + 1;
  const before = mid > 0 ? payload.lastIndexOf(10, mid - 1) : -1;
  return before !== -1 ? before + 1 : -1;
}

function safeName(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 80) || "_";
}

