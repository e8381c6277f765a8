// The websocket client loop: connect, turn frames into events, watch liveness with pings,
// and reconnect with exponential backoff and full jitter when the connection ends.
import { WebSocket } from "ws";
import type { RawData } from "ws";
import type { InputContext } from "../../agent/plugin.ts";
import { Backoff, sleep } from "../../agent/backoff.ts";
import { concat } from "../../agent/bytes.ts";
import { errorMessage } from "../../agent/errortext.ts";
import { redactUrl } from "../../agent/redact.ts";
import { frameToJsonLine, frameToTextLines } from "./frames.ts";
import { HeldFrames } from "./held.ts";
import type { WebsocketOptions } from "./options.ts";

/** A connection that stayed up this long is healthy: the next failure starts backoff afresh. */
const STABLE_MS = 60_000;
/** How long a stop waits for frames already received to reach the spool. */
const STOP_FLUSH_MS = 700;
/** A batch the spool refused is written again after a full-jitter delay growing from this ... */
const RETRY_BASE_MS = 50;
/** ... to at most this. */
const RETRY_CAP_MS = 2_000;
/** While the spool keeps refusing, the error is logged at most this often. */
const REFUSED_LOG_EVERY_MS = 10_000;

interface SessionEnd {
  openedAt: number | null;
  reason: string;
}


/**
 * Why a connection ended, from the ws package's error. Its frame parser closes the connection
 * itself with the code RFC 6455 asks for; the reason names that code so the log says what the
 * server was told.
 */
export function describeWsError(err: unknown, maxMessageSize: number): string {
  const code = (err as { code?: unknown } | null)?.code;
  const msg = errorMessage(err);
  switch (code) {
    case "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH":
      return `a message larger than max_message_size (${maxMessageSize} bytes); closed with code 1009`;
    case "WS_ERR_UNSUPPORTED_DATA_PAYLOAD_LENGTH":
      return `${msg}; closed with code 1009`;
    case "WS_ERR_INVALID_UTF8":
      return `${msg}; closed with code 1007`;
    case "WS_ERR_INVALID_OPCODE":
    case "WS_ERR_UNEXPECTED_RSV_1":
    case "WS_ERR_UNEXPECTED_RSV_2_3":
    case "WS_ERR_UNEXPECTED_MASK":
    case "WS_ERR_EXPECTED_MASK":
    case "WS_ERR_EXPECTED_FIN":
    case "WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH":
    case "WS_ERR_INVALID_CLOSE_CODE":
      return `protocol error from the server: ${msg}; closed with code 1002`;
    default:
      return msg;
  }
}

export class WebsocketClient {
  private readonly backoff: Backoff;
  private disconnects = 0;
  /** Most frames / bytes held at once since the input started (status detail). */
  private heldFramesMax = 0;
  private heldBytesMax = 0;
  /** Spool writes refused since the input started (each one retried). */
  private emitFailures = 0;
  private readonly emitBackoff = new Backoff({ baseMs: RETRY_BASE_MS, capMs: RETRY_CAP_MS });

  constructor(private readonly opts: WebsocketOptions, private readonly ctx: InputContext) {
    this.backoff = new Backoff({ baseMs: Math.max(1, opts.reconnect_min), capMs: Math.max(opts.reconnect_min, opts.reconnect_max) });
  }

  async run(): Promise<void> {
    const { ctx } = this;
    const log = ctx.log.child({ url: redactUrl(this.opts.url) });
    ctx.setDetail({
      connected: false, connected_since: null, disconnects: 0, reading_paused: false, held_frames_max: 0, held_bytes_max: 0,
      emit_retrying: false, emit_failures: 0,
    });
    let downSince: number | null = null;
    while (!ctx.signal.aborted) {
      const end = await this.session((openedAt) => {
        if (downSince === null) log.info("websocket connected");
        else log.info("websocket reconnected", { disconnected_ms: openedAt - downSince });
        ctx.setDetail({ connected: true, connected_since: new Date(openedAt).toISOString() });
      }, log);
      if (ctx.signal.aborted) break;
      const now = Date.now();
      if (end.openedAt !== null) {
        this.disconnects++;
        downSince = now;
        if (now - end.openedAt >= STABLE_MS) this.backoff.reset();
      } else {
        downSince ??= now;
      }
      ctx.setDetail({ connected: false, connected_since: null, disconnects: this.disconnects });
      ctx.reportError(new Error(`websocket: ${end.reason}`));
      const delay = this.backoff.next();
      log.warn(end.openedAt !== null ? "websocket disconnected" : "websocket connection failed", {
        reason: end.reason, disconnected_ms: now - downSince, retry_in_ms: delay,
      });
      await sleep(delay, ctx.signal);
    }
    ctx.setDetail({ connected: false, connected_since: null, reading_paused: false });
  }

