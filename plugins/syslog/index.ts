// The `syslog` input: UDP, TCP and TLS (RFC 5425) listeners that parse RFC 5424 / RFC 3164
// messages (and their real-world variants) into JSON events. Each message is written as its
// JSON line straight from the received bytes; lines arriving in one tick are emitted as one
// batch. While the spool cannot keep up or refuses a write, TCP and TLS sockets stop reading
// and UDP datagrams are dropped and counted (UDP has no way to push back); a refused batch is
// kept and written again, never dropped.
import { createServer, type Server, type Socket } from "node:net";
import { createServer as createTlsServer } from "node:tls";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { z } from "zod";
import { FatalInputError, defineInput, pathOption, type InputContext } from "../../agent/plugin.ts";
import { errorMessage } from "../../agent/log.ts";
import { Backoff, sleep } from "../../agent/backoff.ts";
import { listenErrorCause } from "../../agent/neterrors.ts";
import { duration, size } from "../../agent/units.ts";
import { SyslogFramer, type MessageSink } from "./framer.ts";
import { JsonLineBuffer } from "./json-lines.ts";
import { KernelUdpDrops } from "./kernel-drops.ts";
import { Throttled } from "./throttled.ts";
import { eventTail, writeSyslogEvent, type MessageContext } from "./parse.ts";
import { TLS_PAUSE_STOPS_READING, loadTlsMaterial } from "./tls.ts";

const LISTEN = /^(udp|tcp|tls):\/\/(\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]+):(\d{1,5})$/;

const options = z.object({
  listen: z.array(z.string().regex(LISTEN, 'expected "udp://host:port", "tcp://host:port" or "tls://host:port"')).min(1)
    .describe('Listeners, e.g. ["udp://0.0.0.0:514", "tcp://0.0.0.0:514", "tls://0.0.0.0:6514"]; port 0 picks a free port.'),
  max_message_bytes: size().prefault("64KiB").describe("Longer messages are cut to this size and counted."),
  idle_timeout: duration().prefault("5m").describe("A TCP or TLS connection silent this long is closed."),
  max_connections: z.number().int().positive().default(1000).describe("TCP and TLS connections beyond this are refused."),
  timezone: z.string().default("UTC").describe('Zone of timestamps sent without one (RFC 3164): "UTC", "+02:00" or an IANA name.'),
  tls_cert: pathOption("readable").optional().describe("PEM file with the server certificate (and its chain) for tls:// listeners; required with them. Relative to the config file's folder."),
  tls_key: pathOption("readable").optional().describe("PEM file with the private key of tls_cert; required with tls:// listeners. Relative to the config file's folder."),
  tls_ca: pathOption("readable").optional()
    .describe("PEM file of CA certificates (relative to the config file's folder): when set, TLS clients must present a certificate signed by one of them (mutual TLS)."),
  tls_min_version: z.enum(["TLSv1.2", "TLSv1.3"]).default("TLSv1.2").describe("Oldest TLS version a client may use."),
}).strict().superRefine((o, ctx) => {
  if (!o.listen.some((url) => url.startsWith("tls://"))) return;
  for (const key of ["tls_cert", "tls_key"] as const) {
    if (!o[key]) ctx.addIssue({ code: "custom", path: [key], message: "required when listen has a tls:// address" });
  }
});

type Options = z.infer<typeof options>;

export interface Listener {
  protocol: "udp" | "tcp" | "tls";
  host: string;
  port: number;
}

export function parseListen(url: string): Listener {
  const m = LISTEN.exec(url);
  if (!m) throw new Error(`bad listen address ${url}`);
  const host = m[2]!.startsWith("[") ? m[2]!.slice(1, -1) : m[2]!;
  return { protocol: m[1] as Listener["protocol"], host, port: Number(m[3]) };
}

/**
 * How many parsed events may wait behind a pending emit (the spool not keeping up), counted
 * both ways so that memory stays bounded whatever the message size.
 */
export interface QueueLimits {
  /** TCP and TLS sockets stop reading at this many events ... */
  tcpPauseEvents: number;
  /** ... or at this many bytes of event lines. */
  tcpPauseBytes: number;
  /** UDP datagrams are dropped at this many events ... */
  udpDropEvents: number;
  /** ... or at this many bytes of event lines. */
  udpDropBytes: number;
}

const UDP_RECV_BUFFER_BYTES = 8 * 1024 * 1024;
/** How often the kernel's drop counts of the UDP sockets are read (a small file each time). */
const KERNEL_DROPS_READ_MS = 2_000;

