// Live capture of what inputs hand to the spool (GET /tap, `cybexp-agent tap`, the console's
// live tail). An input never waits for a tap and a tap never holds more than a bounded queue:
// - Nobody tapping costs one property read per emit (`TapHub.active`).
// - Each subscriber samples: at most `ratePerSecond` events a second are taken (a token
//   bucket); the rest are counted as skipped, as are events that meet a full queue because the
//   client reads slower than events come. Nothing of the input's own path is slowed or kept.
// - Events are parsed and stamped only once sampled, so a busy input tapped at 100/s pays for
//   100 events a second, not for all of them.
import type { EventKind } from "./plugin.ts";

/** One tapped event, as GET /tap sends it. */
export interface TapMessage {
  input: string;
  /** The JSON object, or the text line as a string. */
  event: unknown;
  ts: string;
}

export interface TapOptions {
  /** Input names to watch; empty: every input. */
  inputs: string[];
  /** Events a second at most (the rest are skipped). */
  ratePerSecond: number;
  /** Messages held for a client that reads slower than events come. */
  queueLimit: number;
}

export const TAP_DEFAULTS = { ratePerSecond: 100, queueLimit: 1000, maxRatePerSecond: 10_000 } as const;

/** One client's view: a bounded queue it drains, and what sampling or a full queue left out. */
export class TapSubscription {
  private readonly names: Set<string> | null;
  private readonly queue: TapMessage[] = [];
  private tokens: number;
  private refilledAt = Date.now();
  private waiter: (() => void) | null = null;
  private closedFlag = false;
  /** Events left out since the last takeSkipped(). */
  private skipped = 0;

  constructor(readonly options: TapOptions, private readonly onClose: (s: TapSubscription) => void) {
    this.names = options.inputs.length ? new Set(options.inputs) : null;
    this.tokens = options.ratePerSecond;
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  wants(input: string): boolean {
    return this.names === null || this.names.has(input);
  }

  /** Called by the hub for every emit of an input this subscription wants. */
  offer(input: string, kind: EventKind, lines: readonly string[]): void {
    if (this.closedFlag) return;
    const now = Date.now();
    const rate = this.options.ratePerSecond;
    this.tokens = Math.min(rate, this.tokens + ((now - this.refilledAt) / 1000) * rate);
    this.refilledAt = now;
    const room = this.options.queueLimit - this.queue.length;
    const take = Math.max(0, Math.min(lines.length, Math.floor(this.tokens), room));
    this.skipped += lines.length - take;
    if (take === 0) return;
    this.tokens -= take;
    const ts = new Date(now).toISOString();
    // Spread the sample over the batch rather than taking its head only.
    const step = lines.length / take;
    for (let i = 0; i < take; i++) {
      const line = lines[Math.floor(i * step)]!;
      this.queue.push({ input, event: kind === "json" ? parseOrText(line) : line, ts });
    }
    this.wake();
  }

  /** The messages queued so far (empty when none); waits for some with `next()`. */
  drain(): TapMessage[] {
    return this.queue.splice(0, this.queue.length);
  }

  /** Resolves when a message is queued, the subscription closes, or `ms` pass. */
  next(ms: number): Promise<void> {
    if (this.queue.length || this.closedFlag) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        resolve();
      }, ms);
      this.waiter = () => {
        clearTimeout(timer);
        this.waiter = null;
        resolve();
      };
    });
  }

  /** What was left out since the last call (sampling or a full queue), and resets the count. */
  takeSkipped(): number {
    const n = this.skipped;
    this.skipped = 0;
    return n;
  }

  close(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    this.queue.length = 0;
    this.wake();
    this.onClose(this);
  }

  private wake(): void {
    this.waiter?.();
  }
}

function parseOrText(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return line;
  }
}

/** The subscriptions of one agent; the input contexts offer every emit to it. */
export class TapHub {
  private readonly subs = new Set<TapSubscription>();
  /** True while someone taps: the one check an emit makes when nobody does. */
  active = false;

  subscribe(options: Partial<TapOptions> & { inputs: string[] }): TapSubscription {
    const sub = new TapSubscription(
      {
        inputs: options.inputs,
        ratePerSecond: options.ratePerSecond ?? TAP_DEFAULTS.ratePerSecond,
        queueLimit: options.queueLimit ?? TAP_DEFAULTS.queueLimit,
      },
      (s) => {
        this.subs.delete(s);
        this.active = this.subs.size > 0;
      },
    );
    this.subs.add(sub);
    this.active = true;
    return sub;
  }

  /** Events an input handed to the spool (after the spool took them). */
  offer(input: string, kind: EventKind, lines: readonly string[]): void {
    for (const sub of this.subs) if (sub.wants(input)) sub.offer(input, kind, lines);
  }

  get subscribers(): number {
    return this.subs.size;
  }

  closeAll(): void {
    for (const sub of [...this.subs]) sub.close();
  }
}
