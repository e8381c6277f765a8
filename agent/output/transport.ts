// What the forwarder hands an output, and what an output answers. The forwarder owns the
// spool, batching, retries and their backoff, dead letters and the output's state; an output
// only moves one batch to its destination and says how that went.
import type { EventKind } from "../plugin.ts";
import type { RouteMeta } from "../upload.ts";

/** A spool record in a batch (or the part of one a split left). */
export interface BatchRecord {
  payload: Uint8Array;
  /** Events in payload. */
  count: number;
  /** Where the record is in the spool ("<segment>:<offset>"), the same in every run. */
  position: string;
  /** When it was appended (ms since epoch): with position, it tells two agents' records apart. */
  appendedAt: number;
}

/** One batch of one route: the records, in order, that make one upload or message. */
export interface OutgoingBatch {
  meta: RouteMeta;
  kind: EventKind;
  records: readonly BatchRecord[];
  events: number;
  bytes: number;
}

export type SendOutcome =
  | { type: "sent" }
  /** Try again later (backoff); `network`: the destination did not answer, so a probe may tell when it is back. */
  | { type: "retry"; error: string; retryAfterMs?: number; network?: boolean }
  /** The destination refuses the credentials: keep the data, retry slowly. */
  | { type: "unauthorized"; error: string }
  /** Too large for the destination: the forwarder splits the batch. */
  | { type: "too_large"; error: string; answer: string }
  /** The destination judged the data bad: it goes to dead letters. */
  | { type: "rejected"; error: string; status: number; answer: string }
  /** Given up because the forwarder is stopping. */
  | { type: "aborted" };

export interface OutputTransport {
  /** "cybexp_api" or "nats": shown in status. */
  readonly type: string;
  /** Batches in flight at once when all is well. */
  readonly concurrency: number;
  /**
   * Each spool record goes in a batch of its own, so that a batch is named by its record's
   * position and sent again after a crash as the very same batch (NATS de-duplication).
   */
  readonly recordPerBatch: boolean;
  /** Where batches go, without credentials (dead letters and messages name it). */
  destination(): string;
  send(batch: OutgoingBatch, signal: AbortSignal): Promise<SendOutcome>;
  /**
   * Whether the destination answers again, asked while a long backoff runs after network
   * trouble: true brings the retry forward. Without it, retries wait for their backoff.
   */
  probe?(signal: AbortSignal): Promise<boolean>;
  /** Added to the output's status (e.g. the connected server). */
  detail?(): Record<string, unknown>;
  close?(): Promise<void>;
}
