// The `manual` input's options.
import { z } from "zod";
import { duration, size } from "../../agent/units.ts";

export const options = z.object({
  max_body_bytes: size().prefault("10MiB")
    .describe("Largest body accepted in one submission (a form counts whole, framing included); a larger one is refused with 413."),
  full_wait: duration().prefault("10s")
    .describe("How long a submission waits while the spool is full (spool.max_bytes reached, or the disk below spool.min_free) before it is refused with 503 and Retry-After: 30 (nothing of it taken)."),
}).strict();

export type ManualOptions = z.infer<typeof options>;
