// One running `syslog` input: its UDP, TCP and TLS (RFC 5425) listeners, parsing RFC 5424 /
// RFC 3164 messages (and their real-world variants) into JSON events. Each message is written
// as its JSON line straight from the received bytes; lines arriving in one tick are emitted as
// one batch. While the spool cannot keep up or refuses a write, TCP and TLS sockets stop
// reading and UDP datagrams are dropped and counted (UDP has no way to push back); a refused
// batch is kept and written again, never dropped.
import type { InputContext } from "../../agent/plugin.ts";
import { errorMessage } from "../../agent/errortext.ts";
import { listenErrorCause } from "../../agent/neterrors.ts";
import { Batcher, DEFAULT_LIMITS, type QueueLimits } from "./batcher.ts";
import type { ListenerContext } from "./listener.ts";
import { parseListen, type SyslogOptions } from "./options.ts";
import { StreamListeners } from "./tcp.ts";
import { Throttled } from "./throttled.ts";
import { loadTlsMaterial } from "./tls.ts";
import { UdpListeners } from "./udp.ts";

/** Runs the listeners until ctx.signal aborts. */
export async function runSyslog(opts: SyslogOptions, ctx: InputContext, limits: QueueLimits = DEFAULT_LIMITS): Promise<void> {
  const listeners = opts.listen.map(parseListen);
  // Certificates are read before anything binds: a bad file fails the input, naming the file.
  const tls = listeners.some((l) => l.protocol === "tls") ? await loadTlsMaterial(opts) : null;
  if (tls && tls.certExpires.getTime() < Date.now()) {
    ctx.log.warn("tls_cert has expired: clients that check it will refuse the handshake", { tls_cert: opts.tls_cert, expired: tls.certExpires.toISOString() });
  }
  const listening: string[] = [];
  let emitFailures = 0;

  const showDetail = () =>
    ctx.setDetail({
      listening, connections: streams.connectionCount, tcp_paused: streams.paused,
      udp_dropped: udp.dropped, udp_dropped_kernel: udp.kernelDropped, truncated: streams.truncated + udp.truncated, rejected_connections: streams.rejected,
      emit_retrying: batcher.retrying, emit_failures: emitFailures,
      ...(tls ? { tls_handshake_failures: streams.tlsFailures } : {}),
    });

  let lastEmitError: unknown = null;
  const emitRefused = new Throttled((n) => {
    ctx.log.error("the spool refused events: they are kept, TCP reading is paused, and the write is retried", {
      error: errorMessage(lastEmitError), refusals: n, emit_failures: emitFailures, queued_events: batcher.queued,
    });
    ctx.reportError(new Error(`spool refused events (${errorMessage(lastEmitError)}); retrying`));
  });

  const batcher = new Batcher(ctx, limits, {
    pressure(paused) {
      streams.pause(paused);
      showDetail();
    },
    refused(err) {
      emitFailures++;
      lastEmitError = err;
      emitRefused.hit();
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
  const shared: ListenerContext = { opts, ctx, batcher, showDetail };
  const streams = new StreamListeners(shared, tls);
  const udp = new UdpListeners(shared);

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
      const port = await (l.protocol === "udp" ? udp : streams).listen(l, (err) => cannotListen(l, err));
      listening.push(`${l.protocol}://${shownHost(l.host)}:${port}`);
    }
    ctx.setDetail({ problem: null });
    showDetail();
    ctx.log.info("syslog listening", { listening });
    udp.watchKernelDrops();
    await new Promise<void>((resolve) => {
      if (ctx.signal.aborted) return resolve();
      ctx.signal.addEventListener("abort", () => resolve(), { once: true });
    });
  } finally {
    streams.closeServers();
    await udp.close();
    streams.destroyConnections();
    // What was received is handed over if the spool takes it quickly; stop must not hang on a full spool.
    await batcher.drain(500);
    if (batcher.queued > 0) {
      ctx.log.warn("events not spooled: the input stopped while the spool was not taking them", { events: batcher.queued });
    }
    emitRefused.close();
    streams.reportPending();
    udp.reportPending();
  }
}
