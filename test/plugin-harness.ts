// Plugin tests: run an input against the real spool, and read back every event it handed over.
import type { Spool } from "../agent/spool.ts";

export interface SpooledEvent {
  kind: string;
  event: string;
}

/** Moves every unread spool record into `into` (one entry per event) and acks it. */
export function drainSpool(spool: Spool, into: SpooledEvent[]): SpooledEvent[] {
  for (;;) {
    const recs = spool.read(64 << 20);
    if (recs.length === 0) return into;
    for (const r of recs) {
      const body = new TextDecoder().decode(r.payload);
      for (const e of body.split("\n").slice(0, -1)) into.push({ kind: r.kind, event: e });
      spool.ack(r.id);
    }
  }
}

/**
 * Runs an input until the returned stop() (idempotent) aborts it and waits for run() to return.
 * `run` receives the abort signal to build its context with.
 */
export function runInput(run: (signal: AbortSignal) => Promise<void>): { stop: () => Promise<void>; done: Promise<void> } {
  const ac = new AbortController();
  const done = run(ac.signal);
  let stopping: Promise<void> | undefined;
  return { done, stop: () => (stopping ??= (ac.abort(), done)) };
}