  /** One connection, from dialling to its end; every frame received is emitted before it resolves. */
  private session(onOpen: (openedAt: number) => void, log: InputContext["log"]): Promise<SessionEnd> {
    const { ctx, opts } = this;
    return new Promise<SessionEnd>((resolve) => {
      let openedAt: number | null = null;
      let finished = false;
      const held = new HeldFrames();
      let pumping: Promise<void> | null = null;
      // Set by our ping, cleared by anything heard from the server (a pong or a frame).
      let awaitingPong = false;
      let paused = false;

      const ws = new WebSocket(opts.url, { headers: opts.headers, perMessageDeflate: false, maxPayload: opts.max_message_size });

      // ws.pause() stops reading the TCP socket under both runtimes (Bun's built-in ws pauses
      // its native reader; the npm package pauses its net.Socket), so a server that keeps
      // sending is held back by TCP flow control instead of filling our memory.
      const pauseReading = () => {
        if (paused || finished) return;
        paused = true;
        ws.pause();
        log.debug("websocket reading paused: the spool is not taking events fast enough", { held_frames: held.frames, held_bytes: held.bytes });
        ctx.setDetail({ reading_paused: true });
      };
      const resumeReading = () => {
        if (!paused) return;
        paused = false;
        // The server's pong may sit behind everything it queued while we were not reading.
        awaitingPong = false;
        if (!finished) ws.resume();
        ctx.setDetail({ reading_paused: false });
      };
      const publishHeldMax = () => {
        if (held.framesMax <= this.heldFramesMax && held.bytesMax <= this.heldBytesMax) return;
        this.heldFramesMax = Math.max(this.heldFramesMax, held.framesMax);
        this.heldBytesMax = Math.max(this.heldBytesMax, held.bytesMax);
        ctx.setDetail({ held_frames_max: this.heldFramesMax, held_bytes_max: this.heldBytesMax });
      };

      const pump = async () => {
        while (held.queued > 0) {
          // Let the frames of one read gather, so they go to the spool as one batch.
          await new Promise<void>((r) => setTimeout(r, 0));
          const batch = held.take();
          const stoppedBy = await this.emitUntilTaken(batch.frames, pauseReading, log);
          held.release(batch);
          publishHeldMax();
          if (stoppedBy !== null) {
            const rest = held.take();
            held.release(rest);
            const frames = batch.frames.length + rest.frames.length;
            log.error("frames not spooled: the input stopped while the spool refused them", { frames, error: errorMessage(stoppedBy) });
            ctx.reportError(new Error(`${frames} frames not spooled at stop (${errorMessage(stoppedBy)})`));
            break;
          }
          if (held.belowResumeMark()) resumeReading();
        }
        pumping = null;
      };

      // A connection that never opens, or a server that stops answering pings, is dead.
      const timer = setInterval(() => {
        if (openedAt === null) return end(`no connection within ping_interval (${opts.ping_interval} ms)`);
        // While reading is paused (spool full) a pong cannot be read.
        if (paused) return;
        if (awaitingPong) return end(`no pong within ping_interval (${opts.ping_interval} ms)`);
        awaitingPong = true;
        ws.ping();
      }, opts.ping_interval);

      const onAbort = () => end("stopped");
      ctx.signal.addEventListener("abort", onAbort, { once: true });

      ws.on("open", () => {
        // A handshake given up on (timeout, stop) can still complete in the ws package.
        if (finished) return;
        openedAt = Date.now();
        onOpen(openedAt);
      });
      ws.on("message", (data: RawData) => {
        awaitingPong = false;
        held.add(rawToString(data), rawByteLength(data));
        if (held.aboveHighWaterMark()) pauseReading();
        pumping ??= pump();
      });
      ws.on("pong", () => { awaitingPong = false; });
      ws.on("error", (err: Error) => end(describeWsError(err, opts.max_message_size)));
      ws.on("close", (code: number, reason: Buffer) => {
        const why = reason?.length ? `: ${reason.toString()}` : "";
        end(`closed by the server (code ${code}${why})`);
      });

      async function end(reason: string) {
        if (finished) return;
        finished = true;
        clearInterval(timer);
        ctx.signal.removeEventListener("abort", onAbort);
        ws.terminate();
        ctx.setDetail({ connected: false, connected_since: null });
        // Frames that arrived before the end still go to the spool, however long it takes
        // (a full or refusing spool); only a stop, now or while waiting, cuts that short.
        pumping ??= held.queued > 0 ? pump() : null;
        if (pumping) await untilStopped(pumping, ctx.signal, STOP_FLUSH_MS);
        paused = false;
        ctx.setDetail({ reading_paused: false });
        resolve({ openedAt, reason });
      }
    });
  }

