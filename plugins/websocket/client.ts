// The websocket client loop: connect, turn frames into events, watch liveness with pings,
// and reconnect with exponential backoff and full jitter when the connection ends.
import { WebSocket } from "ws";
import type { RawData } from "ws";
import type { InputContext } from "../../agent/plugin.ts";
import { Backoff, sleep } from "../../agent/helpers/backoff.ts";
import { errorMessage } from "../../agent/log.ts";
import { frameToJsonLine, frameToTextLines } from "./frames.ts";

export interface WebsocketOptions {
  url: string;
  headers: Record<string, string>;
  format: "json" | "text";
  ping_interval: number;
  reconnect_min: number;
  reconnect_max: number;
}

/** A connection that stayed up this long is healthy: the next failure starts backoff afresh. */
const STABLE_MS = 60_000;
/** How long a stop waits for frames already received to reach the spool. */
const STOP_FLUSH_MS = 700;

interface SessionEnd {
  openedAt: number | null;
  reason: string;
}

/** The URL as it may be logged: credentials in it are secrets too. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.username || u.password) { u.username = "***"; u.password = ""; }
    return u.toString();
  } catch {
    return "(invalid url)";
  }
}

export class WebsocketClient {
  private readonly backoff: Backoff;
  private disconnects = 0;

  constructor(private readonly opts: WebsocketOptions, private readonly ctx: InputContext) {
    this.backoff = new Backoff({ baseMs: Math.max(1, opts.reconnect_min), capMs: Math.max(opts.reconnect_min, opts.reconnect_max) });
  }

  async run(): Promise<void> {
    const { ctx } = this;
    const log = ctx.log.child({ url: redactUrl(this.opts.url) });
    ctx.setDetail({ connected: false, connected_since: null, disconnects: 0 });
    let downSince: number | null = null;
    while (!ctx.signal.aborted) {
      const end = await this.session((openedAt) => {
        if (downSince === null) log.info("websocket connected");
        else log.info("websocket reconnected", { disconnected_ms: openedAt - downSince });
        ctx.setDetail({ connected: true, connected_since: new Date(openedAt).toISOString() });
      });
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
    ctx.setDetail({ connected: false, connected_since: null });
  }

  /** One connection, from dialling to its end; every frame received is emitted before it resolves. */
  private session(onOpen: (openedAt: number) => void): Promise<SessionEnd> {
    const { ctx, opts } = this;
    return new Promise<SessionEnd>((resolve, reject) => {
      let openedAt: number | null = null;
      let finished = false;
      const queue: string[] = [];
      let pumping: Promise<void> | null = null;
      let emitFailure: unknown = null;
      let awaitingPong = false;

      const ws = new WebSocket(opts.url, { headers: opts.headers, perMessageDeflate: false });
      // The ws package exposes its net.Socket as _socket (Node, Deno); Bun's ws has none, so
      // there frames received during a pending emit wait in `queue` instead.
      const socket = () => (ws as unknown as { _socket?: { pause?(): void; resume?(): void } })._socket;

      const pump = async () => {
        try {
          while (queue.length > 0 && emitFailure === null) {
            // Let the frames of one read gather, so they go to the spool as one batch.
            await new Promise<void>((r) => setTimeout(r, 0));
            const frames = queue.splice(0);
            socket()?.pause?.();
            try {
              await this.emit(frames);
            } finally {
              if (!finished) socket()?.resume?.();
            }
          }
        } catch (err) {
          emitFailure = err;
          ws.terminate();
        } finally {
          pumping = null;
        }
      };

      // A connection that never opens, or a server that stops answering pings, is dead.
      const timer = setInterval(() => {
        if (openedAt === null) return end(`no connection within ping_interval (${opts.ping_interval} ms)`);
        // While an emit waits (spool full) the socket is paused and a pong cannot be read.
        if (pumping) return;
        if (awaitingPong) return end(`no pong within ping_interval (${opts.ping_interval} ms)`);
        awaitingPong = true;
        ws.ping();
      }, opts.ping_interval);

      const onAbort = () => end("stopped");
      ctx.signal.addEventListener("abort", onAbort, { once: true });

      ws.on("open", () => {
        openedAt = Date.now();
        onOpen(openedAt);
      });
      ws.on("message", (data: RawData) => {
        queue.push(rawToString(data));
        pumping ??= pump();
      });
      ws.on("pong", () => { awaitingPong = false; });
      ws.on("error", (err: Error) => end(errorMessage(err)));
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
        // Frames that arrived before the end still go to the spool; a stop waits only briefly.
        pumping ??= queue.length > 0 ? pump() : null;
        if (pumping) {
          if (ctx.signal.aborted) await Promise.race([pumping, sleep(STOP_FLUSH_MS)]);
          else await pumping;
        }
        if (emitFailure !== null) reject(emitFailure);
        else resolve({ openedAt, reason });
      }
    });
  }

  private emit(frames: string[]): Promise<void> {
    if (this.opts.format === "json") return this.ctx.emitJsonLines(frames.map(frameToJsonLine));
    const lines: string[] = [];
    for (const f of frames) frameToTextLines(f, lines);
    return this.ctx.emitText(lines);
  }
}

const decoder = new TextDecoder();

function rawToString(data: RawData): string {
  if (typeof data === "string") return data;
  if (Array.isArray(data)) return data.map((b) => decoder.decode(b)).join("");
  return decoder.decode(data instanceof ArrayBuffer ? new Uint8Array(data) : data);
}