export const DEFAULT_LIMITS: QueueLimits = {
  tcpPauseEvents: 10_000, tcpPauseBytes: 4 * 1024 * 1024, udpDropEvents: 50_000, udpDropBytes: 16 * 1024 * 1024,
};
const EMIT_BATCH = 5_000;

/** A refused emit is retried after a full-jitter delay of at most this, growing from RETRY_BASE_MS. */
const RETRY_BASE_MS = 50;
const RETRY_CAP_MS = 2_000;

/** What the batcher tells the input about the spool. */
export interface BatcherEvents {
  /** TCP and TLS reading must stop (true) or may go on (false). */
  pressure(paused: boolean): void;
  /** The spool refused the batch in flight (not because the input is stopping); it is kept and retried. */
  refused(err: unknown): void;
  /** A refused batch was taken after `attempts` refusals, `ms` after the first. */
  recovered(attempts: number, ms: number): void;
  /** The input stopped while the spool refused `events` events: they are not spooled. */
  lost(err: unknown, events: number): void;
}

/**
 * Collects event lines and emits them once per tick, one emit in flight at a time. A batch the
 * spool refuses is kept and emitted again (same batch, so order holds) until it is taken or the
 * input stops; meanwhile TCP and TLS reading stays paused, as on a full spool.
 */
class Batcher {
  /** Event lines not emitted yet. */
  readonly lines = new JsonLineBuffer();
  private scheduled = false;
  private inFlight: Promise<void> | null = null;
  private paused = false;
  /** The batch in flight was refused and waits for its next attempt. */
  private refusing = false;
  private readonly backoff = new Backoff({ baseMs: RETRY_BASE_MS, capMs: RETRY_CAP_MS });

  constructor(
    private readonly ctx: InputContext,
    private readonly limits: QueueLimits,
    private readonly events: BatcherEvents,
  ) {}

  /** Whether a UDP datagram must be dropped now. */
  get full(): boolean {
    return this.inFlight !== null && (this.lines.lines >= this.limits.udpDropEvents || this.lines.length >= this.limits.udpDropBytes);
  }

  /** Whether the spool is refusing the batch in flight. */
  get retrying(): boolean {
    return this.refusing;
  }

  /** Events received and not handed to the spool yet (the batch in flight not counted). */
  get queued(): number {
    return this.lines.lines;
  }

  private get overPauseLimit(): boolean {
    return this.lines.lines >= this.limits.tcpPauseEvents || this.lines.length >= this.limits.tcpPauseBytes;
  }

  /** Pauses or resumes TCP reading to match the queue and the spool. */
  private updatePressure(): void {
    const pause = this.refusing || (this.inFlight !== null && this.overPauseLimit);
    if (pause === this.paused) return;
    this.paused = pause;
    this.events.pressure(pause);
  }

  /** Call after writing lines: schedules their emit, and pauses TCP if too many wait. */
  added(): void {
    if (this.lines.lines === 0) return;
    this.updatePressure();
    if (!this.scheduled && !this.inFlight) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.pump();
      });
    }
  }

  private pump(): void {
    if (this.inFlight || this.lines.lines === 0) return;
    const batch = this.lines.take(EMIT_BATCH);
    this.inFlight = this.emitUntilTaken(batch).then(() => {
      this.inFlight = null;
      this.pump();
      this.updatePressure();
    });
  }

  /** Emits `batch`, again after each refusal, until the spool takes it or the input stops. */
  private async emitUntilTaken(batch: string[]): Promise<void> {
    let attempts = 0;
    let since = 0;
    for (;;) {
      try {
        await this.ctx.emitJsonLines(batch);
        if (attempts > 0) {
          this.refusing = false;
          this.backoff.reset();
          this.events.recovered(attempts, Date.now() - since);
        }
        return;
      } catch (err) {
        if (this.ctx.signal.aborted) {
          this.refusing = false;
          this.events.lost(err, batch.length);
          return;
        }
        if (attempts++ === 0) since = Date.now();
        this.refusing = true;
        this.updatePressure();
        this.events.refused(err);
        await sleep(this.backoff.next(), this.ctx.signal);
      }
    }
  }

  /** Resolves once everything queued is emitted, or after `ms`. */
  async drain(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    this.pump();
    while ((this.inFlight || this.lines.lines > 0) && Date.now() < deadline) {
      await Promise.race([this.inFlight, new Promise((r) => setTimeout(r, 20))]);
      this.pump();
    }
  }
}

