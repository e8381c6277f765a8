// Event lines on their way to the spool: collected from every listener, emitted once per tick
// with one emit in flight, and the limits on how many may wait behind it. While they wait, TCP
// and TLS reading is paused and UDP datagrams are dropped (the listeners ask `full` and are
// told through BatcherEvents.pressure); a batch the spool refuses is kept and emitted again.
import type { InputContext } from "../../agent/plugin.ts";
import { Backoff, sleep } from "../../agent/backoff.ts";
import { JsonLineBuffer } from "./json-lines.ts";

/**
 * How many parsed events may wait behind a pending emit (the spool not keeping up), counted
 * both ways so that memory stays bounded whatever the message size.
 */
export interface QueueLimits {
  /** TCP and TLS sockets stop reading at this many events ... */
  tcpPauseEvents: number;
  /** ... or at this many bytes of event lines. */
  tcpPauseBytes: number;
  /** UDP datagrams are dropped at this many events ... */
  udpDropEvents: number;
  /** ... or at this many bytes of event lines. */
  udpDropBytes: number;
}

export const DEFAULT_LIMITS: QueueLimits = {
  tcpPauseEvents: 10_000, tcpPauseBytes: 4 * 1024 * 1024, udpDropEvents: 50_000, udpDropBytes: 16 * 1024 * 1024,
};
const EMIT_BATCH = 5_000;

/** A refused emit is retried after a full-jitter delay of at most this, growing from RETRY_BASE_MS. */
const RETRY_BASE_MS = 50;
const RETRY_CAP_MS = 2_000;

/** What the batcher tells the input about the spool. */
export interface BatcherEvents {
  /** TCP and TLS reading must stop (true) or may go on (false). */
  pressure(paused: boolean): void;
  /** The spool refused the batch in flight (not because the input is stopping); it is kept and retried. */
  refused(err: unknown): void;
  /** A refused batch was taken after `attempts` refusals, `ms` after the first. */
  recovered(attempts: number, ms: number): void;
  /** The input stopped while the spool refused `events` events: they are not spooled. */
  lost(err: unknown, events: number): void;
}

/**
 * Collects event lines and emits them once per tick, one emit in flight at a time. A batch the
 * spool refuses is kept and emitted again (same batch, so order holds) until it is taken or the
 * input stops; meanwhile TCP and TLS reading stays paused, as on a full spool.
 */
export class Batcher {
  /** Event lines not emitted yet. */
  readonly lines = new JsonLineBuffer();
  private scheduled = false;
  private inFlight: Promise<void> | null = null;
  private paused = false;
  /** The batch in flight was refused and waits for its next attempt. */
  private refusing = false;
  private readonly backoff = new Backoff({ baseMs: RETRY_BASE_MS, capMs: RETRY_CAP_MS });

  constructor(
    private readonly ctx: InputContext,
    private readonly limits: QueueLimits,
    private readonly events: BatcherEvents,
  ) {}

  /** Whether a UDP datagram must be dropped now. */
  get full(): boolean {
    return this.inFlight !== null && (this.lines.lines >= this.limits.udpDropEvents || this.lines.length >= this.limits.udpDropBytes);
  }

  /** Whether the spool is refusing the batch in flight. */
  get retrying(): boolean {
    return this.refusing;
  }

  /** Events received and not handed to the spool yet (the batch in flight not counted). */
  get queued(): number {
    return this.lines.lines;
  }

  private get overPauseLimit(): boolean {
    return this.lines.lines >= this.limits.tcpPauseEvents || this.lines.length >= this.limits.tcpPauseBytes;
  }

  /** Pauses or resumes TCP reading to match the queue and the spool. */
  private updatePressure(): void {
    const pause = this.refusing || (this.inFlight !== null && this.overPauseLimit);
    if (pause === this.paused) return;
    this.paused = pause;
    this.events.pressure(pause);
  }

  /** Call after writing lines: schedules their emit, and pauses TCP if too many wait. */
  added(): void {
    if (this.lines.lines === 0) return;
    this.updatePressure();
    if (!this.scheduled && !this.inFlight) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.pump();
      });
    }
  }

  private pump(): void {
    if (this.inFlight || this.lines.lines === 0) return;
    const batch = this.lines.take(EMIT_BATCH);
    this.inFlight = this.emitUntilTaken(batch).then(() => {
      this.inFlight = null;
      this.pump();
      this.updatePressure();
    });
  }

  /** Emits `batch`, again after each refusal, until the spool takes it or the input stops. */
  private async emitUntilTaken(batch: string[]): Promise<void> {
    let attempts = 0;
    let since = 0;
    for (;;) {
      try {
        await this.ctx.emitJsonLines(batch);
        if (attempts > 0) {
          this.refusing = false;
          this.backoff.reset();
          this.events.recovered(attempts, Date.now() - since);
        }
        return;
      } catch (err) {
        if (this.ctx.signal.aborted) {
          this.refusing = false;
          this.events.lost(err, batch.length);
          return;
        }
        if (attempts++ === 0) since = Date.now();
        this.refusing = true;
        this.updatePressure();
        this.events.refused(err);
        await sleep(this.backoff.next(), this.ctx.signal);
      }
    }
  }

  /** Resolves once everything queued is emitted, or after `ms`. */
  async drain(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    this.pump();
    while ((this.inFlight || this.lines.lines > 0) && Date.now() < deadline) {
      await Promise.race([this.inFlight, new Promise((r) => setTimeout(r, 20))]);
      this.pump();
    }
  }
}
