// The `nats` input, a relay: it reads the batches edge agents published to a JetStream stream
// (agent/nats.ts: one message per batch, the upload's parts in Cybexp-* headers) through a
// durable pull consumer, and hands each batch's events to the spool under the edge's own
// name, orgid, typetag and timezone (EmitOptions.route), so this agent's output uploads them
// as the sensor that made them.
//
// A message is acknowledged only once the spool holds its events durably (emit with sync):
// a crash before that leaves it unacknowledged and JetStream delivers it again. The stream
// sequences spooled are remembered (SeqSet, saved with checkpoint) so a message delivered again
// after it was spooled (its acknowledgement lost with the connection, or late) is acknowledged
// without being spooled twice. The one window left: a crash after the spool's fsync and before
// both the acknowledgement reached the server and the state was saved; that message is spooled
// again after the restart (README "Delivery").
//
// A message that does not follow the format is terminated (never delivered again), counted and
// reported; connection trouble of any kind is retried with backoff for as long as the input runs.
import { AckPolicy, DeliverPolicy, JetStreamApiCodes, JetStreamApiError, jetstream, jetstreamManager, ReplayPolicy, type Consumer, type ConsumerInfo, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import { millis, nanos, type NatsConnection } from "@nats-io/nats-core";
import { Backoff, sleep } from "../../agent/backoff.ts";
import { errorFirstLine } from "../../agent/errortext.ts";
import { connectNats, natsSecrets } from "../../agent/nats.ts";
import type { InputContext, Logger, UploadRoute } from "../../agent/plugin.ts";
import { redactText } from "../../agent/redact.ts";
import { parseMessage, type RelayBatch } from "./messages.ts";
import type { NatsInputOptions } from "./options.ts";
import { SeqSet } from "./seqset.ts";
import type { RelayState } from "./state.ts";

/** How long one pull waits for messages on the server (the client's minimum is 1 s). */
const FETCH_EXPIRES_MS = 2000;
/** Consumer info (pending counts, the acknowledgement floor) at most this often. */
const INFO_EVERY_MS = 5000;
/** Retry delays after a failure: full jitter from this ... */
const RETRY_BASE_MS = 250;
/** ... up to this. */
const RETRY_CAP_MS = 30_000;
/** At stop, how long acknowledgements and naks already given get to leave, and the connection to close. */
const STOP_FLUSH_MS = 300;

class Stopped extends Error {
  constructor() {
    super("the input is stopping");
  }
}

/** The spool did not take a batch (its messages were given back). */
class SpoolRefused extends Error {}

interface Group {
  kind: RelayBatch["kind"];
  route: UploadRoute;
  /** The messages' bodies, each "\n"-ended lines, and their events. */
  bodies: Uint8Array[];
  count: number;
  msgs: JsMsg[];
}

export class NatsRelay {
  private readonly log: Logger;
  private readonly secrets: string[];
  private readonly backoff = new Backoff({ baseMs: RETRY_BASE_MS, capMs: RETRY_CAP_MS });
  private seen: SeqSet;
  private streamCreated = "";
  private nc: NatsConnection | undefined;
  /** The consumer's ack_wait as the server has it (it may predate this input's options). */
  private ackWaitMs: number;
  private lastInfoAt = 0;
  private infoRunning = false;
  private filterWarned = false;
  private saving = false;
  private saveAgain = false;
  private stopped: Promise<never>;
  private readonly detail = {
    server: null as string | null,
    connected: false,
    stream: "",
    consumer: "",
    messages: 0,
    events: 0,
    terminated: 0,
    duplicates_dropped: 0,
    ack_failures: 0,
    pending: null as number | null,
    ack_pending: null as number | null,
    remembered: 0,
  };

  constructor(private readonly opts: NatsInputOptions, private readonly ctx: InputContext<RelayState>) {
    this.log = ctx.log.child({ stream: opts.stream, consumer: opts.consumer });
    this.secrets = natsSecrets(opts);
    this.seen = new SeqSet(opts.max_seen);
    this.ackWaitMs = opts.ack_wait;
    this.detail.stream = opts.stream;
    this.detail.consumer = opts.consumer;
    this.stopped = new Promise<never>((_, reject) => {
      const fire = () => reject(new Stopped());
      if (ctx.signal.aborted) fire();
      else ctx.signal.addEventListener("abort", fire, { once: true });
    });
    this.stopped.catch(() => {});
  }

  /** Acknowledgements sent whose confirmations are awaited. */
  private readonly acking = new Set<Promise<void>>();
  /** Messages a dry run (ctx.dryRun) was handed: given back when it ends. */
  private readonly dryRunHeld: JsMsg[] = [];

  async run(): Promise<void> {
    const { ctx, opts } = this;
    const saved = await ctx.loadState();
    if (saved && saved.stream === opts.stream) {
      this.seen = SeqSet.from(saved.seen, opts.max_seen);
      this.streamCreated = saved.stream_created;
    }
    this.showDetail();
    try {
      while (!ctx.signal.aborted) {
        try {
          await this.session();
        } catch (err) {
          if (ctx.signal.aborted || err instanceof Stopped) break;
          this.problem(err);
          await sleep(this.backoff.next(), ctx.signal);
        }
      }
    } finally {
      await this.shutdown();
    }
  }

  // ---- connection, stream and consumer ------------------------------------------------------

  /** Resolves with p, or rejects with Stopped as soon as the input is stopped. */
  private abortable<T>(p: Promise<T>): Promise<T> {
    p.catch(() => {});
    return Promise.race([p, this.stopped]);
  }

  private async session(): Promise<void> {
    const nc = await this.connection();
    const jsm = await this.abortable(jetstreamManager(nc, { timeout: this.opts.timeout, checkAPI: false }));
    const info = await this.consumerInfo(jsm);
    await this.checkStream(jsm);
    const js = jetstream(nc, { timeout: this.opts.timeout });
    await this.pull(js.consumers.getConsumerFromInfo(info));
  }

  private async connection(): Promise<NatsConnection> {
    if (this.nc && !this.nc.isClosed()) return this.nc;
    this.nc = undefined;
    const connecting = connectNats(this.opts, `cybexp-agent ${this.ctx.hostname} inputs.${this.ctx.name}`);
    // A stop while connecting: the connection that comes after all is closed at once.
    connecting.then((nc) => {
      if (this.ctx.signal.aborted && nc !== this.nc) nc.close().catch(() => {});
    }, () => {});
    let nc: NatsConnection;
    try {
      nc = await this.abortable(connecting);
    } catch (err) {
      if (err instanceof Stopped) throw err;
      throw new Error(`cannot connect to ${this.opts.servers.join(", ")}: ${describeNatsError(err)}`);
    }
    this.nc = nc;
    this.detail.server = nc.getServer();
    this.detail.connected = true;
    this.showDetail();
    this.log.info("connected to NATS", { server: nc.getServer() });
    void this.watch(nc);
    return nc;
  }

  /** Follows the connection's ups and downs into the status and the log. */
  private async watch(nc: NatsConnection): Promise<void> {
    try {
      for await (const s of nc.status()) {
        if (nc !== this.nc) break;
        switch (s.type) {
          case "disconnect":
            this.detail.connected = false;
            this.showDetail();
            if (!this.ctx.signal.aborted) this.problem(new Error(`disconnected from NATS server ${s.server}; reconnecting`));
            break;
          case "reconnect":
            this.detail.connected = true;
            this.detail.server = nc.getServer();
            this.showDetail();
            this.log.info("reconnected to NATS", { server: nc.getServer() });
            break;
          case "error":
            this.problem(new Error(`NATS server: ${describeNatsError(s.error)}`));
            break;
          case "ldm":
            this.log.warn("the NATS server is entering lame duck mode; the client will move to another", { server: s.server });
            break;
          default:
        }
      }
    } catch {
      // the connection is gone; the loop reconnects
    }
  }

  /** The durable consumer: used as it is, or created when missing and create_consumer allows. */
  private async consumerInfo(jsm: JetStreamManager): Promise<ConsumerInfo> {
    const { stream, consumer } = this.opts;
    const where = `consumer ${consumer} on stream ${stream}`;
    let info: ConsumerInfo;
    try {
      info = await this.abortable(jsm.consumers.info(stream, consumer));
    } catch (err) {
      if (err instanceof Stopped) throw err;
      if (isApiError(err, JetStreamApiCodes.StreamNotFound)) throw new Error(`stream ${stream} does not exist (the edge agents' nats output creates it with create_stream = true)`);
      if (!isApiError(err, JetStreamApiCodes.ConsumerNotFound)) throw new Error(`${where}: ${describeNatsError(err)}`);
      if (!this.opts.create_consumer) throw new Error(`${where} does not exist and create_consumer = false: create it (a durable pull consumer with explicit acks), or set create_consumer = true`);
      try {
        info = await this.abortable(jsm.consumers.add(stream, {
          durable_name: consumer,
          ack_policy: AckPolicy.Explicit,
          deliver_policy: DeliverPolicy.All,
          replay_policy: ReplayPolicy.Instant,
          filter_subject: this.opts.filter_subject,
          max_ack_pending: this.opts.max_ack_pending,
          ack_wait: nanos(this.opts.ack_wait),
        }));
        this.log.info("created the durable consumer", { filter_subject: this.opts.filter_subject, max_ack_pending: this.opts.max_ack_pending, ack_wait_ms: this.opts.ack_wait });
      } catch (addErr) {
        if (addErr instanceof Stopped) throw addErr;
        throw new Error(`creating ${where}: ${describeNatsError(addErr)}`);
      }
    }
    const c = info.config;
    if (c.deliver_subject) throw new Error(`${where} is a push consumer (deliver_subject ${c.deliver_subject}); the relay needs a pull consumer: delete it or name another in consumer`);
    if (c.ack_policy !== AckPolicy.Explicit) throw new Error(`${where} has ack_policy ${c.ack_policy}; the relay acknowledges each message once spooled and needs ack_policy explicit: delete it or name another in consumer`);
    const filter = c.filter_subject ?? (c.filter_subjects ?? []).join(", ");
    if (filter !== this.opts.filter_subject && !this.filterWarned) {
      this.filterWarned = true;
      this.log.warn("the existing consumer has another filter than filter_subject; it is used as it is", { consumer_filter: filter || "(none: every subject of the stream)", filter_subject: this.opts.filter_subject });
    }
    if (c.ack_wait) this.ackWaitMs = millis(c.ack_wait);
    this.showInfo(info);
    return info;
  }

  /** A stream made again numbers its messages from 1 again: the sequences remembered for the old one go. */
  private async checkStream(jsm: JetStreamManager): Promise<void> {
    let created: string;
    try {
      created = (await this.abortable(jsm.streams.info(this.opts.stream))).created;
    } catch (err) {
      if (err instanceof Stopped) throw err;
      throw new Error(`stream ${this.opts.stream}: ${describeNatsError(err)}`);
    }
    if (created === this.streamCreated) return;
    if (this.streamCreated !== "" && this.seen.size > 0) {
      this.log.warn("the stream was created again since the sequences were remembered; forgetting them", { remembered: this.seen.size, was_created: this.streamCreated, created });
      this.seen.clear();
    }
    this.streamCreated = created;
    this.saveState();
  }

  // ---- pulling --------------------------------------------------------------------------------

  private async pull(consumer: Consumer): Promise<void> {
    const { ctx, opts } = this;
    const fetch = () => this.abortable(consumer.fetch({ max_messages: opts.fetch_batch, expires: FETCH_EXPIRES_MS }));
    // The next pull, asked for while the last messages of a full one are spooled, so that they
    // travel meanwhile instead of after.
    let prefetched: Promise<Awaited<ReturnType<typeof fetch>>> | null = null;
    try {
      while (!ctx.signal.aborted) {
        const next = prefetched ?? fetch();
        prefetched = null;
        const iter = await next;
        const more = () => {
          if (prefetched === null && iter.getReceived() >= opts.fetch_batch) {
            prefetched = fetch();
            prefetched.catch(() => {});
          }
        };
        if (await this.pullOnce(iter, more)) return;
        this.refreshInfo(consumer);
      }
    } finally {
      // A pull asked for and not read: ended; what it brought is delivered again after ack_wait.
      const left = prefetched as Promise<Awaited<ReturnType<typeof fetch>>> | null;
      if (left) void left.then((it) => it.stop(), () => {});
    }
  }

  /** Reads one pull to its end, spooling as it goes; true when the input stopped. */
  private async pullOnce(iter: Awaited<ReturnType<Consumer["fetch"]>>, more: () => void): Promise<boolean> {
    const { ctx, opts } = this;
    // A stop ends the pull at once. Messages the server sent that were not yet read are
    // delivered again after ack_wait (the ones read and not spooled are given back below).
    const stop = () => iter.stop();
    ctx.signal.addEventListener("abort", stop, { once: true });
    const held: JsMsg[] = [];
    let refused: SpoolRefused | undefined;
    try {
      for await (const m of iter) {
        if (refused) {
          m.nak(); // the rest of this pull goes back too; the next pull comes after a backoff
          continue;
        }
        held.push(m);
        // Spool together what has arrived; the rest of the pull comes while it is spooled.
        if (held.length >= opts.fetch_batch || iter.getPending() <= 0) {
          more();
          try {
            await this.handle(held.splice(0));
          } catch (err) {
            if (!(err instanceof SpoolRefused)) throw err;
            refused = err;
          }
        }
      }
      if (held.length > 0 && !refused) await this.handle(held.splice(0));
    } catch (err) {
      if (err instanceof Stopped || ctx.signal.aborted) return true;
      if (err instanceof SpoolRefused) throw err;
      throw new Error(`pulling from consumer ${opts.consumer} on stream ${opts.stream}: ${describeNatsError(err)}`);
    } finally {
      ctx.signal.removeEventListener("abort", stop);
      iter.stop();
      // Read and not handled (a stop, a failed pull): back to the stream for another delivery.
      for (const m of held) m.nak();
    }
    if (refused) throw refused;
    this.backoff.reset();
    return false;
  }

  /** Spools the events of `msgs` (in order, grouped by route), then acknowledges them. */
  private async handle(msgs: JsMsg[]): Promise<void> {
    const { ctx } = this;
    if (ctx.signal.aborted) {
      for (const m of msgs) m.nak();
      return;
    }
    const groups = new Map<string, Group>();
    const duplicates: JsMsg[] = [];
    for (const m of msgs) {
      if (this.seen.has(m.seq)) {
        duplicates.push(m);
        continue;
      }
      const parsed = parseMessage(m.headers, m.data, this.ownParts());
      if (!parsed.ok) {
        this.terminate(m, parsed.reason);
        continue;
      }
      const { kind, route, body, count } = parsed.batch;
      const key = `${kind}\n${route.name}\n${route.orgid}\n${route.typetag}\n${route.timezone}`;
      let g = groups.get(key);
      if (!g) groups.set(key, (g = { kind, route, bodies: [], count: 0, msgs: [] }));
      g.bodies.push(body);
      g.count += count;
      g.msgs.push(m);
    }
    if (duplicates.length > 0) {
      this.detail.duplicates_dropped += duplicates.length;
      this.log.info("dropped messages delivered again that were spooled already", { sequences: duplicates.map((m) => m.seq).join(","), redelivered: duplicates.map((m) => m.info.deliveryCount).join(",") });
      await this.acknowledge(duplicates);
    }
    if (groups.size === 0) {
      this.showDetail();
      return;
    }

    // While the spool makes them wait (full, or its disk slow), the server is told the messages are worked on.
    const working = [...groups.values()].flatMap((g) => g.msgs);
    const keepAlive = setInterval(() => {
      for (const m of working) m.working();
    }, Math.max(500, Math.floor(this.ackWaitMs / 2)));
    try {
      const list = [...groups.values()];
      for (let i = 0; i < list.length; i++) {
        const g = list[i]!;
        try {
          // Each body as it came (no strings made of it, no copy into a bigger buffer): the
          // appends of a pull queue behind each other, and only the last waits for the fsync,
          // which covers the ones before it too.
          const last = g.bodies.length - 1;
          const appends = g.bodies.map((body, i) => ctx.emitFramed(g.kind, body, { route: g.route, sync: i === last }));
          await Promise.all(appends);
        } catch (err) {
          // Not spooled: these and the ones after them go back to the stream.
          for (const rest of list.slice(i)) for (const m of rest.msgs) m.nak();
          if (ctx.signal.aborted) return;
          throw new SpoolRefused(`the spool refused ${g.count} relayed events (${errorFirstLine(err)}); their messages go back to the stream`);
        }
        for (const m of g.msgs) this.seen.add(m.seq);
        this.detail.messages += g.msgs.length;
        this.detail.events += g.count;
        this.saveState();
        const p: Promise<void> = this.acknowledge(g.msgs).finally(() => this.acking.delete(p));
        // The acknowledgements' confirmations are waited for beside the next messages, not before them.
        this.acking.add(p);
      }
    } finally {
      clearInterval(keepAlive);
      this.showDetail();
    }
  }

  /** Acknowledges spooled messages; waits for the server's confirmation unless the input is stopping. */
  private async acknowledge(msgs: JsMsg[]): Promise<void> {
    if (this.ctx.dryRun) {
      // A dry run's spool goes nowhere: the messages are held (so that this run is not given
      // them again) and go back to the consumer for the real relay when it ends.
      this.dryRunHeld.push(...msgs);
      return;
    }
    if (this.ctx.signal.aborted) {
      for (const m of msgs) m.ack();
      return;
    }
    let results: PromiseSettledResult<boolean>[];
    try {
      results = await this.abortable(Promise.allSettled(msgs.map((m) => m.ackAck({ timeout: this.opts.timeout }))));
    } catch {
      return; // stopping: the acks already sent leave with the final flush
    }
    const failed = results.filter((r) => r.status === "rejected");
    if (failed.length > 0) {
      this.detail.ack_failures += failed.length;
      this.log.warn("acknowledgements not confirmed by the server; if it delivers those messages again they are dropped as duplicates", {
        messages: failed.length,
        error: describeNatsError((failed[0] as PromiseRejectedResult).reason),
      });
    }
  }

  /** This input's own orgid and timezone, for messages whose Cybexp-Orgid / Cybexp-Timezone is empty. */
  private ownParts(): { orgid?: string; timezone?: string } {
    const route = this.ctx.route;
    return { orgid: route.orgid || undefined, timezone: route.timezone || undefined };
  }

  private terminate(m: JsMsg, reason: string): void {
    if (this.ctx.dryRun) this.dryRunHeld.push(m);
    else m.term();
    this.detail.terminated++;
    const text = `terminated the message at stream ${this.opts.stream} sequence ${m.seq} (subject ${m.subject}): ${reason}`;
    this.ctx.reportError(new Error(text));
    this.log.warn("message terminated: it is not in the format of the nats output", { sequence: m.seq, subject: m.subject, reason });
  }

  /** Pending counts for the status, and the acknowledgement floor to forget sequences below; now and then. */
  private refreshInfo(consumer: Consumer): void {
    if (this.infoRunning || Date.now() - this.lastInfoAt < INFO_EVERY_MS) return;
    this.infoRunning = true;
    this.lastInfoAt = Date.now();
    consumer.info(false)
      .then((info) => this.showInfo(info), (err) => this.log.debug("consumer info failed", { error: describeNatsError(err) }))
      .finally(() => (this.infoRunning = false));
  }

  private showInfo(info: ConsumerInfo): void {
    this.detail.pending = info.num_pending;
    this.detail.ack_pending = info.num_ack_pending;
    const floor = info.ack_floor?.stream_seq ?? 0;
    if (floor > 0) this.seen.forgetUpTo(floor);
    this.showDetail();
  }

  // ---- state, status, problems ------------------------------------------------------------------

  private stateNow(): RelayState {
    return { v: 1, stream: this.opts.stream, stream_created: this.streamCreated, seen: this.seen.toJSON() };
  }

  /** Saves the state once the spool is durable; one save at a time, the latest state next. */
  private saveState(): void {
    if (this.saving) {
      this.saveAgain = true;
      return;
    }
    this.saving = true;
    this.ctx.checkpoint(this.stateNow()).catch(() => {}).finally(() => {
      this.saving = false;
      if (this.saveAgain && !this.ctx.signal.aborted) {
        this.saveAgain = false;
        this.saveState();
      }
    });
  }

  private showDetail(): void {
    this.detail.remembered = this.seen.size;
    this.ctx.setDetail({ ...this.detail });
  }

  private problem(err: unknown): void {
    const text = redactText(err instanceof Error ? err.message : String(err), this.secrets);
    this.ctx.reportError(new Error(text));
    this.log.warn(text);
  }

  private async shutdown(): Promise<void> {
    // The last state, asked for before run() returns so the context saves it.
    if (this.saving || this.saveAgain) {
      this.saveAgain = false;
      void this.ctx.checkpoint(this.stateNow()).catch(() => {});
    }
    await Promise.race([Promise.allSettled([...this.acking]), sleep(STOP_FLUSH_MS)]);
    // A dry run gives back everything it was handed.
    for (const m of this.dryRunHeld.splice(0)) m.nak();
    const nc = this.nc;
    this.nc = undefined;
    this.detail.connected = false;
    this.showDetail();
    if (!nc) return;
    const bounded = (p: Promise<unknown>) => Promise.race([p.catch(() => {}), sleep(STOP_FLUSH_MS)]);
    if (!nc.isClosed()) await bounded(nc.flush());
    await bounded(nc.close());
  }
}

function isApiError(err: unknown, code: number): boolean {
  return err instanceof JetStreamApiError && err.code === code;
}

/** One line on what went wrong, in the terms of someone running the relay. */
export function describeNatsError(err: unknown): string {
  const name = err instanceof Error ? err.name : "";
  const msg = errorFirstLine(err);
  if (name === "NoRespondersError" || /no responders/i.test(msg)) {
    return `${msg} (JetStream does not answer: not enabled on the server, or a leader is being elected)`;
  }
  if (name === "TimeoutError" || /^timeout$/i.test(msg)) return `${msg} (no answer in time)`;
  if (err instanceof JetStreamApiError) return `${msg} (JetStream error ${err.code})`;
  return msg;
}
