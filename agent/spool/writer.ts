// The append side of the spool: events are batched into records in a scratch buffer, appends
// that find the spool full wait in a queue (served in order, cancellable), and each append is
// written to the active segment in one piece; fsync.ts makes the writes durable.
//
// All or nothing: an append's records are written in one write once there is room for all of
// them, so a failure or a cancelled wait leaves none of them behind.
import * as fs from "node:fs";
import { Buffer } from "node:buffer";
import type { Logger } from "../plugin.ts";
import { isNoSpace } from "../fserrors.ts";
import { errorMessage } from "../errortext.ts";
import { type Segment, writeFully } from "./segment.ts";
import { HEADER_BYTES, KIND_JSON, KIND_TEXT, MAX_PAYLOAD, sealRecord, writeHeader } from "./record.ts";
import type { Ledger } from "./ledger.ts";
import type { SpoolReader } from "./reader.ts";
import { type FreeSpace, SPACE_RECHECK_MS } from "./space.ts";
import type { Durability } from "./fsync.ts";

/** Why appends wait: the spool's own bound, or the free space on its filesystem. */
export type FullReason = "max_bytes" | "min_free";

export interface AppendOptions {
  maxEventsPerRecord?: number;
  maxBytesPerRecord?: number;
  /** Resolve only after an fsync that covers these events. */
  sync?: boolean;
  /**
   * Give up waiting for space when aborted (already aborted: do not wait at all): the append
   * rejects with an AbortError and none of its events are in the spool.
   */
  signal?: AbortSignal;
}

const DEFAULT_EVENTS_PER_RECORD = 1000;
const DEFAULT_BYTES_PER_RECORD = 1 << 20;
const SCRATCH_INITIAL_BYTES = 256 << 10;
const SCRATCH_KEEP_BYTES = 8 << 20;
/** One append is written in one piece, so it is either wholly in the spool or not at all. */
const MAX_APPEND_BYTES = 256 << 20;

const encoder = new TextEncoder();

function abortError(signal: AbortSignal): unknown {
  return signal.reason instanceof Error ? signal.reason : new DOMException("the append was cancelled", "AbortError");
}

/**
 * Events already framed as a record's payload keeps them: UTF-8, each event a line ending in
 * "\n", `count` lines in all. Appended without making strings of them.
 */
export interface FramedEvents {
  bytes: Uint8Array;
  count: number;
}

/** One append() call waiting to be written. */
interface AppendJob {
  routeBytes: Uint8Array;
  kindCode: number;
  events: string[] | FramedEvents;
  maxEvents: number;
  maxPayload: number;
  sync: boolean;
  /** Length and event count of each record, once the job is encoded into the scratch buffer. */
  recordLens: number[];
  recordCounts: number[];
  signal: AbortSignal | undefined;
  onAbort: (() => void) | null;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export interface WriterOptions {
  maxBytes: number;
  whenFull: "block" | "drop_oldest";
  segmentBytes: number;
  dir: string;
  log: Logger;
}

export class SpoolWriter {
  /** Roll to a new segment before an append would make the active one larger than this. */
  segmentBytes: number;
  droppedEvents = 0;
  private readonly maxBytes: number;
  private readonly whenFull: "block" | "drop_oldest";
  private readonly dir: string;
  private readonly log: Logger;

  private scratch: Uint8Array = new Uint8Array(SCRATCH_INITIAL_BYTES);
  private scratchView: DataView = new DataView(this.scratch.buffer);
  private scratchLen = 0;
  /** The job whose records the scratch buffer holds (encoded once, however long it waits). */
  private encodedJob: AppendJob | null = null;
  private routeCache = new Map<string, Uint8Array>();
  private appendQueue: AppendJob[] = [];
  private blockedSince = 0;
  private spaceTimer: ReturnType<typeof setInterval> | null = null;
  private fullReason: FullReason | null = null;

  constructor(
    opts: WriterOptions,
    private readonly ledger: Ledger,
    private readonly reader: SpoolReader,
    private readonly space: FreeSpace,
    private readonly durability: Durability,
  ) {
    this.maxBytes = opts.maxBytes;
    this.whenFull = opts.whenFull;
    this.segmentBytes = opts.segmentBytes;
    this.dir = opts.dir;
    this.log = opts.log;
  }

  /** Appends are waiting for room. */
  get blocked(): boolean {
    return this.appendQueue.length > 0;
  }

  /** What the waiting appends wait for (null when none wait). */
  get full(): FullReason | null {
    return this.appendQueue.length > 0 ? this.fullReason ?? "max_bytes" : null;
  }

