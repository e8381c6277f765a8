// The forwarder: takes records out of the spool, groups them per route into batches and
// uploads each batch to the Cybex-P API (POST {url}/raw). A record is acked, and so leaves
// the spool, only once an API 2xx carried it or it was written to dead letters.
//
// Failure handling follows the contract: network errors, timeouts, 408, 429 and 5xx retry
// the same batch with exponential backoff and full jitter (honouring Retry-After); 413
// splits the batch; other 4xx but 401/403 go to dead letters; 401/403 keep the data and
// retry slowly. While the API fails, a single upload at a time probes it.
//
// TLS: `tlsVerify: false` is passed to Bun's fetch as `tls: { rejectUnauthorized: false }`.
// Deno's fetch has no per-request or per-client switch for it (Deno.createHttpClient only
// adds CA certificates), so under Deno certificate checks stay on unless the process runs
// with `--unsafely-ignore-certificate-errors`; the forwarder logs a warning saying so.
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Backoff, sleep } from "./helpers/backoff.ts";
import { replaceSecrets, TLS_WARNING } from "./helpers/redact.ts";
import { errorMessage } from "./log.ts";
import type { EventKind, Logger } from "./plugin.ts";
import type { Spool, SpoolRecord } from "./spool.ts";
import { buildUploadBody, countNewlines, fileNameFor, type RouteMeta } from "./upload.ts";

export type { RouteMeta };

/** The spool route of an input: its upload metadata as a JSON text with a fixed key order. */
export function routeKey(m: RouteMeta): string {
  return JSON.stringify({ input: m.input, name: m.name, orgid: m.orgid, typetag: m.typetag, timezone: m.timezone });
}

export interface ApiOptions {
  url: string;
  token: string;
  timeoutMs: number;
  concurrency: number;
  tlsVerify: boolean;
}

export interface BatchLimits {
  maxEvents: number;
  maxBytes: number;
  maxWaitMs: number;
}

export type OutputState = "ok" | "retrying" | "unauthorized" | "failing";

export interface ForwarderStatus {
  state: OutputState;
  sent_events: number;
  sent_uploads: number;
  retries: number;
  dead_lettered: number;
  last_error: string | null;
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
}

export interface ForwarderOptions {
  spool: Spool;
  api: ApiOptions;
  /** Batch limits of an input (the input may be gone from the config: then the defaults). */
  batchFor: (meta: RouteMeta) => BatchLimits;
  deadLetterDir: string;
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

type Outcome =
  | { type: "sent" }
  | { type: "retry"; error: string; retryAfterMs?: number }
  | { type: "unauthorized"; error: string }
  | { type: "too_large"; error: string; answer: string }
  | { type: "rejected"; error: string; status: number; answer: string }
  | { type: "aborted" };

/** Bytes read from the spool per call: enough for several full batches, little memory. */
const READ_BYTES = 2 * 1024 * 1024;
/** Upload body buffers are reused; one this large or larger is not kept (a rare huge batch). */
const KEEP_BODY_BYTES = 4 * 1024 * 1024;
const ERROR_BODY_CHARS = 200;
const DEAD_LETTER_ANSWER_CHARS = 64 * 1024;
/** Retry-After beyond this is treated as this (a broken header must not stall for days). */
const MAX_RETRY_AFTER_MS = 3_600_000;

export class Forwarder {
  private api: ApiOptions;
  private readonly spool: Spool;
  private readonly log: Logger;
  private readonly backoff: Backoff;
  private readonly unauthorizedMs: number;
  private readonly failingAfterMs: number;

  private readonly routes = new Map<string, RouteMeta | null>();
  private readonly pending = new Map<string, Batch>();
  private ready: Batch[] = [];
  private readonly held = new Map<number, Held>();
  private readonly uploads = new Set<Promise<void>>();
  /** Body buffers not lent to an upload right now (at most one per upload slot). */
  private readonly bodyBuffers: Uint8Array<ArrayBuffer>[] = [];

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
  private deadLetterSeq = 0;
  private warnedTls = false;