const normaliseIp = (ip: string | undefined): string | null =>
  ip ? (ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : ip) : null;

/** A TLS client has this long to finish its handshake (bounded by idle_timeout). */
const MAX_HANDSHAKE_MS = 60_000;

/**
 * The TCP socket a TLS socket runs over: Bun hands the same object to the server's
 * "connection" and "secureConnection" events, Deno wraps it (`_parent`).
 */
const tcpSocketOf = (s: Socket | undefined): Socket | undefined => (s as { _parent?: Socket } | undefined)?._parent ?? s;

export default defineInput({
  type: "syslog",
  description: "Syslog listeners (UDP, TCP, TLS): RFC 5424, RFC 3164 and common variants, octet counting or LF framing",
  options,
  create(opts: Options, ctx) {
    return { run: () => runSyslog(opts, ctx) };
  },
});

export type SyslogOptions = Options;

/** Runs the listeners until ctx.signal aborts. */
export async function runSyslog(opts: Options, ctx: InputContext, limits: QueueLimits = DEFAULT_LIMITS): Promise<void> {
  const listeners = opts.listen.map(parseListen);
  // Certificates are read before anything binds: a bad file fails the input, naming the file.
  const tls = listeners.some((l) => l.protocol === "tls") ? await loadTlsMaterial(opts) : null;
  if (tls && tls.certExpires.getTime() < Date.now()) {
    ctx.log.warn("tls_cert has expired: clients that check it will refuse the handshake", { tls_cert: opts.tls_cert, expired: tls.certExpires.toISOString() });
  }
  /** Accepted TCP connections (for TLS: from before the handshake on); what max_connections counts. */
  const connections = new Set<Socket>();
  /** Connections that stop reading while the spool is full. */
  const readers = new Set<Socket>();
  const refused = new WeakSet<Socket>();
  const servers: Server[] = [];
  const udps: UdpSocket[] = [];
  const listening: string[] = [];
  /** Datagrams dropped because too many events waited for the spool ... */
  let udpQueueDropped = 0;
  /** ... and datagrams the kernel dropped before they could be read (its receive buffer was full). */
  let udpKernelDropped = 0;
  let truncated = 0;
  let rejected = 0;
  let tlsFailures = 0;
  let tcpPaused = false;
  let emitFailures = 0;

  const showDetail = () =>
    ctx.setDetail({
      listening, connections: connections.size, tcp_paused: tcpPaused,
      udp_dropped: udpQueueDropped + udpKernelDropped, udp_dropped_kernel: udpKernelDropped, truncated, rejected_connections: rejected,
      emit_retrying: batcher.retrying, emit_failures: emitFailures,
      ...(tls ? { tls_handshake_failures: tlsFailures } : {}),
    });

  let lastEmitError: unknown = null;
  let lastRefusedIp: string | null = null;
  const throttled = {
    emitRefused: new Throttled((n) => {
      ctx.log.error("the spool refused events: they are kept, TCP reading is paused, and the write is retried", {
        error: errorMessage(lastEmitError), refusals: n, emit_failures: emitFailures, queued_events: batcher.queued,
      });
      ctx.reportError(new Error(`spool refused events (${errorMessage(lastEmitError)}); retrying`));
    }),
    refusedConnections: new Throttled((n) =>
      ctx.log.warn("TCP connections refused: max_connections reached", {
        refused: n, rejected_connections: rejected, max_connections: opts.max_connections, source_ip: lastRefusedIp,
      })),
    udpQueueDrops: new Throttled((n) =>
      ctx.log.warn("UDP datagrams dropped: too many events wait for the spool", { dropped: n, udp_dropped: udpQueueDropped + udpKernelDropped })),
    udpKernelDrops: new Throttled((n) => {
      ctx.log.warn("UDP datagrams dropped by the kernel: they arrived faster than the input read them", {
        dropped: n, udp_dropped: udpQueueDropped + udpKernelDropped,
      });
      ctx.reportError(new Error(`${udpKernelDropped} UDP datagrams dropped by the kernel (receive buffer full)`));
    }),
  };

  const batcher = new Batcher(ctx, limits, {
    pressure(paused) {
      tcpPaused = paused;
      for (const s of readers) paused ? s.pause() : s.resume();
      showDetail();
    },
    refused(err) {
      emitFailures++;
      lastEmitError = err;
      throttled.emitRefused.hit();
      showDetail();
    },
    recovered(attempts, ms) {
      ctx.log.info("the spool takes events again", { refusals: attempts, retried_ms: ms });
      showDetail();
    },
    lost(err, events) {
      ctx.log.error("events not spooled: the input stopped while the spool refused them", { events, error: errorMessage(err) });
      ctx.reportError(new Error(`${events} events not spooled at stop (${errorMessage(err)})`));
      showDetail();
    },
  });

  /** Writes each message it is given as an event line from this source. */
  const eventWriter = (sourceIp: string | null, transport: string): { mc: MessageContext; write: MessageSink } => {
    const mc: MessageContext = { tail: eventTail(sourceIp, transport), now: Date.now(), defaultTz: opts.timezone };
    return { mc, write: (buf, start, end) => writeSyslogEvent(batcher.lines, buf, start, end, mc) };
  };

  /** Counts a new TCP connection in, or refuses it beyond max_connections. */
  const admit = (socket: Socket): boolean => {
    if (connections.size >= opts.max_connections) {
      rejected++;
      lastRefusedIp = normaliseIp(socket.remoteAddress);
      refused.add(socket);
      socket.destroy();
      throttled.refusedConnections.hit();
      showDetail();
      return false;
    }
    connections.add(socket);
    socket.on("error", () => {});
    socket.once("close", () => {
      connections.delete(socket);
      showDetail();
    });
    showDetail();
    return true;
  };

  /** Reads syslog messages from a TCP connection, or from a TLS connection once its handshake is done. */
  const readStream = (socket: Socket, transport: "tcp" | "tls") => {
    const framer = new SyslogFramer(opts.max_message_bytes);
    const events = eventWriter(normaliseIp(socket.remoteAddress), transport);
    const took = () => {
      batcher.added();
      if (framer.truncated > 0) {
        truncated += framer.truncated;
        framer.truncated = 0;
        showDetail();
      }
    };
    if (transport === "tcp" || TLS_PAUSE_STOPS_READING) {
      readers.add(socket);
      if (tcpPaused) socket.pause();
    }
    socket.setTimeout(opts.idle_timeout, () => socket.destroy());
    socket.on("data", (chunk: Uint8Array) => {
      try {
        events.mc.now = Date.now();
        framer.push(chunk, events.write);
        took();
      } catch (err) {
        ctx.reportError(err);
        socket.destroy();
      }
    });
    // The bytes after the last complete message are the last message, whether the sender
    // ended the stream or the connection was cut (reset, idle_timeout, stop): they were received.
    let flushed = false;
    const flushRest = () => {
      if (flushed) return;
      flushed = true;
      try {
        events.mc.now = Date.now();
        framer.flush(events.write);
        took();
      } catch (err) {
        ctx.reportError(err);
      }
    };
    socket.on("end", () => {
      flushRest();
      socket.end();
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      readers.delete(socket);
      flushRest();
    });
  };

  // Scanners, plain-TCP senders and clients without a valid certificate are routine on a TLS
  // port: each is counted and logged at debug, the first and every 1000th as a warning.
  const onHandshakeFailure = (err: Error, socket: Socket | undefined) => {
    // Bun leaves a socket whose handshake timed out open.
    socket?.destroy();
    const tcp = tcpSocketOf(socket);
    if (tcp && refused.has(tcp)) return;
    tlsFailures++;
    const fields = { source_ip: normaliseIp(socket?.remoteAddress ?? tcp?.remoteAddress), error: errorMessage(err), failures: tlsFailures };
    if (tlsFailures === 1 || tlsFailures % 1000 === 0) ctx.log.warn("TLS handshake failed", fields);
    else ctx.log.debug("TLS handshake failed", fields);
    showDetail();
  };

  const streamServer = (protocol: "tcp" | "tls"): Server => {
    if (protocol === "tcp") {
      return createServer((socket) => {
        if (admit(socket)) readStream(socket, "tcp");
      });
    }
    let server;
    try {
      server = createTlsServer({ ...tls!.server, handshakeTimeout: Math.min(opts.idle_timeout, MAX_HANDSHAKE_MS) }, (s) => readStream(s, "tls"));
    } catch (err) {
      throw new FatalInputError(`tls_cert, tls_key: ${opts.tls_cert} and ${opts.tls_key} are not usable (${errorMessage(err)})`);
    }
    // Counted before the handshake, so connections that never finish one also take a slot.
    server.on("connection", admit);
    server.on("tlsClientError", onHandshakeFailure);
    return server;
  };

  // Datagrams mostly come from a few senders: their event line ends are kept, not rebuilt.
  const udpWriters = new Map<string | null, ReturnType<typeof eventWriter>>();
  const udpWriter = (ip: string | null) => {
    let w = udpWriters.get(ip);
    if (!w) {
      if (udpWriters.size >= 1024) udpWriters.clear();
      w = eventWriter(ip, "udp");
      udpWriters.set(ip, w);
    }
    return w;
  };

  const acceptUdp = (msg: Uint8Array, ip: string | null) => {
    if (batcher.full) {
      udpQueueDropped++;
      if (udpQueueDropped === 1 || udpQueueDropped % 1000 === 0) {
        ctx.reportError(new Error(`spool full: ${udpQueueDropped} UDP datagrams dropped`));
      }
      throttled.udpQueueDrops.hit();
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
    const w = udpWriter(ip);
    w.mc.now = Date.now();
    w.write(msg, 0, end);
    batcher.added();
  };

  const udpPorts: number[] = [];
  const kernelDrops = new KernelUdpDrops(() => udpPorts);
  let dropsTimer: ReturnType<typeof setInterval> | null = null;
  let dropsReading: Promise<void> | null = null;
  const readKernelDrops = (): Promise<void> =>
    (dropsReading ??= kernelDrops.read().then((n) => {
      if (n === null || n <= udpKernelDropped) return;
      const added = n - udpKernelDropped;
      udpKernelDropped = n;
      throttled.udpKernelDrops.hit(added);
      showDetail();
    }).catch((err) => ctx.log.debug("reading the kernel's UDP drop counts failed", { error: errorMessage(err) }))
      .finally(() => (dropsReading = null)));

  const shownHost = (host: string) => (host.includes(":") ? `[${host}]` : host);
  // A listener that cannot bind keeps the input a problem in /health (through its restarts)
  // until it binds; the error names the input and the address, not a bare EADDRINUSE.
  const cannotListen = (l: { protocol: string; host: string; port: number }, err: unknown): never => {
    const what = `cannot listen on ${l.protocol}://${shownHost(l.host)}:${l.port}: ${listenErrorCause(err)}`;
    ctx.setDetail({ problem: what });
    throw new Error(`inputs.${ctx.name}: ${what}`);
  };

  try {
    for (const l of listeners) {
      if (l.protocol !== "udp") {
        const server = streamServer(l.protocol);
        servers.push(server);
        await bound(server, (done) => server.listen(l.port, l.host, done)).catch((err) => cannotListen(l, err));
        server.on("error", (err) => ctx.reportError(err));
        const addr = server.address();
        const port = typeof addr === "object" && addr ? addr.port : l.port;
        listening.push(`${l.protocol}://${shownHost(l.host)}:${port}`);
      } else {
        const udp = createSocket({ type: l.host.includes(":") ? "udp6" : "udp4", reuseAddr: false });
        udps.push(udp);
        await bound(udp, (done) => udp.bind(l.port, l.host, done)).catch((err) => cannotListen(l, err));
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
        udpPorts.push(udp.address().port);
        listening.push(`udp://${shownHost(l.host)}:${udp.address().port}`);
      }
    }
    ctx.setDetail({ problem: null });
    showDetail();
    ctx.log.info("syslog listening", { listening });
    if (udpPorts.length > 0) dropsTimer = setInterval(readKernelDrops, KERNEL_DROPS_READ_MS);
    await new Promise<void>((resolve) => {
      if (ctx.signal.aborted) return resolve();
      ctx.signal.addEventListener("abort", () => resolve(), { once: true });
    });
  } finally {
    for (const s of servers) s.close();
    if (dropsTimer !== null) {
      clearInterval(dropsTimer);
      // The kernel's count goes with the socket: read it once more before closing.
      await readKernelDrops();
    }
    for (const u of udps) {
      try {
        u.close();
      } catch {
        // Already closed (bind failed).
      }
    }
    for (const s of readers) s.destroy();
    for (const s of connections) s.destroy();
    // What was received is handed over if the spool takes it quickly; stop must not hang on a full spool.
    await batcher.drain(500);
    if (batcher.queued > 0) {
      ctx.log.warn("events not spooled: the input stopped while the spool was not taking them", { events: batcher.queued });
    }
    for (const t of Object.values(throttled)) t.close();
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
