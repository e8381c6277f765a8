// The `nats` input (the relay) against real nats-server processes (test/testing/nats.ts) and
// the real spool (test/testing/plugin-harness.ts). Messages are published exactly as the
// `nats` output publishes a batch: subject <prefix>.<orgid>.<typetag>, body the upload's file
// part, Cybexp-* headers and Nats-Msg-Id. Skipped, with the reason, where nats-server is missing.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { headers as natsHeaders, type NatsConnection } from "@nats-io/nats-core";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { NATS_DEFAULTS, NATS_HEADERS } from "../../agent/nats.ts";
import { pathKindOf } from "../../agent/plugin.ts";
import { routeKey } from "../../agent/forwarder.ts";
import { withInputEnv, type InputTestEnv, type RunningInput } from "../../test/testing/plugin-harness.ts";
import { until } from "../../test/testing/until.ts";
import {
  createStream, edgeMessage, freePort, natsClient, natsSkip, publishAcked, publishEdge, startNatsCluster, startNatsServer, startTcpProxy,
  type EdgeParts, type NatsServer,
} from "../../test/testing/nats.ts";
import plugin from "./index.ts";
import { parseMessage, splitBody } from "./messages.ts";
import { SeqSet } from "./seqset.ts";

const T = { timeout: 120_000, skip: natsSkip };
const STREAM = NATS_DEFAULTS.stream;

const fixture = (name: string) => readFileSync(new URL(`./testdata/${name}`, import.meta.url), "utf8").split("\n").filter((l) => l !== "");
const COWRIE = fixture("cowrie.ndjson");
const AUTH = fixture("auth.log");

const COWRIE_EDGE: EdgeParts = { name: "cowrie", orgid: "acme", typetag: "cowrie", timezone: "Europe/Berlin", kind: "json", host: "honeypot01" };
const AUTH_EDGE: EdgeParts = { name: "auth", orgid: "acme", typetag: "syslog", timezone: "America/New_York", kind: "text", host: "sensor02" };

interface Spooled {
  route: Record<string, unknown>;
  kind: string;
  event: string;
}

/** Everything spooled since the last call, with the route each record carries; acked in the spool. */
function drain(env: InputTestEnv, into: Spooled[] = []): Spooled[] {
  for (;;) {
    const recs = env.spool.read(64 << 20);
    if (recs.length === 0) return into;
    for (const r of recs) {
      const route = JSON.parse(r.route) as Record<string, unknown>;
      for (const e of new TextDecoder().decode(r.payload).split("\n").slice(0, -1)) into.push({ route, kind: r.kind, event: e });
      env.spool.ack(r.id);
    }
  }
}

/** The route key the spool files relayed events under, as the forwarder reads it back. */
const relayedRoute = (input: string, p: EdgeParts) => JSON.parse(routeKey({ input, name: p.name, orgid: p.orgid, typetag: p.typetag, timezone: p.timezone ?? "UTC", file: p.name }));

const detail = (i: RunningInput) => i.ctx.counters.detail as Record<string, any>;

interface Nats {
  nc: NatsConnection;
  jsm: JetStreamManager;
  js: JetStreamClient;
  close(): Promise<void>;
}

async function client(servers: string | string[], opts: { token?: string } = {}): Promise<Nats> {
  const nc = await natsClient(servers, { reconnect: true, ...opts });
  return { nc, jsm: await jetstreamManager(nc), js: jetstream(nc), close: () => nc.close() };
}

/** A single JetStream node with the CYBEXP_RAW stream, and a client; all closed afterwards. */
async function withServer(fn: (srv: NatsServer, c: Nats) => Promise<void>): Promise<void> {
  const srv = await startNatsServer({ jetstream: true });
  let c: Nats | undefined;
  try {
    c = await client(srv.url);
    await createStream(c.jsm);
    await fn(srv, c);
  } finally {
    await c?.close().catch(() => {});
    await srv.close();
  }
}

const consumerInfo = (c: Nats, name = "cybexp-relay") => c.jsm.consumers.info(STREAM, name);

// ---- pieces without a server ----------------------------------------------------------------

