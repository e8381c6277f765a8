// End to end with the compiled executable and real nats-server processes: edge agents publish
// to JetStream ([output] type = "nats"), relay agents (a `nats` input) consume the stream and
// post to the reference receiver. Every event arrives with the edge's name, orgid and typetag:
// through a relay killed with kill -9 and started again, a JetStream that is down when the edge
// starts, a cluster whose stream leader is killed with kill -9, and two relays sharing one
// consumer. Runs when CYBEXP_E2E_BINARY names the executable and nats-server is installed.
import assert from "node:assert/strict";
import { appendFileSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, afterEach, before, beforeEach, describe, test } from "node:test";
import type { Receiver } from "../../scripts/receiver.ts";
import { agentFolder, Arrivals, cli, configText, differences, referenceReceiver, settleOrFail, skip, startAgent, stopGracefully, type RunningAgent } from "../testing/e2e.ts";
import { createStream, freePort, jetstreamManager, natsClient, natsSkip, startNatsCluster, startNatsServer, type NatsCluster, type NatsServer } from "../testing/nats.ts";
import { until } from "../testing/until.ts";

const fleetSkip = skip || natsSkip;

/** An edge agent's config: a file input on logs/*.log publishing to `servers`, no [api]. */
function edgeConfig(servers: string[], opts: { replicas?: number; inputs?: string; maxEvents?: number } = {}): string {
  return `[agent]
data_dir = "./data"
[control]
listen = "127.0.0.1:0"
[output]
type = "nats"
[output.batch]
max_wait = "100ms"
max_events = ${opts.maxEvents ?? 1000}
[output.nats]
servers = ${JSON.stringify(servers)}
create_stream = true
replicas = ${opts.replicas ?? 1}
timeout = "2s"
[spool]
fsync = "100ms"
${opts.inputs ?? `[inputs.sensor]
type = "file"
typetag = "sshd"
orgid = "org-edge"
name = "honeypot-7"
paths = ["logs/*.log"]
`}`;
}

/** A relay's config: a `nats` input on `servers`, posting to the receiver. */
function relayConfig(receiverUrl: string, servers: string[], consumer = "cybexp-relay", fetchBatch = 100): string {
  return configText(receiverUrl, `[inputs.fleet]
type = "nats"
typetag = "relayed"
servers = ${JSON.stringify(servers)}
consumer = "${consumer}"
fetch_batch = ${fetchBatch}
timeout = "2s"
`);
}