  append(route: string, kind: "text" | "json", events: string[] | FramedEvents, opts?: AppendOptions): Promise<void> {
    if (Array.isArray(events) ? events.length === 0 : events.count === 0) return Promise.resolve();
    const signal = opts?.signal;
    let routeBytes = this.routeCache.get(route);
    if (routeBytes === undefined) {
      routeBytes = encoder.encode(route);
      if (routeBytes.length > 0xffff) return Promise.reject(new Error(`spool route key too long (${routeBytes.length} bytes)`));
      if (this.routeCache.size >= 1024) this.routeCache.clear();
      this.routeCache.set(route, routeBytes);
    }
    return new Promise<void>((resolve, reject) => {
      const job: AppendJob = {
        routeBytes,
        kindCode: kind === "json" ? KIND_JSON : KIND_TEXT,
        events,
        maxEvents: Math.max(1, opts?.maxEventsPerRecord ?? DEFAULT_EVENTS_PER_RECORD),
        maxPayload: Math.max(1, opts?.maxBytesPerRecord ?? DEFAULT_BYTES_PER_RECORD),
        sync: opts?.sync === true,
        recordLens: [],
        recordCounts: [],
        signal,
        onAbort: null,
        resolve,
        reject,
      };
      // Appends queue behind a blocked one, so waiting writers are served in order.
      if (this.appendQueue.length > 0) {
        if (signal?.aborted) reject(abortError(signal));
        else this.enqueue(job);
        return;
      }
      let done: boolean;
      try {
        done = this.pump(job);
      } catch (err) {
        this.forgetEncoding(job);
        reject(err);
        return;
      }
      if (done) this.finishJob(job);
      else if (signal?.aborted) {
        this.forgetEncoding(job);
        reject(abortError(signal));
      } else this.block(job);
    });
  }

  /** Acks freed room: waiting appends may fit now. */
  roomFreed(): void {
    if (this.appendQueue.length > 0) this.pumpQueue();
  }

  /** A deleted segment's files are gone: appends waiting for disk space may fit now. */
  diskFreed(): void {
    if (this.fullReason === "min_free") {
      this.space.ask();
      this.pumpQueue();
    }
  }

  /** The spool closes: waiting appends are rejected with `err`, having written nothing. */
  close(err: Error): void {
    for (const job of this.appendQueue.splice(0)) {
      this.detachAbort(job);
      job.reject(err);
    }
    this.encodedJob = null;
    this.scratchLen = 0;
    if (this.spaceTimer !== null) clearInterval(this.spaceTimer);
    this.spaceTimer = null;
    this.fullReason = null;
    this.blockedSince = 0;
  }

  /** Write the job if there is room for all of it; true when written. */
  private pump(job: AppendJob): boolean {
    if (this.encodedJob !== job) this.encodeJob(job);
    const len = this.scratchLen;
    let full = this.checkRoom(len);
    if (full !== null && this.whenFull === "drop_oldest") {
      this.dropOldestUntilFits(len);
      full = this.checkRoom(len);
    }
    if (full === null && !this.writeJob(job)) full = "min_free";
    if (full !== null) {
      this.fullReason = full;
      if (full === "min_free") this.giveBackActiveSegment();
      return false;
    }
    this.forgetEncoding(job);
    return true;
  }

  /** Why `len` more bytes do not fit now, or null if they do. */
  private checkRoom(len: number): FullReason | null {
    const total = this.ledger.totalBytes;
    if (total > 0 && total + len > this.maxBytes) return "max_bytes";
    if (this.space.wouldGoBelow(len)) return "min_free";
    return null;
  }

  /**
   * Waiting for disk space while the active segment holds only delivered records: start a new
   * segment so the old one (all delivered) is deleted and its space given back.
   */
  private giveBackActiveSegment(): void {
    const seg = this.ledger.active;
    if (seg.size === 0 || seg.liveRecords > 0) return;
    try {
      this.ledger.roll();
    } catch {
      // no room even for a new file: the delivered records stay until there is
    }
  }

  /** The job's records (not yet written) are no longer in the scratch buffer. */
  private forgetEncoding(job: AppendJob): void {
    if (this.encodedJob === job) {
      this.encodedJob = null;
      this.scratchLen = 0;
    }
    // One huge append must not pin a huge scratch buffer for the life of the process.
    if (this.encodedJob === null && this.scratch.length > SCRATCH_KEEP_BYTES) this.setScratch(new Uint8Array(SCRATCH_INITIAL_BYTES));
  }

  private finishJob(job: AppendJob): void {
    this.detachAbort(job);
    if (job.sync || this.durability.policy === "always") {
      this.durability.syncWritten().then(job.resolve, job.reject);
    } else {
      job.resolve();
    }
  }

  private enqueue(job: AppendJob): void {
    this.appendQueue.push(job);
    const signal = job.signal;
    if (signal === undefined) return;
    job.onAbort = () => this.cancel(job);
    signal.addEventListener("abort", job.onAbort, { once: true });
  }