describe("nats input: options", () => {
  test("defaults, strictness, checks between keys, and paths resolved by the core", () => {
    assert.equal(plugin.type, "nats");
    assert.equal(plugin.listens, true);
    assert.deepEqual(plugin.options.parse({ servers: ["nats://127.0.0.1:4222"] }), {
      servers: ["nats://127.0.0.1:4222"], timeout: 10_000, stream: "CYBEXP_RAW", consumer: "cybexp-relay", filter_subject: "cybexp.raw.>",
      fetch_batch: 100, max_ack_pending: 1000, ack_wait: 30_000, create_consumer: true, max_seen: 100_000,
    });
    const bad = (o: Record<string, unknown>) => plugin.options.safeParse({ servers: ["nats://127.0.0.1:4222"], ...o });
    assert.equal(plugin.options.safeParse({}).success, false);
    assert.equal(plugin.options.safeParse({ servers: [] }).success, false);
    assert.equal(plugin.options.safeParse({ servers: ["http://127.0.0.1:4222"] }).success, false);
    assert.equal(plugin.options.safeParse({ servers: ["nats://u:p@127.0.0.1:4222"] }).success, false);
    assert.equal(bad({ batch: 10 }).success, false, "batch is the common key, not this input's");
    assert.equal(bad({ stream: "a.b" }).success, false);
    assert.equal(bad({ consumer: "two words" }).success, false);
    assert.equal(bad({ filter_subject: "cybexp.>.x" }).success, false);
    assert.equal(bad({ filter_subject: "cybexp..x" }).success, false);
    assert.equal(bad({ filter_subject: "cybexp.*.cowrie" }).success, true);
    assert.equal(bad({ ack_wait: "500ms" }).success, false);
    assert.equal(bad({ max_seen: 10 }).success, false);
    assert.equal(bad({ password: "x" }).success, false);
    const pending = bad({ fetch_batch: 500, max_ack_pending: 100 });
    assert.equal(pending.success, false);
    assert.deepEqual(pending.error!.issues[0]!.path, ["max_ack_pending"]);
    const shape = (plugin.options as any)._zod.def.in?._zod.def.shape ?? (plugin.options as any)._zod.def.shape;
    assert.deepEqual(pathKindOf(shape.creds_file), { kind: "readable", array: false });
    assert.deepEqual(pathKindOf(shape.tls_ca), { kind: "readable", array: false });
  });
});

describe("nats input: reading a message", () => {
  const h = (parts: Partial<Record<keyof typeof NATS_HEADERS, string>>) => {
    const hd = natsHeaders();
    for (const [k, v] of Object.entries(parts)) if (v !== undefined) hd.set(NATS_HEADERS[k as keyof typeof NATS_HEADERS], v);
    return hd;
  };
  const full = { name: "cowrie", orgid: "acme", typetag: "cowrie", timezone: "UTC", kind: "json", host: "h", msgId: "1" };
  const body = (s: string) => new TextEncoder().encode(s);

  test("the body's lines, with or without a final newline", () => {
    assert.deepEqual(splitBody(""), []);
    assert.deepEqual(splitBody("a\n"), ["a"]);
    assert.deepEqual(splitBody("a\nb"), ["a", "b"]);
    assert.deepEqual(splitBody("a\n\nb\n"), ["a", "", "b"]);
  });

  test("the route from the headers; an empty timezone is UTC", () => {
    const ok = parseMessage(h(full), body('{"a":1}\n{"b":2}\n'));
    assert.deepEqual(ok, { ok: true, batch: { kind: "json", route: { name: "cowrie", orgid: "acme", typetag: "cowrie", timezone: "UTC" }, body: body('{"a":1}\n{"b":2}\n'), count: 2 } });
    const text = parseMessage(h({ ...full, kind: "text", timezone: "" }), body("x y\nlast without newline"));
    assert.ok(text.ok);
    assert.equal(text.batch.route.timezone, "UTC");
    assert.equal(new TextDecoder().decode(text.batch.body), "x y\nlast without newline\n");
    assert.equal(text.batch.count, 2);
    // The input's own orgid and timezone fill in empty ones, when the input knows them.
    const own = parseMessage(h({ ...full, orgid: "", timezone: "" }), body("{}\n"), { orgid: "relay-org", timezone: "Asia/Tokyo" });
    assert.ok(own.ok);
    assert.deepEqual(own.batch.route, { name: "cowrie", orgid: "relay-org", typetag: "cowrie", timezone: "Asia/Tokyo" });
    const edgeWins = parseMessage(h(full), body("{}\n"), { orgid: "relay-org", timezone: "Asia/Tokyo" });
    assert.ok(edgeWins.ok);
    assert.deepEqual(edgeWins.batch.route, { name: "cowrie", orgid: "acme", typetag: "cowrie", timezone: "UTC" });
  });

  test("what is refused, and why", () => {
    const reason = (hd: ReturnType<typeof h> | undefined, b: string) => {
      const p = parseMessage(hd, body(b));
      assert.equal(p.ok, false);
      return (p as { reason: string }).reason;
    };
    assert.match(reason(undefined, "{}\n"), /no headers/);
    assert.match(reason(h({ ...full, kind: "xml" }), "{}\n"), /unknown Cybexp-Kind "xml"/);
    assert.match(reason(h({ ...full, kind: undefined }), "{}\n"), /no Cybexp-Kind/);
    assert.match(reason(h({ ...full, name: "" }), "{}\n"), /no Cybexp-Name/);
    assert.match(reason(h({ ...full, typetag: undefined }), "{}\n"), /no Cybexp-Typetag/);
    assert.match(reason(h({ ...full, orgid: undefined }), "{}\n"), /no Cybexp-Orgid/);
    assert.match(reason(h(full), ""), /empty body/);
    assert.match(reason(h(full), '{"a":1}\n[1,2]\n'), /line 2 of 2 is a JSON array/);
    assert.match(reason(h(full), '{"a":1}\nnot json\n'), /line 2 of 2 is not JSON/);
    assert.match(reason(h(full), "42\n"), /a JSON number/);
  });
});

