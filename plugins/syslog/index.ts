// The `syslog` input: UDP and TCP listeners that parse RFC 5424 / RFC 3164 messages (and
// their real-world variants) into JSON events. Messages arriving in one tick are emitted as
// one batch. While the spool cannot keep up, TCP sockets stop reading and UDP datagrams are
// dropped and counted: UDP has no way to push back.
import { createServer, type Server, type Socket } from "node:net";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { z } from "zod";
import { defineInput, type InputContext } from "../../agent/plugin.ts";
import { duration, size } from "../../agent/units.ts";
import { SyslogFramer } from "./framer.ts";
import { parseSyslog, type SyslogEvent } from "./parse.ts";

const LISTEN = /^(udp|tcp):\/\/(\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]+):(\d{1,5})$/;

const options = z.object({
  listen: z.array(z.string().regex(LISTEN, 'expected "udp://host:port" or "tcp://host:port"')).min(1)
    .describe('Listeners, e.g. ["udp://0.0.0.0:514", "tcp://0.0.0.0:514"]; port 0 picks a free port.'),
  max_message_bytes: size().prefault("64KiB").describe("Longer messages are cut to this size and counted."),
  idle_timeout: duration().prefault("5m").describe("A TCP connection silent this long is closed."),
  max_connections: z.number().int().positive().default(1000).describe("TCP connections beyond this are refused."),
  timezone: z.string().default("UTC").describe('Zone of timestamps sent without one (RFC 3164): "UTC", "+02:00" or an IANA name.'),
}).strict();

type Options = z.infer<typeof options>;

export interface Listener {
  protocol: "udp" | "tcp";
  host: string;
  port: number;
}

export function parseListen(url: string): Listener {
  const m = LISTEN.exec(url);
  if (!m) throw new Error(`bad listen address ${url}`);
  const host = m[2]!.startsWith("[") ? m[2]!.slice(1, -1) : m[2]!;
  return { protocol: m[1] as "udp" | "tcp", host, port: Number(m[3]) };
}

/** How many parsed events may wait behind a pending emit (the spool not keeping up). */
export interface QueueLimits {
  /** TCP sockets stop reading at this many. */
  tcpPauseEvents: number;
  /** UDP datagrams are dropped at this many. */
  udpDropEvents: number;
}

const UDP_RECV_BUFFER_BYTES = 8 * 1024 * 1024;

export const DEFAULT_LIMITS: QueueLimits = { tcpPauseEvents: 10_000, udpDropEvents: 50_000 };
const EMIT_BATCH = 5_000;

/** Collects parsed events and emits them once per tick, one emit in flight at a time. */
class Batcher {
  private queue: SyslogEvent[] = [];
  private scheduled = false;
  private inFlight: Promise<void> | null = null;
  private readonly onPressure: (paused: boolean) => void;
  private paused = false;

  constructor(private readonly ctx: InputContext, private readonly pauseAt: number, onPressure: (paused: boolean) => void) {
    this.onPressure = onPressure;
  }

  get queued(): number {
    return this.queue.length;
  }

  get busy(): boolean {
    return this.inFlight !== null;
  }

  add(ev: SyslogEvent): void {
    this.queue.push(ev);
    if (this.inFlight && !this.paused && this.queue.length >= this.pauseAt) {
      this.paused = true;
      this.onPressure(true);
    }
    if (!this.scheduled && !this.inFlight) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.pump();
      });
    }
  }

  private pump(): void {
    if (this.inFlight || this.queue.length === 0) return;
    const batch = this.queue.length <= EMIT_BATCH ? this.queue : this.queue.slice(0, EMIT_BATCH);
    this.queue = this.queue.length <= EMIT_BATCH ? [] : this.queue.slice(EMIT_BATCH);
    this.inFlight = this.ctx.emitJson(batch).then(
      () => {},
      (err) => this.ctx.reportError(err),
    ).then(() => {
      this.inFlight = null;
      if (this.paused && this.queue.length < this.pauseAt) {
        this.paused = false;
        this.onPressure(false);
      }
      this.pump();
    });
  }

  /** Resolves once everything queued is emitted, or after `ms`. */
  async drain(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    this.pump();
    while ((this.inFlight || this.queue.length > 0) && Date.now() < deadline) {
      await Promise.race([this.inFlight, new Promise((r) => setTimeout(r, 20))]);
      this.pump();
    }
  }
}

const normaliseIp = (ip: string | undefined): string | null =>
  ip ? (ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : ip) : null;

export default defineInput({
  type: "syslog",
  description: "Syslog listeners (UDP, TCP): RFC 5424, RFC 3164 and common variants, octet counting or LF framing",
  options,
  create(opts: Options, ctx) {
    return { run: () => runSyslog(opts, ctx) };
  },
});

export type SyslogOptions = Options;