  /**
   * Emits `frames` until the spool takes them: a refusal (an I/O error of the spool's disk) does
   * not lose them; reading stays paused while the same batch is written again after a short
   * backoff, so order holds. Resolves null once taken, or with the last refusal when the input
   * stops first.
   */
  private async emitUntilTaken(frames: string[], pauseReading: () => void, log: InputContext["log"]): Promise<unknown> {
    const { ctx } = this;
    let refusals = 0;
    let since = 0;
    let loggedAt = 0;
    let unlogged = 0;
    for (;;) {
      try {
        await this.emit(frames);
        if (refusals > 0) {
          this.emitBackoff.reset();
          ctx.setDetail({ emit_retrying: false });
          log.info("the spool takes events again", { refusals, retried_ms: Date.now() - since });
        }
        return null;
      } catch (err) {
        if (ctx.signal.aborted) {
          ctx.setDetail({ emit_retrying: false });
          return err ?? new Error("emit failed");
        }
        const now = Date.now();
        if (refusals++ === 0) since = now;
        this.emitFailures++;
        unlogged++;
        pauseReading();
        ctx.setDetail({ emit_retrying: true, emit_failures: this.emitFailures });
        if (loggedAt === 0 || now - loggedAt >= REFUSED_LOG_EVERY_MS) {
          log.error("the spool refused events: the frames are kept, reading is paused, and the write is retried", {
            error: errorMessage(err), refusals: unlogged, emit_failures: this.emitFailures, frames: frames.length,
          });
          ctx.reportError(new Error(`spool refused events (${errorMessage(err)}); retrying`));
          loggedAt = now;
          unlogged = 0;
        }
        await sleep(this.emitBackoff.next(), ctx.signal);
      }
    }
  }

  private emit(frames: string[]): Promise<void> {
    if (this.opts.format === "json") return this.ctx.emitJsonLines(frames.map(frameToJsonLine));
    const lines: string[] = [];
    for (const f of frames) frameToTextLines(f, lines);
    return this.ctx.emitText(lines);
  }
}

/** Waits for `work`, but once `signal` aborts (before or during the wait) for at most `ms` more. */
async function untilStopped(work: Promise<void>, signal: AbortSignal, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort = () => {};
  const cut = new Promise<void>((resolve) => {
    onAbort = () => (timer = setTimeout(resolve, ms));
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    await Promise.race([work, cut]);
  } finally {
    signal.removeEventListener("abort", onAbort);
    clearTimeout(timer);
  }
}

const decoder = new TextDecoder();

function rawToString(data: RawData): string {
  if (typeof data === "string") return data;
  // Fragments are joined before decoding: a UTF-8 sequence may span two of them.
  if (Array.isArray(data)) return decoder.decode(concat(data));
  return decoder.decode(data instanceof ArrayBuffer ? new Uint8Array(data) : data);
}

function rawByteLength(data: RawData): number {
  const maybeText: unknown = data;
  if (typeof maybeText === "string") return maybeText.length;
  if (Array.isArray(data)) return data.reduce((n, b) => n + b.byteLength, 0);
  return data.byteLength;
}