describe("nats input: remembered sequences", () => {
  test("ranges: add in any order, bounded, forgotten below the ack floor, saved and loaded", () => {
    const s = new SeqSet(1000);
    for (const n of [1, 2, 3, 5, 4, 10, 8, 9, 7]) s.add(n);
    assert.deepEqual(s.toJSON(), [[1, 5], [7, 10]]);
    assert.equal(s.size, 9);
    assert.ok(s.has(4) && s.has(7) && !s.has(6) && !s.has(11) && !s.has(0));
    s.add(6);
    assert.deepEqual(s.toJSON(), [[1, 10]]);
    s.add(6);
    assert.equal(s.size, 10);
    s.forgetUpTo(3);
    assert.deepEqual(s.toJSON(), [[4, 10]]);
    s.add(20);
    s.forgetUpTo(10);
    assert.deepEqual(s.toJSON(), [[20, 20]]);
    const bounded = new SeqSet(1000);
    for (let n = 1; n <= 3000; n += 2) bounded.add(n); // 1500 ranges of one
    assert.equal(bounded.size, 1000);
    assert.equal(bounded.has(999), false);
    assert.equal(bounded.has(2999), true);
    assert.equal(bounded.has(1001), true);
    const again = SeqSet.from(bounded.toJSON(), 1000);
    assert.deepEqual(again.toJSON(), bounded.toJSON());
    assert.equal(SeqSet.from([[1, 5000]], 1000).toJSON()[0]![0], 4001);
  });

  test("a saved state of the wrong shape fails the input, naming the key", async () => {
    await withInputEnv(plugin, { name: "relay" }, async (env) => {
      await env.expectStateRefused([
        [{ v: 1, stream: STREAM, stream_created: "", seen: [[5, 3]] }, "seen"],
        [{ v: 1, stream: STREAM, stream_created: "", seen: [[1, 3], [2, 9]] }, "seen"],
        [{ v: 2, stream: STREAM, stream_created: "", seen: [] }, "v"],
        [{ v: 1, stream: STREAM, seen: [] }, "stream_created"],
      ], { servers: ["nats://127.0.0.1:9"] });
    });
  });
});

// ---- against nats-server ----------------------------------------------------------------------