  private detachAbort(job: AppendJob): void {
    if (job.onAbort !== null) job.signal!.removeEventListener("abort", job.onAbort);
    job.onAbort = null;
  }

  /** A waiting append whose caller gave up: it leaves the queue having written nothing. */
  private cancel(job: AppendJob): void {
    const i = this.appendQueue.indexOf(job);
    if (i < 0) return;
    this.appendQueue.splice(i, 1);
    job.onAbort = null;
    this.forgetEncoding(job);
    job.reject(abortError(job.signal!));
    // The next one may fit where this one did not.
    if (i === 0) this.pumpQueue();
  }

  private block(job: AppendJob): void {
    this.enqueue(job);
    if (this.blockedSince === 0) {
      this.blockedSince = Date.now();
      if (this.fullReason === "min_free") {
        this.log.warn("spool full: free space on its filesystem is below spool.min_free; appends wait", {
          dir: this.dir, free_bytes: this.space.freeBytes, min_free_bytes: this.space.minFreeBytes, bytes: this.ledger.totalBytes,
        });
      } else {
        this.log.warn("spool full: appends wait for deliveries to free space", {
          dir: this.dir, bytes: this.ledger.totalBytes, max_bytes: this.maxBytes,
        });
      }
    }
    // Deliveries free space through acks; space others free on the filesystem shows up here.
    this.spaceTimer ??= setInterval(() => {
      this.space.ask();
      this.pumpQueue();
    }, SPACE_RECHECK_MS);
    (this.spaceTimer as { unref?: () => void }).unref?.();
  }

  /** Run queued appends in order while space allows. */
  private pumpQueue(): void {
    while (this.appendQueue.length > 0) {
      const job = this.appendQueue[0]!;
      let done: boolean;
      try {
        done = this.pump(job);
      } catch (err) {
        this.appendQueue.shift();
        this.detachAbort(job);
        this.forgetEncoding(job);
        job.reject(err);
        continue;
      }
      if (!done) return;
      this.appendQueue.shift();
      this.finishJob(job);
    }
    this.unblocked();
  }

  private unblocked(): void {
    if (this.spaceTimer !== null) {
      clearInterval(this.spaceTimer);
      this.spaceTimer = null;
    }
    this.fullReason = null;
    if (this.blockedSince !== 0) {
      this.log.info("spool has space again: appends resumed", { dir: this.dir, waited_ms: Date.now() - this.blockedSince });
      this.blockedSince = 0;
    }
  }

  /** Encode every record of the job into the scratch buffer, back to back. */
  private encodeJob(job: AppendJob): void {
    this.encodedJob = null;
    this.scratchLen = 0;
    job.recordLens = [];
    job.recordCounts = [];
    const events = job.events;
    const total = Array.isArray(events) ? events.length : events.count;
    if (!Array.isArray(events)) this.ensureScratch(events.bytes.byteLength + (HEADER_BYTES + job.routeBytes.length) * Math.ceil(total / job.maxEvents));
    let next = 0;
    let nextByte = 0;
    while (next < total) {
      const at = this.scratchLen;
      let end: number;
      if (Array.isArray(events)) end = this.encodeRecord(job, events, next, at);
      else [end, nextByte] = this.encodeFramedRecord(job, events, next, nextByte, at);
      job.recordLens.push(this.scratchLen - at);
      job.recordCounts.push(end - next);
      next = end;
      if (this.scratchLen > MAX_APPEND_BYTES) {
        this.scratchLen = 0;
        throw new Error(`one append of ${total} events is more than ${MAX_APPEND_BYTES >> 20} MiB; hand them over in parts`);
      }
    }
    this.encodedJob = job;
  }

  /**
   * Copy the framed events [start, ...) (from byte `from`) as one record at offset `at` of the
   * scratch buffer: as many whole lines as the record's limits take, at least one. Returns the
   * index and the byte offset after its last event.
   */
  private encodeFramedRecord(job: AppendJob, framed: FramedEvents, start: number, from: number, at: number): [number, number] {
    const { bytes } = framed;
    let end = start;
    let to = from;
    while (end < framed.count && end - start < job.maxEvents) {
      const nl = bytes.indexOf(0x0a, to);
      const lineEnd = nl === -1 ? bytes.byteLength : nl + 1;
      if (end > start && lineEnd - from > job.maxPayload) break;
      to = lineEnd;
      end++;
    }
    const payloadLen = to - from;
    if (payloadLen > MAX_PAYLOAD) throw new Error(`spool record too large (${payloadLen} bytes)`);
    const routeLen = job.routeBytes.length;
    const payloadAt = at + HEADER_BYTES + routeLen;
    this.ensureScratch(payloadAt + payloadLen);
    const scratch = this.scratch;
    scratch.set(bytes.subarray(from, to), payloadAt);
    scratch.set(job.routeBytes, at + HEADER_BYTES);
    const recordEnd = payloadAt + payloadLen;
    writeHeader(this.scratchView, at, payloadLen, Date.now(), end - start, job.kindCode, routeLen);
    sealRecord(scratch, this.scratchView, at, recordEnd - at);
    this.scratchLen = recordEnd;
    return [end, to];
  }

