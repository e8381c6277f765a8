// The nats output: each batch is published to JetStream as one message (README "Fleets"), and
// counts as delivered only once JetStream's publish acknowledgement says the stream stored it.
// - Each spool record is a batch of its own, named by its spool position, the agent's id and
//   its append time (Nats-Msg-Id): a record sent again after a crash is the same message, and
//   the stream's duplicate window drops it instead of storing it twice.
// - A record larger than the server's max_payload is cut at line boundaries into numbered
//   parts, the same parts every time.
// - No server, a timeout, "no responders" (no stream for the subject, or a leader election),
//   a server restart: the batch is retried with the forwarder's backoff; nothing is dropped.
import type { NatsConnection } from "@nats-io/nats-core";
import type { JetStreamClient } from "@nats-io/jetstream";
import type { NatsOutputConfig } from "../config.ts";
import { errorMessageOrName } from "../errortext.ts";
import { connectNats, NATS_HEADERS, natsSecrets, natsSubject } from "../nats.ts";
import type { Logger } from "../plugin.ts";
import { redactText } from "../redact.ts";
import type { OutgoingBatch, OutputTransport, SendOutcome } from "./transport.ts";

/** Publishes in flight at once: JetStream acknowledges each, so a few keep the link busy. */
const IN_FLIGHT = 16;
/** Room kept in a message for its headers when cutting a record to the server's max_payload. */
const HEADER_ROOM = 4096;
/** A server's max_payload before it says (NATS's default). */
const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

export class NatsTransport implements OutputTransport {
  readonly type = "nats";
  readonly concurrency = IN_FLIGHT;
  readonly recordPerBatch = true;
  private nc: NatsConnection | null = null;
  private js: JetStreamClient | null = null;
  private connecting: Promise<void> | null = null;
  private closed = false;
  /** Messages JetStream had already stored (a resend after a crash or a lost acknowledgement). */
  private duplicates = 0;
  private readonly encoder = new TextEncoder();

  constructor(
    private cfg: NatsOutputConfig,
    private readonly agentId: string,
    private readonly hostname: string,
    private readonly log: Logger,
  ) {}

  destination(): string {
    return `stream ${this.cfg.stream} on ${this.cfg.servers.join(", ")}`;
  }

  detail(): Record<string, unknown> {
    const nc = this.nc;
    return {
      type: this.type,
      server: nc && !nc.isClosed() ? nc.getServer() : null,
      stream: this.cfg.stream,
      duplicates_dropped: this.duplicates,
    };
  }

  async send(batch: OutgoingBatch, signal: AbortSignal): Promise<SendOutcome> {
    let js: JetStreamClient;
    try {
      js = await this.jetstream();
    } catch (err) {
      if (signal.aborted) return { type: "aborted" };
      return { type: "retry", network: true, error: this.clean(`cannot connect to NATS (${this.cfg.servers.join(", ")}): ${errorMessageOrName(err)}`) };
    }
    const { headers } = await import("@nats-io/nats-core");
    const subject = natsSubject(this.cfg.subjectPrefix, batch.meta.orgid, batch.meta.typetag);
    const maxData = Math.max(1024, (this.nc?.info?.max_payload ?? DEFAULT_MAX_PAYLOAD) - HEADER_ROOM);
    const cut = batch.records.map((r) => cutAtLines(r.payload, maxData));
    const tooLong = cut.flat().find((p) => p.byteLength > maxData);
    if (tooLong) {
      const error = `an event of ${tooLong.byteLength} bytes is larger than the NATS server's max_payload (${maxData + HEADER_ROOM} bytes with room for headers)`;
      return { type: "rejected", status: 413, error, answer: error };
    }
    try {
      for (const [r, record] of batch.records.entries()) {
        const parts = cut[r]!;
        for (let i = 0; i < parts.length; i++) {
          if (signal.aborted) return { type: "aborted" };
          const h = headers();
          h.set(NATS_HEADERS.name, batch.meta.name);
          h.set(NATS_HEADERS.orgid, batch.meta.orgid);
          h.set(NATS_HEADERS.typetag, batch.meta.typetag);
          h.set(NATS_HEADERS.timezone, batch.meta.timezone);
          h.set(NATS_HEADERS.kind, batch.kind);
          h.set(NATS_HEADERS.host, this.hostname);
          const id = `${this.agentId}-${record.position}-${record.appendedAt}${parts.length > 1 ? `-${i + 1}of${parts.length}` : ""}`;
          const ack = await js.publish(subject, parts[i]!, { msgID: id, headers: h, timeout: this.cfg.timeout });
          if (ack.duplicate) this.duplicates++;
        }
      }
      return { type: "sent" };
    } catch (err) {
      if (signal.aborted) return { type: "aborted" };
      return { type: "retry", network: true, error: this.clean(this.publishError(err, subject)) };
    }
  }

