// Plugin tests read what an input handed to the real spool: every event, acknowledged as read.
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
