// The `manual` input at work: it has nothing to run; it waits for submissions and answers
// only once their events are durably spooled.
import { InputError, type InputContext } from "../../agent/plugin.ts";
import { formatBytes } from "../../agent/units.ts";
import { parseSubmission } from "./body.ts";
import type { ManualOptions } from "./options.ts";

/** Seconds a refused submission is told to wait (Retry-After). */
const FULL_RETRY_AFTER_S = 30;

export class ManualInput {
  constructor(private readonly opts: ManualOptions, private readonly ctx: InputContext) {}

  run(): Promise<void> {
    const { ctx } = this;
    return new Promise<void>((resolve) => {
      if (ctx.signal.aborted) return resolve();
      ctx.signal.addEventListener("abort", () => resolve(), { once: true });
    });
  }

  preview(body: Uint8Array, contentType: string | null): { events: number } {
    return { events: this.parse(body, contentType).events.length };
  }

  async submit(body: Uint8Array, contentType: string | null): Promise<{ accepted: number }> {
    const { opts, ctx } = this;
    const { kind, events } = this.parse(body, contentType);
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
  }

  /** The events of a submission, or the InputError that refuses all of it. */
  private parse(body: Uint8Array, contentType: string | null): ReturnType<typeof parseSubmission> {
    const { opts, ctx } = this;
    if (ctx.signal.aborted) throw new InputError(`input ${ctx.name} is stopped`, 503);
    if (body.byteLength > opts.max_body_bytes) {
      throw new InputError(
        `the body is ${formatBytes(body.byteLength)}, more than max_body_bytes (${formatBytes(opts.max_body_bytes)})`,
        413,
      );
    }
    return parseSubmission(body, contentType);
  }
}