  /** Whether a server answers (a round trip on the connection, or a new connection). */
  async probe(signal: AbortSignal): Promise<boolean> {
    try {
      await this.jetstream();
      const rtt = this.nc!.rtt();
      await Promise.race([rtt, new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason), { once: true }))]);
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.connecting?.catch(() => {});
    const nc = this.nc;
    this.nc = this.js = null;
    await nc?.close().catch(() => {});
  }

  /** New [output.nats] settings (config reload): the next send connects with them. */
  async reconfigure(cfg: NatsOutputConfig): Promise<boolean> {
    if (JSON.stringify(cfg) === JSON.stringify(this.cfg)) return false;
    this.cfg = cfg;
    const nc = this.nc;
    this.nc = this.js = null;
    await nc?.close().catch(() => {});
    return true;
  }

  /** The JetStream client of a live connection, connecting (and creating the stream) when there is none. */
  private async jetstream(): Promise<JetStreamClient> {
    if (this.closed) throw new Error("the output is closed");
    if (this.js && this.nc && !this.nc.isClosed()) return this.js;
    this.connecting ??= this.connect().finally(() => (this.connecting = null));
    await this.connecting;
    if (!this.js) throw new Error("not connected");
    return this.js;
  }

  private async connect(): Promise<void> {
    const cfg = this.cfg;
    const nc = await connectNats(cfg, `cybexp-agent ${this.hostname}`);
    try {
      const { jetstream, jetstreamManager } = await import("@nats-io/jetstream");
      if (cfg.createStream) await this.ensureStream(await jetstreamManager(nc, { timeout: cfg.timeout }));
      if (this.closed || cfg !== this.cfg) throw new Error("the output was closed or reconfigured while connecting");
      this.nc = nc;
      this.js = jetstream(nc, { timeout: cfg.timeout });
    } catch (err) {
      await nc.close().catch(() => {});
      throw err;
    }
    this.log.info("connected to NATS", { server: nc.getServer(), stream: cfg.stream });
    void this.watch(nc);
  }

  /** Logs what happens to the connection; the client reconnects by itself. */
  private async watch(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === "disconnect") this.log.warn("disconnected from a NATS server; reconnecting", { server: s.server });
      else if (s.type === "reconnect") this.log.info("reconnected to NATS", { server: s.server });
    }
  }

  private async ensureStream(jsm: import("@nats-io/jetstream").JetStreamManager): Promise<void> {
    const cfg = this.cfg;
    try {
      await jsm.streams.info(cfg.stream);
      return;
    } catch (err) {
      if (!/not found/i.test(errorMessageOrName(err))) throw err;
    }
    const ns = (ms: number) => ms * 1_000_000;
    await jsm.streams.add({
      name: cfg.stream,
      subjects: [`${cfg.subjectPrefix}.>`],
      num_replicas: cfg.replicas,
      duplicate_window: ns(cfg.duplicateWindowMs),
      ...(cfg.maxBytes !== undefined ? { max_bytes: cfg.maxBytes } : {}),
      ...(cfg.maxAgeMs !== undefined ? { max_age: ns(cfg.maxAgeMs) } : {}),
    });
    this.log.info("created the JetStream stream", { stream: cfg.stream, subjects: `${cfg.subjectPrefix}.>`, replicas: cfg.replicas });
  }

  /** A publish failure in words an operator can act on. */
  private publishError(err: unknown, subject: string): string {
    const text = errorMessageOrName(err);
    const name = (err as Error)?.name ?? "";
    // The client reports a publish nobody answered as "no responders" or, since it cannot tell
    // the two apart, as JetStream not being enabled.
    if (name === "NoRespondersError" || /no responders|503|jetstream is not enabled/i.test(text)) {
      return `no JetStream stream answered for ${subject} on ${this.cfg.servers.join(", ")} (does stream ${this.cfg.stream} take ${this.cfg.subjectPrefix}.>? create_stream = true creates it; is JetStream enabled on the servers? a stream electing a leader answers again shortly)`;
    }
    if (name === "TimeoutError" || /timeout/i.test(text)) return `timeout after ${this.cfg.timeout} ms waiting for JetStream to store a message on ${subject}`;
    return `publishing to ${subject}: ${text}`;
  }

  private clean(message: string): string {
    return redactText(message, natsSecrets(this.cfg));
  }
}

/** `payload` in pieces of at most `max` bytes, cut after a newline (a line longer than max stands alone). */
export function cutAtLines(payload: Uint8Array, max: number): Uint8Array[] {
  if (payload.byteLength <= max) return [payload];
  const parts: Uint8Array[] = [];
  let start = 0;
  while (start < payload.byteLength) {
    if (payload.byteLength - start <= max) {
      parts.push(payload.subarray(start));
      break;
    }
    let cut = payload.lastIndexOf(10, start + max - 1);
    if (cut < start) cut = payload.indexOf(10, start + max);
    const end = cut === -1 ? payload.byteLength : cut + 1;
    parts.push(payload.subarray(start, end));
    start = end;
  }
  return parts;
}