describe("nats input: relaying", () => {
  test("batches reach the spool as the edge made them: events, kind, and the edge's name/orgid/typetag/timezone", T, async () => {
    await withServer(async (srv, c) => {
      await withInputEnv(plugin, { name: "relay" }, async (env) => {
        const input = env.start({ servers: [srv.url], ack_wait: "5s", max_ack_pending: 500, filter_subject: "cybexp.raw.acme.>" });
        const cowrie = edgeMessage(COWRIE_EDGE, COWRIE);
        const auth = edgeMessage(AUTH_EDGE, AUTH);
        await publishEdge(c.js, cowrie);
        await publishEdge(c.js, auth);
        // A body without the final "\n" is still one event per line; a typetag with a dot is subject-safe.
        const dotted = edgeMessage({ ...AUTH_EDGE, name: "auth2", typetag: "auth.log" }, []);
        assert.equal(dotted.subject, "cybexp.raw.acme.auth_log");
        await publishEdge(c.js, { ...dotted, body: new TextEncoder().encode("last line one\nlast line two") });
        // Outside the consumer's filter: never delivered to it.
        await publishEdge(c.js, edgeMessage({ ...AUTH_EDGE, orgid: "other" }, ["not for this relay"]));

        const got: Spooled[] = [];
        await until(() => drain(env, got).length >= COWRIE.length + AUTH.length + 2, "every event spooled");
        assert.deepEqual(got.filter((e) => e.route.name === "cowrie").map((e) => [e.kind, e.event]), COWRIE.map((l) => ["json", l]));
        assert.deepEqual(got.filter((e) => e.route.name === "auth").map((e) => [e.kind, e.event]), AUTH.map((l) => ["text", l]));
        assert.deepEqual(got.filter((e) => e.route.name === "auth2").map((e) => e.event), ["last line one", "last line two"]);
        for (const e of got) {
          const edge = e.route.name === "cowrie" ? COWRIE_EDGE : e.route.name === "auth" ? AUTH_EDGE : { ...AUTH_EDGE, name: "auth2", typetag: "auth.log" };
          assert.deepEqual(e.route, relayedRoute("relay", edge));
        }
        assert.equal(got.length, COWRIE.length + AUTH.length + 2);

        // Acknowledged, and the consumer was made as the options say.
        await until(async () => (await consumerInfo(c)).ack_floor.consumer_seq === 3, "acks of the three messages");
        const info = await consumerInfo(c);
        assert.equal(info.config.ack_policy, "explicit");
        assert.equal(info.config.filter_subject, "cybexp.raw.acme.>");
        assert.equal(info.config.max_ack_pending, 500);
        assert.equal(info.config.ack_wait, 5_000_000_000);
        assert.equal(info.num_ack_pending, 0);
        assert.equal(info.num_redelivered, 0);
        assert.equal(info.delivered.consumer_seq, 3, "the message outside the filter was not delivered");
        await until(() => detail(input).messages === 3, "detail counts");
        const d = detail(input);
        assert.equal(d.events, got.length);
        assert.equal(d.stream, STREAM);
        assert.equal(d.consumer, "cybexp-relay");
        assert.equal(d.connected, true);
        assert.equal(d.server, `127.0.0.1:${srv.port}`);
        assert.equal(d.terminated, 0);
        assert.equal(d.duplicates_dropped, 0);
        assert.equal(input.ctx.counters.errors, 0, String(input.ctx.counters.last_error));
        await until(() => detail(input).pending === 0, "pending in the status", 15_000);
        await input.stop();
        // The state remembers what was spooled (at most what the ack floor has not covered yet).
        const saved = JSON.parse(readFileSync(env.stateFile, "utf8"));
        assert.equal(saved.v, 1);
        assert.equal(saved.stream, STREAM);
        assert.ok(saved.stream_created.length > 0);
      });
    });
  });

  test("bad messages are terminated, counted and reported by subject and sequence; good ones around them flow", T, async () => {
    await withServer(async (srv, c) => {
      await withInputEnv(plugin, { name: "relay" }, async (env) => {
        const input = env.start({ servers: [srv.url], ack_wait: "1s" });
        const good = edgeMessage(COWRIE_EDGE, COWRIE.slice(0, 1));
        await publishEdge(c.js, good); // seq 1
        await publishAcked(c.js, "cybexp.raw.acme.cowrie", '{"no":"headers"}\n'); // 2
        const kinds = edgeMessage({ ...COWRIE_EDGE, kind: "json" }, ['{"a":1}']);
        kinds.headers.set(NATS_HEADERS.kind, "xml");
        await publishEdge(c.js, kinds); // 3
        const noName = edgeMessage(COWRIE_EDGE, ['{"a":1}']);
        noName.headers.delete(NATS_HEADERS.name);
        await publishEdge(c.js, noName); // 4
        const noTypetag = edgeMessage(COWRIE_EDGE, ['{"a":1}']);
        noTypetag.headers.delete(NATS_HEADERS.typetag);
        await publishEdge(c.js, noTypetag); // 5
        await publishEdge(c.js, edgeMessage(COWRIE_EDGE, ['{"a":1}', "[1,2,3]"])); // 6: a line that is not an object
        await publishEdge(c.js, edgeMessage(AUTH_EDGE, AUTH.slice(0, 2))); // 7

        const got: Spooled[] = [];
        await until(() => drain(env, got).length >= 3, "the good events");
        await until(() => detail(input).terminated === 5, "five terminated");
        assert.deepEqual(got.map((e) => e.event), [COWRIE[0], AUTH[0], AUTH[1]]);
        assert.equal(input.ctx.counters.errors, 5);
        assert.match(String(input.ctx.counters.last_error), /^terminated the message at stream CYBEXP_RAW sequence 6 \(subject cybexp\.raw\.acme\.cowrie\): line 2 of 2 is a JSON array/);

        // An empty Cybexp-Orgid: the input's own orgid when the context gives the input its parts
        // (`route`), else the message is refused like the others.
        const noOrg = () => edgeMessage({ ...AUTH_EDGE, orgid: "" }, AUTH.slice(3, 4));
        await publishEdge(c.js, noOrg()); // 8
        await until(() => detail(input).terminated === 6, "no orgid: terminated");
        assert.match(String(input.ctx.counters.last_error), /sequence 8 .*: no Cybexp-Orgid header/);
        (input.ctx as unknown as { route: object }).route = { name: "relay", orgid: "relay-org", typetag: "relay", timezone: "Asia/Tokyo" };
        await publishEdge(c.js, noOrg()); // 9
        await until(() => drain(env, got).length >= 4, "no orgid: the input's own");
        assert.deepEqual(got[3]!.route, relayedRoute("relay", { ...AUTH_EDGE, orgid: "relay-org" }));

        const warned = input.logs.map((l) => JSON.parse(l)).filter((l) => l.msg?.startsWith("message terminated"));
        assert.deepEqual(warned.map((l) => l.sequence), [2, 3, 4, 5, 6, 8]);
        assert.match(warned[0].reason, /no headers/);
        assert.match(warned[1].reason, /unknown Cybexp-Kind "xml"/);
        // Terminated messages count as handled: the floor passes them, nothing is pending or redelivered.
        await until(async () => (await consumerInfo(c)).ack_floor.stream_seq === 9, "ack floor past the terminated ones");
        const info = await consumerInfo(c);
        assert.equal(info.num_ack_pending, 0);
        assert.equal(info.num_redelivered, 0);
        await until(() => detail(input).messages === 3, "messages relayed");
      });
    });
  });

  test("a message is acknowledged only once its emit resolved; kept alive while it waits; a refused emit is given back and spooled later", T, async () => {
    await withServer(async (srv, c) => {
      await withInputEnv(plugin, { name: "relay" }, async (env) => {
        const input = env.start({ servers: [srv.url], ack_wait: "1s" });
        const realEmit = input.ctx.emitFramed;
        let release!: () => void;
        const gate = new Promise<void>((r) => (release = r));
        let calls = 0;
        input.ctx.emitFramed = async (kind, payload, opts) => {
          calls++;
          if (calls === 1) {
            await gate;
            throw new Error("disk trouble (test)");
          }
          return realEmit(kind, payload, opts);
        };
        await publishEdge(c.js, edgeMessage(COWRIE_EDGE, COWRIE));
        await until(() => calls === 1, "the emit to start");
        // Delivered, not acknowledged while the emit waits, and not redelivered though ack_wait (1 s) passes twice.
        const waitEnd = Date.now() + 2500;
        while (Date.now() < waitEnd) {
          const info = await consumerInfo(c);
          assert.equal(info.num_ack_pending, 1);
          assert.equal(info.ack_floor.stream_seq, 0);
          assert.equal(info.num_redelivered, 0, "working() keeps the message from being delivered again");
          await new Promise((r) => setTimeout(r, 250));
        }
        assert.equal(drain(env).length, 0);
        release(); // the emit rejects: the message goes back (nak) and comes again
        const got: Spooled[] = [];
        await until(() => drain(env, got).length >= COWRIE.length, "the events after the refusal");
        await until(async () => (await consumerInfo(c)).ack_floor.stream_seq === 1, "the ack after the emit resolved");
        assert.equal(calls, 2);
        assert.deepEqual(got.map((e) => e.event), COWRIE);
        assert.match(String(input.ctx.counters.last_error), /^the spool refused 5 relayed events \(disk trouble \(test\)\); their messages go back to the stream/);
        await until(() => detail(input).messages === 1, "the message counted once");
      });
    });
  });

  test("a message delivered again after its ack was lost with the connection is dropped as a duplicate, also after a restart", T, async () => {
    await withServer(async (srv, c) => {
      const proxy = await startTcpProxy(srv.port);
      try {
        await withInputEnv(plugin, { name: "relay" }, async (env) => {
          const opts = { servers: [proxy.url], ack_wait: "2s", timeout: "1s" };
          // 1. The ack is swallowed by the network, the connection dies; the server delivers the message again.
          const first = env.start(opts);
          const realEmit = first.ctx.emitFramed;
          let holes = 0;
          first.ctx.emitFramed = async (kind, payload, o) => {
            await realEmit(kind, payload, o);
            if (holes++ === 0) proxy.blackhole(); // what the relay sends next (its ack) is lost
          };
          await publishEdge(c.js, edgeMessage(COWRIE_EDGE, COWRIE.slice(0, 2)));
          await until(() => proxy.swallowed().includes("$JS.ACK.CYBEXP_RAW.cybexp-relay.1.1."), "the ack, swallowed");
          proxy.cutAll();
          await until(() => detail(first).duplicates_dropped === 1, "the redelivery dropped as a duplicate", 20_000);
          await until(async () => (await consumerInfo(c)).ack_floor.stream_seq === 1, "the duplicate acknowledged");
          const got = drain(env);
          assert.deepEqual(got.map((e) => e.event), COWRIE.slice(0, 2));
          assert.equal(detail(first).messages, 1);
          assert.ok(detail(first).ack_failures >= 1);
          const dropped = first.logs.map((l) => JSON.parse(l)).find((l) => l.msg?.startsWith("dropped messages delivered again"));
          assert.equal(dropped?.sequences, "1");
          assert.equal(dropped?.redelivered, "2");

          // 2. The same, then the relay stops before the redelivery: the next run knows the sequence from its state.
          const swallowedBefore = proxy.swallowed().length;
          first.ctx.emitFramed = async (kind, payload, o) => {
            await realEmit(kind, payload, o);
            proxy.blackhole();
          };
          await publishEdge(c.js, edgeMessage(COWRIE_EDGE, COWRIE.slice(2, 4)));
          await until(() => proxy.swallowed().slice(swallowedBefore).includes("$JS.ACK.CYBEXP_RAW.cybexp-relay."), "the second ack, swallowed");
          await first.stop();
          proxy.cutAll();
          assert.deepEqual(drain(env).map((e) => e.event), COWRIE.slice(2, 4));
          const saved = JSON.parse(readFileSync(env.stateFile, "utf8"));
          assert.ok(saved.seen.some(([a, b]: [number, number]) => a <= 2 && 2 <= b), JSON.stringify(saved));
          const second = env.start(opts);
          await until(() => detail(second).duplicates_dropped === 1, "the redelivery after the restart dropped", 20_000);
          await until(async () => (await consumerInfo(c)).ack_floor.stream_seq === 2, "acknowledged");
          assert.equal(drain(env).length, 0);
          assert.equal(detail(second).messages, 0);
          // And new messages still flow.
          await publishEdge(c.js, edgeMessage(AUTH_EDGE, AUTH));
          const after: Spooled[] = [];
          await until(() => drain(env, after).length >= AUTH.length, "new events");
          assert.deepEqual(after.map((e) => e.event), AUTH);
        });
      } finally {
        await proxy.close();
      }
    });
  });

  test("two relays with the same consumer share the messages: each goes to one of them", T, async () => {
    await withServer(async (srv, c) => {
      await withInputEnv(plugin, { name: "relay-a" }, async (envA) => {
        await withInputEnv(plugin, { name: "relay-b" }, async (envB) => {
          const opts = { servers: [srv.url], fetch_batch: 5, consumer: "shared" };
          const a = envA.start(opts);
          const b = envB.start(opts);
          await until(async () => (await consumerInfo(c, "shared").catch(() => undefined))?.num_waiting === 2, "both relays pulling");
          const n = 60;
          for (let i = 0; i < n; i++) await publishEdge(c.js, edgeMessage(COWRIE_EDGE, [JSON.stringify({ i })]));
          const gotA: Spooled[] = [];
          const gotB: Spooled[] = [];
          await until(() => drain(envA, gotA).length + drain(envB, gotB).length >= n, "every message spooled by one relay");
          assert.ok(gotA.length > 0 && gotB.length > 0, `a: ${gotA.length}, b: ${gotB.length}`);
          const all = [...gotA, ...gotB].map((e) => JSON.parse(e.event).i as number).sort((x, y) => x - y);
          assert.deepEqual(all, Array.from({ length: n }, (_, i) => i));
          await until(() => detail(a).messages + detail(b).messages === n, "the counts in the status");
          await until(async () => (await consumerInfo(c, "shared")).ack_floor.stream_seq === n, "all acknowledged");
        });
      });
    });
  });
});