function lines(prefix: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix} ${i} Failed password for root from 203.0.113.${i % 250} port ${40000 + (i % 20000)} ssh2`);
}

/** Appends `ls` to the edge's log in pieces, `pauseMs` apart, so that they go as many batches. */
async function feed(dir: string, ls: string[], pieces = 20, pauseMs = 50): Promise<void> {
  const per = Math.ceil(ls.length / pieces);
  for (let i = 0; i < ls.length; i += per) {
    appendFileSync(join(dir, "logs", "app.log"), ls.slice(i, i + per).join("\n") + "\n");
    await new Promise((r) => setTimeout(r, pauseMs));
  }
}

function edgeFolder(servers: string[], opts?: { replicas?: number; maxEvents?: number }): string {
  const dir = agentFolder(edgeConfig(servers, opts));
  mkdirSync(join(dir, "logs"));
  writeFileSync(join(dir, "logs", "app.log"), "");
  return dir;
}

/**
 * Waits until every line of `want` has arrived at least once. Where a kill can cause
 * duplicates, a count of lines reaches want.length before the last of them came (a message the
 * killed relay held comes again only after ack_wait).
 */
async function allArrive(arrivals: Arrivals, want: string[], what: () => string, ms: number): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const got = new Set(await arrivals.lines());
    if (want.every((l) => got.has(l))) return;
    if (Date.now() > end) assert.fail(`${what()}: ${differences(await arrivals.lines(), want)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Every line at least once, each upload with the edge's parts; the duplicates, counted. */
async function checkArrived(arrivals: Arrivals, receiver: Receiver, want: string[], what: string): Promise<number> {
  const got = await arrivals.lines();
  const missing = want.filter((l) => !got.includes(l));
  assert.equal(missing.length, 0, `${what}: ${differences(got, want)}`);
  for (const u of receiver.uploads.filter((u) => u.name === "honeypot-7")) {
    assert.equal(u.orgid, "org-edge");
    assert.equal(u.typetag, "sshd");
    assert.equal(u.timezone, "UTC");
    assert.equal(u.filename, "honeypot-7.txt");
  }
  return got.length - want.length;
}

async function stopAndRemove(agent: RunningAgent | undefined): Promise<void> {
  if (!agent) return;
  await stopGracefully(agent);
  rmSync(agent.dir, { recursive: true, force: true });
}

describe("fleet: one JetStream node (compiled executable)", { skip: fleetSkip }, () => {
  // A server and a receiver of its own for each test: a new consumer reads its stream from the start.
  let nats: NatsServer;
  let receiver: Receiver;
  beforeEach(async () => {
    nats = await startNatsServer();
    receiver = await referenceReceiver();
  });
  afterEach(async () => {
    await receiver?.close();
    await nats?.close();
  });

  test("validate: type = nats without [api] passes; a wrong servers URL is an error naming the key", async () => {
    const dir = agentFolder(edgeConfig([nats.url]));
    try {
      const ok = await cli(dir, ["validate"]);
      assert.equal(ok.code, 0, ok.stderr);
      writeFileSync(join(dir, "agent.config.toml"), edgeConfig(["http://127.0.0.1:4222"]));
      const bad = await cli(dir, ["validate"]);
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /agent\.config\.toml:\d+: output\.nats\.servers\[0\]: expected a nats:\/\/ or tls:\/\/ URL/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("20,000 lines edge -> JetStream -> relay -> receiver, with the edge's parts; the relay killed with kill -9 halfway and started again", async () => {
    const edgeDir = edgeFolder([nats.url]);
    const relayDir = agentFolder(relayConfig(receiver.url, [nats.url], "kill9-relay"));
    let edge: RunningAgent | undefined, relay: RunningAgent | undefined;
    try {
      edge = await startAgent(edgeDir);
      relay = await startAgent(relayDir);
      const arrivals = new Arrivals(receiver, "honeypot-7");
      const want = lines("kill9", 20_000);
      const feeding = feed(edgeDir, want, 40, 25);
      await until(() => arrivals.count() >= 5_000, "a quarter through the relay", 30_000);
      relay.child.kill("SIGKILL");
      await relay.stop();
      await feeding;
      relay = await startAgent(relayDir);
      await allArrive(arrivals, want, () => `every line after the relay's kill -9: ${relay!.log().slice(-1500)}`, 90_000);
      const duplicates = await checkArrived(arrivals, receiver, want, "after the relay's kill -9");
      const fleet = await relay.input("fleet");
      process.stderr.write(`relay kill -9: ${want.length} lines, ${duplicates} duplicates at the receiver, ${String(fleet.duplicates_dropped ?? 0)} redeliveries dropped by the relay\n`);
      // At most what the killed relay held unacknowledged: one pull of messages of at most 1,000 events.
      assert.ok(duplicates <= 100 * 1000, `${duplicates} duplicates`);
      const edgeOut = (await (await fetch(`${edge.url}/status`, { headers: { authorization: `Bearer ${edge.token}` } })).json()) as { output: { type: string; server: string; state: string } };
      assert.equal(edgeOut.output.type, "nats");
      assert.equal(edgeOut.output.server, `127.0.0.1:${nats.port}`);
    } finally {
      await stopAndRemove(relay);
      await stopAndRemove(edge);
    }
  });

  test("two relays on one consumer share the messages and together deliver each event once", async () => {
    // Many small messages and small pulls, so that both relays are asking while there is work.
    const edgeDir = edgeFolder([nats.url], { maxEvents: 50 });
    const relayDirs = [0, 1].map(() => agentFolder(relayConfig(receiver.url, [nats.url], "shared", 5)));
    let edge: RunningAgent | undefined;
    const relays: RunningAgent[] = [];
    try {
      // The stream first, and both relays on the consumer (pulling) before anything is
      // published: a relay that finds no stream retries with backoff, and the other might
      // meanwhile take everything.
      const nc = await natsClient(nats.url);
      await createStream(await jetstreamManager(nc));
      await nc.close();
      for (const d of relayDirs) relays.push(await startAgent(d));
      for (const r of relays) await until(async () => (await r.input("fleet")).pending !== null, "the relay on the consumer", 15_000);
      edge = await startAgent(edgeDir);
      const arrivals = new Arrivals(receiver, "honeypot-7");
      const want = lines("shared", 10_000);
      await feed(edgeDir, want, 50, 20);
      await settleOrFail([[arrivals, want.length]], "every line through two relays", undefined, 60_000);
      assert.equal(differences(await arrivals.lines(), want), "");
      const counts = await Promise.all(relays.map(async (r) => (await r.input("fleet")).events));
      assert.ok(counts.every((n) => n > 0), `each relay did some: ${counts.join(", ")}; ${JSON.stringify(await relays[0]!.input("fleet"))} ${JSON.stringify(await relays[1]!.input("fleet"))}`);
      assert.equal(counts[0]! + counts[1]!, want.length);
    } finally {
      for (const r of relays) await stopAndRemove(r);
      await stopAndRemove(edge);
    }
  });
});

describe("fleet: cybexp-agent test on a relay (compiled executable)", { skip: fleetSkip }, () => {
  test("prints what the relay would upload, acknowledges nothing: a real relay afterwards delivers every line", async () => {
    const nats = await startNatsServer();
    const receiver = await referenceReceiver();
    const edgeDir = edgeFolder([nats.url]);
    const relayDir = agentFolder(relayConfig(receiver.url, [nats.url]));
    let edge: RunningAgent | undefined, relay: RunningAgent | undefined;
    try {
      edge = await startAgent(edgeDir);
      const want = lines("dry-run", 2_000);
      await feed(edgeDir, want, 4, 20);
      await until(async () => ((await (await fetch(`${edge!.url}/status`, { headers: { authorization: `Bearer ${edge!.token}` } })).json()) as { output: { sent_events: number } }).output.sent_events >= want.length, "the edge's lines in JetStream", 30_000);
      const dry = await cli(relayDir, ["test", "fleet", "--duration", "2s"]);
      assert.equal(dry.code, 0, dry.stderr);
      const printed = dry.stdout.split("\n").filter((l) => l.startsWith("dry-run "));
      assert.deepEqual(printed.slice().sort(), want.slice().sort());
      assert.match(dry.stdout, /^=== upload input=fleet name=honeypot-7 orgid=org-edge typetag=sshd timezone=UTC kind=text events=\d+$/m);
      assert.equal(receiver.uploads.length, 0, "the test sent nothing");
      relay = await startAgent(relayDir);
      const arrivals = new Arrivals(receiver, "honeypot-7");
      await settleOrFail([[arrivals, want.length]], () => `every line after the dry run: ${relay!.log().slice(-1500)}`, undefined, 60_000);
      assert.equal(differences(await arrivals.lines(), want), "");
    } finally {
      await stopAndRemove(relay);
      if (!relay) rmSync(relayDir, { recursive: true, force: true });
      await stopAndRemove(edge);
      await receiver.close();
      await nats.close();
    }
  });
});

describe("fleet: JetStream down when the edge starts (compiled executable)", { skip: fleetSkip }, () => {
  test("lines written while no server runs arrive once it is up", async () => {
    const port = await freePort();
    const receiver = await referenceReceiver();
    const url = `nats://127.0.0.1:${port}`;
    const edgeDir = edgeFolder([url]);
    let edge: RunningAgent | undefined, relay: RunningAgent | undefined, nats: NatsServer | undefined;
    try {
      edge = await startAgent(edgeDir);
      const want = lines("down-at-start", 3_000);
      await feed(edgeDir, want, 10, 20);
      await until(async () => ((await (await fetch(`${edge!.url}/status`, { headers: { authorization: `Bearer ${edge!.token}` } })).json()) as { output: { state: string } }).output.state === "retrying", "the edge's output retrying", 15_000);
      nats = await startNatsServer({ port });
      relay = await startAgent(agentFolder(relayConfig(receiver.url, [url])));
      const arrivals = new Arrivals(receiver, "honeypot-7");
      await settleOrFail([[arrivals, want.length]], () => `every line once JetStream is up: ${edge!.log().slice(-1500)}`, undefined, 60_000);
      assert.equal(differences(await arrivals.lines(), want), "");
    } finally {
      await stopAndRemove(relay);
      await stopAndRemove(edge);
      await nats?.close();
      await receiver.close();
    }
  });
});

describe("fleet: a 3-node cluster with an R3 stream (compiled executable)", { skip: fleetSkip }, () => {
  let cluster: NatsCluster;
  let receiver: Receiver;
  before(async () => {
    cluster = await startNatsCluster(3);
    receiver = await referenceReceiver();
  });
  after(async () => {
    await receiver?.close();
    await cluster?.close();
  });

  test("the stream's leader killed with kill -9 mid-stream: every line arrives", async () => {
    const edgeDir = edgeFolder(cluster.urls, { replicas: 3 });
    const relayDir = agentFolder(relayConfig(receiver.url, cluster.urls));
    let edge: RunningAgent | undefined, relay: RunningAgent | undefined;
    try {
      edge = await startAgent(edgeDir);
      relay = await startAgent(relayDir);
      const arrivals = new Arrivals(receiver, "honeypot-7");
      const want = lines("leader-kill", 20_000);
      const feeding = feed(edgeDir, want, 40, 25);
      await until(() => arrivals.count() >= 3_000, "some lines through the cluster", 30_000);
      const leader = await cluster.leaderOf("CYBEXP_RAW");
      await cluster.node(leader).kill9();
      process.stderr.write(`killed the stream leader ${leader} after ${arrivals.count()} lines\n`);
      await feeding;
      await allArrive(arrivals, want, () => `every line after the leader's kill -9: edge ${edge!.log().slice(-800)} relay ${relay!.log().slice(-800)}`, 90_000);
      const duplicates = await checkArrived(arrivals, receiver, want, "after the leader's kill -9");
      process.stderr.write(`leader kill -9: ${want.length} lines, ${duplicates} duplicates\n`);
      const newLeader = await cluster.leaderOf("CYBEXP_RAW");
      assert.notEqual(newLeader, leader);
    } finally {
      await stopAndRemove(relay);
      await stopAndRemove(edge);
    }
  });
});