/** Runs the listeners until ctx.signal aborts. */
export async function runSyslog(opts: Options, ctx: InputContext, limits: QueueLimits = DEFAULT_LIMITS): Promise<void> {
  const decoder = new TextDecoder();
  const sockets = new Set<Socket>();
  const servers: Server[] = [];
  const udps: UdpSocket[] = [];
  const listening: string[] = [];
  let udpDropped = 0;
  let truncated = 0;
  let rejected = 0;
  let tcpPaused = false;

  const showDetail = () =>
    ctx.setDetail({ listening, connections: sockets.size, tcp_paused: tcpPaused, udp_dropped: udpDropped, truncated, rejected_connections: rejected });

  const batcher = new Batcher(ctx, limits.tcpPauseEvents, (paused) => {
    tcpPaused = paused;
    for (const s of sockets) paused ? s.pause() : s.resume();
    showDetail();
  });

  const parse = (bytes: Uint8Array, sourceIp: string | null, transport: string) =>
    parseSyslog(decoder.decode(bytes), { sourceIp, transport, now: new Date(), defaultTz: opts.timezone });

  const acceptTcp = (socket: Socket) => {
    if (sockets.size >= opts.max_connections) {
      rejected++;
      socket.destroy();
      showDetail();
      return;
    }
    sockets.add(socket);
    showDetail();
    const ip = normaliseIp(socket.remoteAddress);
    const framer = new SyslogFramer(opts.max_message_bytes);
    const out: Uint8Array[] = [];
    const take = () => {
      for (const m of out) batcher.add(parse(m, ip, "tcp"));
      out.length = 0;
      if (framer.truncated > 0) {
        truncated += framer.truncated;
        framer.truncated = 0;
        showDetail();
      }
    };
    if (tcpPaused) socket.pause();
    socket.setTimeout(opts.idle_timeout, () => socket.destroy());
    socket.on("data", (chunk: Uint8Array) => {
      try {
        framer.push(chunk, out);
        take();
      } catch (err) {
        ctx.reportError(err);
        socket.destroy();
      }
    });
    socket.on("end", () => {
      framer.flush(out);
      take();
      socket.end();
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      sockets.delete(socket);
      showDetail();
    });
  };

  const acceptUdp = (msg: Uint8Array, ip: string | null) => {
    if (batcher.busy && batcher.queued >= limits.udpDropEvents) {
      udpDropped++;
      if (udpDropped === 1 || udpDropped % 1000 === 0) {
        ctx.reportError(new Error(`spool full: ${udpDropped} UDP datagrams dropped`));
      }
      showDetail();
      return;
    }
    let end = msg.length;
    while (end > 0 && (msg[end - 1] === 0x0a || msg[end - 1] === 0x0d || msg[end - 1] === 0x00)) end--;
    if (end === 0) return;
    if (end > opts.max_message_bytes) {
      end = opts.max_message_bytes;
      truncated++;
      showDetail();
    }
    batcher.add(parse(msg.subarray(0, end), ip, "udp"));
  };

  try {
    for (const url of opts.listen) {
      const l = parseListen(url);
      if (l.protocol === "tcp") {
        const server = createServer(acceptTcp);
        servers.push(server);
        await bound(server, (done) => server.listen(l.port, l.host, done));
        server.on("error", (err) => ctx.reportError(err));
        const addr = server.address();
        const port = typeof addr === "object" && addr ? addr.port : l.port;
        listening.push(`tcp://${l.host.includes(":") ? `[${l.host}]` : l.host}:${port}`);
      } else {
        const udp = createSocket({ type: l.host.includes(":") ? "udp6" : "udp4", reuseAddr: false });
        udps.push(udp);
        await bound(udp, (done) => udp.bind(l.port, l.host, done));
        // A larger kernel buffer absorbs bursts while the event loop is busy (capped by net.core.rmem_max).
        try {
          udp.setRecvBufferSize(UDP_RECV_BUFFER_BYTES);
        } catch {
          // not supported by this runtime: keep the system default
        }
        udp.on("error", (err) => ctx.reportError(err));
        udp.on("message", (msg: Uint8Array, rinfo) => {
          try {
            acceptUdp(msg, normaliseIp(rinfo.address));
          } catch (err) {
            ctx.reportError(err);
          }
        });
        listening.push(`udp://${l.host.includes(":") ? `[${l.host}]` : l.host}:${udp.address().port}`);
      }
    }
    showDetail();
    ctx.log.info("syslog listening", { listening });
    await new Promise<void>((resolve) => {
      if (ctx.signal.aborted) return resolve();
      ctx.signal.addEventListener("abort", () => resolve(), { once: true });
    });
  } finally {
    for (const s of servers) s.close();
    for (const u of udps) {
      try {
        u.close();
      } catch {
        // Already closed (bind failed).
      }
    }
    for (const s of sockets) s.destroy();
    // What was received is handed over if the spool takes it quickly; stop must not hang on a full spool.
    await batcher.drain(500);
  }
}

/** Resolves once `start` reports the socket bound; a bind error (e.g. port in use) rejects. */
function bound(socket: { once(e: "error", f: (err: Error) => void): unknown; off(e: "error", f: (err: Error) => void): unknown }, start: (done: () => void) => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    start(() => {
      socket.off("error", reject);
      resolve();
    });
  });
}