  /**
   * Encode the record of events [start, ...) at offset `at` of the scratch buffer (scratchLen
   * becomes its end); returns the index after its last event.
   */
  private encodeRecord(job: AppendJob, events: string[], start: number, at: number): number {
    let end = Math.min(events.length, start + job.maxEvents);
    let chars = 0;
    for (let i = start; i < end; i++) chars += events[i]!.length + 1;
    // UTF-8 needs at most 3 bytes per UTF-16 unit: only measure exactly when that could exceed the cap.
    if (chars * 3 > job.maxPayload && end - start > 1) {
      let bytes = 0;
      let i = start;
      for (; i < end; i++) {
        const b = Buffer.byteLength(events[i]!, "utf8") + 1;
        if (i > start && bytes + b > job.maxPayload) break;
        bytes += b;
      }
      end = i;
      chars = 0;
      for (let j = start; j < end; j++) chars += events[j]!.length + 1;
    }
    const text = start === 0 && end === events.length ? events.join("\n") : events.slice(start, end).join("\n");
    const routeLen = job.routeBytes.length;
    const payloadAt = at + HEADER_BYTES + routeLen;
    this.ensureScratch(payloadAt + chars * 3);
    const scratch = this.scratch;
    const { written } = encoder.encodeInto(text, scratch.subarray(payloadAt));
    scratch[payloadAt + written!] = 0x0a;
    const payloadLen = written! + 1;
    if (payloadLen > MAX_PAYLOAD) throw new Error(`spool record too large (${payloadLen} bytes)`);
    const recordEnd = payloadAt + payloadLen;
    scratch.set(job.routeBytes, at + HEADER_BYTES);
    writeHeader(this.scratchView, at, payloadLen, Date.now(), end - start, job.kindCode, routeLen);
    sealRecord(scratch, this.scratchView, at, recordEnd - at);
    this.scratchLen = recordEnd;
    return end;
  }

  /** Room for `len` bytes in the scratch buffer, keeping what is encoded so far. */
  private ensureScratch(len: number): void {
    if (this.scratch.length >= len) return;
    let size = this.scratch.length;
    while (size < len) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.scratch.subarray(0, this.scratchLen));
    this.setScratch(grown);
  }

  private setScratch(buf: Uint8Array): void {
    this.scratch = buf;
    this.scratchView = new DataView(buf.buffer);
  }

  /**
   * Write the encoded job in one piece. False when the filesystem is full (nothing of it stays
   * on disk); other write errors throw.
   */
  private writeJob(job: AppendJob): boolean {
    const len = this.scratchLen;
    const ledger = this.ledger;
    let seg = ledger.active;
    try {
      if (seg.broken || (seg.size > 0 && seg.size + len > this.segmentBytes)) {
        ledger.roll();
        seg = ledger.active;
      }
      writeFully(seg.fd!, this.scratch, len, seg.size);
    } catch (err) {
      let truncated = true;
      if (seg.fd !== null && seg === ledger.active) {
        // Part of the append may be on disk: keep it out of the valid range.
        try {
          fs.ftruncateSync(seg.fd, seg.size);
        } catch {
          truncated = false;
        }
      }
      if (!truncated) seg.broken = true; // recovery will find and skip the torn bytes; never append after them
      if (isNoSpace(err)) {
        this.space.exhausted();
        return false;
      }
      throw err;
    }
    let events = 0;
    for (const c of job.recordCounts) events += c;
    ledger.written(seg, len, job.recordLens.length, events);
    this.space.used(len);
    this.durability.written(seg);
    this.reader.dataWritten();
    return true;
  }

  private dropOldestUntilFits(len: number): void {
    const ledger = this.ledger;
    while (ledger.totalBytes > 0 && this.checkRoom(len) !== null) {
      const oldest = ledger.segments[0]!;
      if (oldest === ledger.active) ledger.roll();
      if (oldest.deleted) continue; // roll() deleted it: it held nothing unacked
      // Records already handed out are being delivered: they are not counted as dropped, and
      // their late acks are ignored.
      const inFlightEvents = this.reader.dropSegment(oldest);
      const dropped = oldest.liveEvents - inFlightEvents;
      this.droppedEvents += dropped;
      this.log.warn("spool full: dropped oldest events", {
        dir: this.dir, segment: oldest.name, events: dropped, bytes: oldest.liveBytes, full: this.checkRoom(len),
      });
      // At once, not in the background: the next look at the free space must see it gone.
      ledger.delete(oldest, false);
      this.space.ask();
    }
  }
}