describe("nats input: connection trouble", () => {
  test("no server at start, then the server: the relay connects and delivers", T, async () => {
    const port = await freePort();
    await withInputEnv(plugin, { name: "relay" }, async (env) => {
      const input = env.start({ servers: [`nats://127.0.0.1:${port}`], timeout: "1s" });
      await until(() => input.ctx.counters.errors >= 2, "connection failures reported");
      assert.match(String(input.ctx.counters.last_error), new RegExp(`^cannot connect to nats://127\\.0\\.0\\.1:${port}: .*refused`));
      const srv = await startNatsServer({ jetstream: true, port });
      const c = await client(srv.url);
      try {
        // The stream does not exist yet: said so, and retried.
        await until(() => /stream CYBEXP_RAW does not exist/.test(String(input.ctx.counters.last_error)), "the missing stream reported", 40_000);
        await createStream(c.jsm);
        await publishEdge(c.js, edgeMessage(AUTH_EDGE, AUTH));
        const got: Spooled[] = [];
        await until(() => drain(env, got).length >= AUTH.length, "events once the server is there", 40_000);
        assert.deepEqual(got.map((e) => e.event), AUTH);
      } finally {
        await c.close();
        await srv.close();
      }
    });
  });

  test("the server killed with kill -9 and restarted: the relay reconnects and delivers everything published after", T, async () => {
    await withServer(async (srv, c) => {
      await withInputEnv(plugin, { name: "relay" }, async (env) => {
        const input = env.start({ servers: [srv.url], timeout: "2s", ack_wait: "2s" });
        await publishEdge(c.js, edgeMessage(COWRIE_EDGE, COWRIE.slice(0, 1)));
        const got: Spooled[] = [];
        await until(() => drain(env, got).length >= 1, "the first event");
        await srv.kill9();
        await until(() => detail(input).connected === false, "the disconnect seen");
        assert.match(String(input.ctx.counters.last_error), /disconnected from NATS server/);
        await srv.restart();
        await until(() => detail(input).connected === true, "reconnected", 20_000);
        for (let i = 0; i < 20; i++) await publishEdge(c.js, edgeMessage(COWRIE_EDGE, [JSON.stringify({ after: i })]));
        await until(() => drain(env, got).length >= 21, "everything published after the restart", 30_000);
        assert.deepEqual(got.slice(1).map((e) => JSON.parse(e.event).after), Array.from({ length: 20 }, (_, i) => i));
        // The ack of the first message may have died with the server: then it comes again (after
        // ack_wait) and is dropped as a duplicate. Either way, every event is spooled once.
        await until(async () => (await consumerInfo(c)).ack_floor.stream_seq === 21, "all acknowledged", 20_000);
        assert.equal(drain(env, got).length, 21);
      });
    });
  });

  test("the stream leader of a 3-node cluster killed with kill -9: the relay goes on, nothing lost, nothing twice", T, async () => {
    const cluster = await startNatsCluster(3);
    const c = await client(cluster.urls);
    try {
      await createStream(c.jsm, { replicas: 3 });
      await withInputEnv(plugin, { name: "relay" }, async (env) => {
        env.start({ servers: cluster.urls, timeout: "2s", ack_wait: "3s" });
        for (let i = 0; i < 10; i++) await publishEdge(c.js, edgeMessage(COWRIE_EDGE, [JSON.stringify({ n: i })]));
        const got: Spooled[] = [];
        await until(() => drain(env, got).length >= 10, "events before the kill", 30_000);
        const leader = await cluster.leaderOf(STREAM);
        await cluster.node(leader).kill9();
        for (let i = 10; i < 30; i++) await publishEdge(c.js, edgeMessage(COWRIE_EDGE, [JSON.stringify({ n: i })]));
        await until(() => drain(env, got).length >= 30, "events after the kill", 60_000);
        await until(async () => (await consumerInfo(c).catch(() => undefined))?.ack_floor.stream_seq === 30, "all acknowledged", 60_000);
        assert.deepEqual(drain(env, got).map((e) => JSON.parse(e.event).n), Array.from({ length: 30 }, (_, i) => i));
        await cluster.node(leader).restart();
      });
    } finally {
      await c.close();
      await cluster.close();
    }
  });

  test("a wrong token is reported without the token; the right one works", T, async () => {
    const token = "s3cret-relay-token-value";
    const srv = await startNatsServer({ jetstream: true, config: [`authorization { token: "${token}" }`], auth: { token } });
    const c = await client(srv.url, { token });
    try {
      await createStream(c.jsm);
      await withInputEnv(plugin, { name: "relay" }, async (env) => {
        const wrong = env.start({ servers: [srv.url], token: "wrong-token-value-123", timeout: "1s" });
        await until(() => wrong.ctx.counters.errors >= 1, "the refusal reported");
        const said = String(wrong.ctx.counters.last_error);
        assert.match(said, /authori[sz]ation/i);
        assert.ok(!said.includes("wrong-token-value-123"), said);
        assert.ok(!env.logs.some((l) => l.includes("wrong-token-value-123")));
        await wrong.stop();
        env.start({ servers: [srv.url], token, timeout: "1s" });
        await publishEdge(c.js, edgeMessage(AUTH_EDGE, AUTH.slice(0, 1)));
        await until(() => drain(env).length === 1, "the event with the right token");
      });
    } finally {
      await c.close();
      await srv.close();
    }
  });

  test("a stop returns within a second: while pulling, and while the server is unreachable", T, async () => {
    await withServer(async (srv) => {
      await withInputEnv(plugin, { name: "relay" }, async (env) => {
        const input = env.start({ servers: [srv.url] });
        await until(() => detail(input).connected === true, "connected");
        await new Promise((r) => setTimeout(r, 300)); // inside a pull
        let t = Date.now();
        await input.stop();
        assert.ok(Date.now() - t < 1000, `stopped in ${Date.now() - t} ms`);

        // A blackholed server: connecting hangs until the timeout (10 s), the stop does not wait for it.
        const proxy = await startTcpProxy(srv.port);
        try {
          const stuck = env.start({ servers: [proxy.url] });
          await until(() => proxy.connections() === 1, "a connection attempt");
          proxy.blackhole();
          await new Promise((r) => setTimeout(r, 100));
          t = Date.now();
          await stuck.stop();
          assert.ok(Date.now() - t < 1000, `stopped in ${Date.now() - t} ms`);
        } finally {
          await proxy.close();
        }
      });
    });
  });
});