  private readonly counters = { uploads: 0, events: 0, bytes: 0, retries: 0, dead_lettered: 0 };
  private readonly perInput = new Map<string, { events: number; uploads: number; bytes: number }>();
  private lastError: string | null = null;

  constructor(private readonly opts: ForwarderOptions) {
    this.spool = opts.spool;
    this.log = opts.log;
    this.api = opts.api;
    this.backoff = new Backoff({ baseMs: opts.retry?.baseMs ?? 1000, capMs: opts.retry?.capMs ?? 300_000 });
    this.unauthorizedMs = opts.retry?.unauthorizedMs ?? 60_000;
    this.failingAfterMs = opts.retry?.failingAfterMs ?? 60_000;
    this.checkTls();
  }

  start(): void {
    if (this.running || this.stopping) return;
    this.running = true;
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

  setApi(api: ApiOptions): void {
    const prev = this.api;
    this.api = api;
    this.checkTls();
    // New credentials or a new address deserve an attempt now, not after the old backoff.
    if (prev.token !== api.token || prev.url !== api.url) {
      this.gateUntil = 0;
      this.backoff.reset();
    }
    this.dispatch();
  }

  status(): ForwarderStatus {
    return {
      state: this.state(),
      sent_events: this.counters.events,
      sent_uploads: this.counters.uploads,
      retries: this.counters.retries,
      dead_lettered: this.counters.dead_lettered,
      last_error: this.lastError,
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

  private state(): OutputState {
    if (this.degraded === "unauthorized") return "unauthorized";
    if (this.degraded === "retry") return Date.now() - this.failingSince >= this.failingAfterMs ? "failing" : "retrying";
    return "ok";
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
    return this.ready.length < Math.max(2, this.api.concurrency);
  }

  /** Add a record to its route's batch; returns the batch key. */
  private take(r: SpoolRecord): string {
    const meta = this.metaOf(r.route);
    const held: Held = { id: r.id, parts: 1 };
    this.held.set(r.id, held);
    const piece: Piece = { held, payload: r.payload, count: r.count };
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
    if (batch.events >= batch.limits.maxEvents || batch.bytes >= batch.limits.maxBytes) this.closeBatch(batch);
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
          ? { input: m.input, name: m.name, orgid: m.orgid, typetag: m.typetag, timezone: m.timezone }
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
    this.flushTimer = this.gateTimer = null;
    this.flushAt = Infinity;
  }

  // ---- uploading ----

  private dispatch(): void {
    if (this.stopping) return;
    const limit = this.degraded ? 1 : Math.max(1, this.api.concurrency);
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
        return this.retryLater(batch, outcome.error, outcome.retryAfterMs, startedDegraded);
      case "unauthorized":
        return this.unauthorized(batch, outcome.error);
      case "too_large":
        return this.split(batch, outcome.error, outcome.answer);
      case "rejected":
        // The API answered and judged the data: it is reachable, so stop probing gingerly.
        if (this.degraded === "retry") this.recovered();
        return this.deadLetter(batch, outcome.status, outcome.answer, outcome.error);
    }
  }

  private endpoint(api: ApiOptions): string {
    return `${api.url.replace(/\/+$/, "")}/raw`;
  }

  private async post(batch: Batch): Promise<Outcome> {
    const api = this.api;
    const url = this.endpoint(api);
    const m = batch.meta;
    // The multipart head and tail: about 600 bytes of fixed text plus the UTF-8 of the metadata.
    const frame = 1024 + 3 * (m.input.length + m.name.length + m.orgid.length + m.typetag.length + m.timezone.length);
    const buffer = this.bodyBuffer(batch.bytes + frame);
    const { body, contentType } = buildUploadBody(
      batch.meta,
      batch.kind,
      batch.pieces.map((p) => p.payload),
      undefined,
      buffer,
    );
    try {
      return await this.send(api, url, body, contentType);
    } finally {
      // Returned only once fetch is done with the body, whether or not it copied it.
      if (buffer.byteLength < KEEP_BODY_BYTES && this.bodyBuffers.length < Math.max(1, this.api.concurrency)) {
        this.bodyBuffers.push(buffer);
      }
    }
  }

  /** A buffer of at least `bytes` (a typical body with its multipart head and tail): a kept one if it is large enough. */
  private bodyBuffer(bytes: number): Uint8Array<ArrayBuffer> {
    const i = this.bodyBuffers.findIndex((b) => b.byteLength >= bytes);
    if (i !== -1) return this.bodyBuffers.splice(i, 1)[0]!;
    // Room to grow a little: batches of one route vary in bytes from upload to upload.
    return new Uint8Array(Math.max(64 * 1024, bytes + (bytes >> 3)));
  }

  private async send(api: ApiOptions, url: string, body: Uint8Array<ArrayBuffer>, contentType: string): Promise<Outcome> {
    const init: RequestInit & { tls?: unknown } = {
      method: "POST",
      // Following a redirect would turn the POST into a GET (301/302) and get the data
      // rejected; a redirect is reported and retried instead, so the URL can be fixed.
      redirect: "manual",
      headers: { authorization: `Bearer ${api.token}`, "content-type": contentType },
      body,
      signal: AbortSignal.any([AbortSignal.timeout(api.timeoutMs), this.uploadStop.signal]),
    };
    if (!api.tlsVerify) init.tls = { rejectUnauthorized: false };
    let status: number;
    let answer: string;
    let retryAfter: string | null;
    let location: string | null;
    try {
      const res = await fetch(url, init);
      status = res.status;
      retryAfter = res.headers.get("retry-after");
      location = res.headers.get("location");
      answer = await res.text();
    } catch (err) {
      if (this.uploadStop.signal.aborted) return { type: "aborted" };
      const timedOut = (err as Error)?.name === "TimeoutError";
      return {
        type: "retry",
        error: this.clean(
          timedOut ? `timeout after ${api.timeoutMs} ms posting to ${displayUrl(url)}` : `network error posting to ${displayUrl(url)}: ${errorMessage(err)}`,
          api,
        ),
      };
    }
    if (status >= 200 && status < 300) return { type: "sent" };
    const error = this.clean(`HTTP ${status} from ${displayUrl(url)}: ${answer.slice(0, ERROR_BODY_CHARS)}`, api);
    if (status === 401 || status === 403) return { type: "unauthorized", error };
    if (status === 413) return { type: "too_large", error, answer: this.clean(answer.slice(0, DEAD_LETTER_ANSWER_CHARS), api, false) };
    if (status === 408 || status === 429 || status >= 500) return { type: "retry", error, retryAfterMs: parseRetryAfter(retryAfter) };
    if (status >= 400) return { type: "rejected", error, status, answer: this.clean(answer.slice(0, DEAD_LETTER_ANSWER_CHARS), api, false) };
    // 1xx/3xx as a final answer: [api] url is probably not the final address; keep the data.
    const hint = location ? ` (redirected to ${displayUrl(location)}; set [api] url to the final address)` : "";
    return { type: "retry", error: this.clean(`HTTP ${status} from ${displayUrl(url)}${hint}`, api) };
  }

  /** Never the token, whatever the server or the network layer put in it; one line unless told. */
  private clean(message: string, api: ApiOptions, oneLine = true): string {
    return replaceSecrets(oneLine ? message.replace(/\s+/g, " ").trim() : message, [api.token]);
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
    this.finish(batch);
    if (this.degraded) this.recovered();
  }

  private recovered(): void {
    this.log.info("API accepts uploads again", { after: this.degraded });
    this.degraded = null;
    this.backoff.reset();
    this.gateUntil = 0;
  }

  /** The batch's pieces are done (delivered or dead-lettered): ack records with no piece left. */
  private finish(batch: Batch): void {
    for (const p of batch.pieces) {
      if (--p.held.parts === 0 && this.held.delete(p.held.id)) this.spool.ack(p.held.id);
    }
  }

  private retryLater(batch: Batch, error: string, retryAfterMs: number | undefined, startedDegraded: boolean): void {
    this.counters.retries++;
    this.lastError = error;
    const now = Date.now();
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
  }

  private unauthorized(batch: Batch, error: string): void {
    this.counters.retries++;
    this.lastError = error;
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
  private split(batch: Batch, error: string, answer: string): Promise<void> | void {
    this.lastError = error;
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
        halves = [[{ held: piece.held, payload: a, count: countA }], [{ held: piece.held, payload: b, count: Math.max(0, piece.count - countA) }]];
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
    const upload = this.deadLetter(batch, status, "", error, false);
    this.uploads.add(upload);
    await upload.finally(() => this.uploads.delete(upload));
  }

  /** Write the batch to dead letters and ack it; if that fails, retry the upload later (`retryOnFailure`) or keep the records held until stop releases them. */
  private async deadLetter(batch: Batch, status: number, answer: string, error: string, retryOnFailure = true): Promise<void> {
    this.lastError = error;
    const dir = this.opts.deadLetterDir;
    const stamp = new Date().toISOString().replace(/[:.]/g, "-");
    const ext = batch.kind === "json" ? "ndjson" : "txt";
    const payload = concat(batch.pieces.map((p) => p.payload), batch.bytes);
    const info = {
      ...batch.meta,
      kind: batch.kind,
      file: fileNameFor(batch.meta.input, batch.kind),
      events: batch.events,
      bytes: batch.bytes,
      status,
      error,
      answer,
      url: displayUrl(this.endpoint(this.api)),
      at: new Date().toISOString(),
    };
    let base = "";
    try {
      await mkdir(dir, { recursive: true });
      for (;;) {
        base = join(dir, `${stamp}-${safeName(batch.meta.input)}-${++this.deadLetterSeq}`);
        try {
          await writeFile(`${base}.${ext}`, payload, { flag: "wx" });
          break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException)?.code !== "EEXIST") throw err;
        }
      }
      await writeFile(`${base}.json`, JSON.stringify(info, null, 2) + "\n");
    } catch (err) {
      // Without the dead-letter copy the records must stay in the spool: retry later.
      this.log.error("cannot write dead letter; keeping the upload", { dir, error: errorMessage(err) });
      if (!this.stopping && retryOnFailure) this.retryLater(batch, `writing dead letter in ${dir}: ${errorMessage(err)}`, undefined, true);
      return;
    }
    this.counters.dead_lettered++;
    this.log.error("the API rejected an upload; it was moved to dead letters", {
      input: batch.meta.input,
      status,
      events: batch.events,
      file: `${base}.${ext}`,
      error,
    });
    this.finish(batch);
  }

  private checkTls(): void {
    if (this.api.tlsVerify || this.warnedTls || (globalThis as any).Bun) return;
    this.warnedTls = true;
    this.log.warn(TLS_WARNING);
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

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

function safeName(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 80) || "_";
}

/** The URL without credentials, for messages. */
function displayUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = "";
    u.password = "";
    return u.toString();
  } catch {
    return url;
  }
}

/** Retry-After as delay-seconds or an HTTP date, in ms (bounded); undefined if absent or unreadable. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null) return undefined;
  const v = value.trim();
  let ms: number;
  if (/^\d+$/.test(v)) ms = Number(v) * 1000;
  else {
    const t = Date.parse(v);
    if (Number.isNaN(t)) return undefined;
    ms = Math.max(0, t - now);
  }
  return Math.min(ms, MAX_RETRY_AFTER_MS);
}
