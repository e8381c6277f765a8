// The TCP and TLS (RFC 5425) listeners: connections counted against max_connections, each read
// through a framer (octet counting or LF) into event lines, paused while the spool does not
// keep up, and closed after idle_timeout of silence.
import { createServer, type Server, type Socket } from "node:net";
import { createServer as createTlsServer } from "node:tls";
import { FatalInputError } from "../../agent/plugin.ts";
import { errorMessage } from "../../agent/errortext.ts";
import { SyslogFramer } from "./framer.ts";
import { bound, eventWriter, normaliseIp, type ListenerContext } from "./listener.ts";
import type { Listener } from "./options.ts";
import { Throttled } from "./throttled.ts";
import { TLS_PAUSE_STOPS_READING, type TlsMaterial } from "./tls.ts";

/** A TLS client has this long to finish its handshake (bounded by idle_timeout). */
const MAX_HANDSHAKE_MS = 60_000;

/**
 * The TCP socket a TLS socket runs over: Bun hands the same object to the server's
 * "connection" and "secureConnection" events, Deno wraps it (`_parent`).
 */
const tcpSocketOf = (s: Socket | undefined): Socket | undefined => (s as { _parent?: Socket } | undefined)?._parent ?? s;

/** The input's TCP and TLS listeners and their connections. */
export class StreamListeners {
  /** Accepted TCP connections (for TLS: from before the handshake on); what max_connections counts. */
  private readonly connections = new Set<Socket>();
  /** Connections that stop reading while the spool is full. */
  private readonly readers = new Set<Socket>();
  private readonly refused = new WeakSet<Socket>();
  private readonly servers: Server[] = [];
  /** Reading is paused: the spool does not keep up, or refuses writes. */
  paused = false;
  /** Connections refused beyond max_connections. */
  rejected = 0;
  tlsFailures = 0;
  /** Messages cut to max_message_bytes. */
  truncated = 0;
  private lastRefusedIp: string | null = null;
  private readonly refusedConnections: Throttled;

  constructor(private readonly l: ListenerContext, private readonly tls: TlsMaterial | null) {
    const { ctx, opts } = l;
    this.refusedConnections = new Throttled((n) =>
      ctx.log.warn("TCP connections refused: max_connections reached", {
        refused: n, rejected_connections: this.rejected, max_connections: opts.max_connections, source_ip: this.lastRefusedIp,
      }));
  }

  /** Open connections (max_connections counts them). */
  get connectionCount(): number {
    return this.connections.size;
  }

  /**
   * Binds a tcp:// or tls:// listener and returns its port; a bind error goes to `cannotListen`.
   * TLS material the runtime refuses fails the input (FatalInputError).
   */
  async listen(l: Listener, cannotListen: (err: unknown) => never): Promise<number> {
    const server = this.server(l.protocol === "tls" ? "tls" : "tcp");
    this.servers.push(server);
    await bound(server, (done) => server.listen(l.port, l.host, done)).catch(cannotListen);
    server.on("error", (err) => this.l.ctx.reportError(err));
    const addr = server.address();
    return typeof addr === "object" && addr ? addr.port : l.port;
  }

  /** Stops (true) or resumes (false) reading on every connection. */
  pause(paused: boolean): void {
    this.paused = paused;
    for (const s of this.readers) paused ? s.pause() : s.resume();
  }

  /** Stops accepting connections. */
  closeServers(): void {
    for (const s of this.servers) s.close();
  }

  /** Closes every connection. */
  destroyConnections(): void {
    for (const s of this.readers) s.destroy();
    for (const s of this.connections) s.destroy();
  }

  /** Logs the refused connections not reported yet (at stop). */
  reportPending(): void {
    this.refusedConnections.close();
  }

  /** Counts a new TCP connection in, or refuses it beyond max_connections. */
  private readonly admit = (socket: Socket): boolean => {
    const { opts, showDetail } = this.l;
    if (this.connections.size >= opts.max_connections) {
      this.rejected++;
      this.lastRefusedIp = normaliseIp(socket.remoteAddress);
      this.refused.add(socket);
      socket.destroy();
      this.refusedConnections.hit();
      showDetail();
      return false;
    }
    this.connections.add(socket);
    socket.on("error", () => {});
    socket.once("close", () => {
      this.connections.delete(socket);
      showDetail();
    });
    showDetail();
    return true;
  };

  /** Reads syslog messages from a TCP connection, or from a TLS connection once its handshake is done. */
  private readStream(socket: Socket, transport: "tcp" | "tls"): void {
    const { ctx, opts, batcher, showDetail } = this.l;
    const framer = new SyslogFramer(opts.max_message_bytes);
    const events = eventWriter(this.l, normaliseIp(socket.remoteAddress), transport);
    const took = () => {
      batcher.added();
      if (framer.truncated > 0) {
        this.truncated += framer.truncated;
        framer.truncated = 0;
        showDetail();
      }
    };
    if (transport === "tcp" || TLS_PAUSE_STOPS_READING) {
      this.readers.add(socket);
      if (this.paused) socket.pause();
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
      this.readers.delete(socket);
      flushRest();
    });
  }

  // Scanners, plain-TCP senders and clients without a valid certificate are routine on a TLS
  // port: each is counted and logged at debug, the first and every 1000th as a warning.
  private readonly onHandshakeFailure = (err: Error, socket: Socket | undefined): void => {
    // Bun leaves a socket whose handshake timed out open.
    socket?.destroy();
    const tcp = tcpSocketOf(socket);
    if (tcp && this.refused.has(tcp)) return;
    this.tlsFailures++;
    const fields = { source_ip: normaliseIp(socket?.remoteAddress ?? tcp?.remoteAddress), error: errorMessage(err), failures: this.tlsFailures };
    if (this.tlsFailures === 1 || this.tlsFailures % 1000 === 0) this.l.ctx.log.warn("TLS handshake failed", fields);
    else this.l.ctx.log.debug("TLS handshake failed", fields);
    this.l.showDetail();
  };

  private server(protocol: "tcp" | "tls"): Server {
    const { opts } = this.l;
    if (protocol === "tcp") {
      return createServer((socket) => {
        if (this.admit(socket)) this.readStream(socket, "tcp");
      });
    }
    let server;
    try {
      server = createTlsServer({ ...this.tls!.server, handshakeTimeout: Math.min(opts.idle_timeout, MAX_HANDSHAKE_MS) }, (s) => this.readStream(s, "tls"));
    } catch (err) {
      throw new FatalInputError(`tls_cert, tls_key: ${opts.tls_cert} and ${opts.tls_key} are not usable (${errorMessage(err)})`);
    }
    // Counted before the handshake, so connections that never finish one also take a slot.
    server.on("connection", this.admit);
    server.on("tlsClientError", this.onHandshakeFailure);
    return server;
  }
}
