// The `manual` input: threat data submitted by hand through the control server
// (POST /inputs/:name/events) or `cybexp-agent post`. It has nothing to run; it waits for
// submissions and answers only once their events are durably spooled.
import { z } from "zod";
import { defineInput, InputError } from "../../agent/plugin.ts";
import { duration, formatBytes, size } from "../../agent/units.ts";
import { parseSubmission } from "./body.ts";

const options = z.object({
  max_body_bytes: size().prefault("10MiB").describe("Largest body accepted in one submission; a larger one is refused with 413."),
  full_wait: duration().prefault("10s").describe("How long a submission waits while the spool is full before it is refused with 503 and Retry-After (nothing of it taken)."),
}).strict();

/** Seconds a refused submission is told to wait (Retry-After). */
const FULL_RETRY_AFTER_S = 30;

export default defineInput({
  type: "manual",
  description: "Threat data submitted by hand: a JSON object, a JSON array, NDJSON, text lines, or a form (multipart or urlencoded) holding them",
  options,
  create(opts, ctx) {
    return {
      run() {
        return new Promise<void>((resolve) => {
          if (ctx.signal.aborted) return resolve();
          ctx.signal.addEventListener("abort", () => resolve(), { once: true });
        });
      },

      async submit(body: Uint8Array, contentType: string | null) {
        if (ctx.signal.aborted) throw new InputError(`input ${ctx.name} is stopped`, 503);
        if (body.byteLength > opts.max_body_bytes) {
          throw new InputError(
            `the body is ${formatBytes(body.byteLength)}, more than max_body_bytes (${formatBytes(opts.max_body_bytes)})`,
            413,
          );
        }
        const { kind, events } = parseSubmission(body, contentType);
        // sync: the caller's 202 promises the events survive a crash from then on.
        const emit = { sync: true, signal: AbortSignal.timeout(opts.full_wait) };
        try {
          if (kind === "json") await ctx.emitJsonLines(events, emit);
          else await ctx.emitText(events, emit);
        } catch (err) {
          if (ctx.signal.aborted) throw new InputError(`input ${ctx.name} is stopping; nothing of this submission was taken`, 503, 5);
          if (emit.signal.aborted)
            throw new InputError(`the spool is full (see GET /health); nothing of this submission was taken`, 503, FULL_RETRY_AFTER_S);
          throw err;
        }
        ctx.log.info("submission accepted", { events: events.length, kind });
        return { accepted: events.length };
      },
    };
  },
});
