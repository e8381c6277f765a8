// What the `nats` input saves: the stream sequences it has spooled (to drop deliveries of them
// that come again), and which stream they are sequences of.
import { z } from "zod";
import { seqRanges } from "./seqset.ts";

export const relayState = z.strictObject({
  v: z.literal(1),
  /** The stream the sequences belong to. */
  stream: z.string(),
  /**
   * When that stream was created (its info's `created`): a stream deleted and made again
   * numbers its messages from 1 again, so the sequences saved for the old one are dropped.
   */
  stream_created: z.string(),
  /** Spooled stream sequences, as [first, last] ranges. */
  seen: seqRanges,
});

export type RelayState = z.infer<typeof relayState>;
