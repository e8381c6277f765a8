// The NATS test harness (test/testing/nats.ts) works: a single JetStream node that survives
// kill -9 and comes back with its store, and a 3-node cluster where an R3 stream's leader is
// killed with kill -9, another is elected, publishing still gets acknowledgements, and the
// killed node rejoins. Skipped, with the reason, where nats-server is missing.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { NatsConnection } from "@nats-io/nats-core";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { createStream, natsClient, natsSkip, publishAcked, startNatsCluster, startNatsServer, startTcpProxy } from "./testing/nats.ts";

const T = { timeout: 120_000, skip: natsSkip };

async function withClient<R>(servers: string | string[], fn: (nc: NatsConnection) => Promise<R>, reconnect = false): Promise<R> {
  const nc = await natsClient(servers, { reconnect });
  try {
    return await fn(nc);
  } finally {
    await nc.close();
  }
}

describe("nats test harness", () => {
  test("a single node with JetStream: publish, kill -9, restart on the same port with the same store", T, async () => {
    const srv = await startNatsServer({ jetstream: true });
    try {
      assert.match(srv.url, /^nats:\/\/127\.0\.0\.1:\d+$/);
      await withClient(srv.url, async (nc) => {
        const jsm = await jetstreamManager(nc);
        await createStream(jsm, { name: "ONE", subjects: ["one.>"] });
        const js = jetstream(nc);
        for (let i = 1; i <= 3; i++) assert.equal((await publishAcked(js, "one.x", `m${i}`)).seq, i);
      });
      await srv.kill9();
      assert.equal(srv.running, false);
      await assert.rejects(natsClient(srv.url, { timeout: 500 }));
      await srv.restart();
      await withClient(srv.url, async (nc) => {
        const jsm = await jetstreamManager(nc);
        const info = await jsm.streams.info("ONE");
        assert.equal(info.state.messages, 3);
        assert.equal((await publishAcked(jetstream(nc), "one.x", "m4")).seq, 4);
      });
    } finally {
      await srv.close();
    }
  });

  test("a node without JetStream, a fixed port, stop() and close()", T, async () => {
    const first = await startNatsServer({ jetstream: false });
    const port = first.port;
    await first.close();
    const srv = await startNatsServer({ jetstream: false, port });
    try {
      assert.equal(srv.port, port);
      await withClient(srv.url, async (nc) => {
        const jsm = jetstreamManager(nc);
        await assert.rejects(jsm, /jetstream/i);
      });
      await srv.stop();
      assert.equal(srv.running, false);
    } finally {
      await srv.close();
    }
  });

  test("the TCP proxy forwards, swallows what clients send once blackholed, and cuts connections", T, async () => {
    const srv = await startNatsServer({ jetstream: true });
    const proxy = await startTcpProxy(srv.port);
    try {
      const nc = await natsClient(proxy.url);
      try {
        assert.ok((await nc.rtt()) >= 0);
        assert.equal(proxy.connections(), 1);
        proxy.blackhole();
        nc.publish("hole.subject", "lost");
        // The PING of a flush is swallowed too: no PONG comes back.
        const pong = await Promise.race([nc.flush().then(() => "pong", () => "failed"), new Promise((r) => setTimeout(() => r("no pong"), 500))]);
        assert.equal(pong, "no pong");
        assert.match(proxy.swallowed(), /PUB hole\.subject/);
        proxy.cutAll();
        await nc.closed();
      } finally {
        await nc.close().catch(() => {});
      }
      // A new connection works again.
      await withClient(proxy.url, async (nc2) => assert.ok((await nc2.rtt()) >= 0));
    } finally {
      await proxy.close();
      await srv.close();
    }
  });

  test("a 3-node cluster: the R3 stream's leader killed with kill -9, a new leader, acknowledged publishes, the node rejoins", T, async () => {
    const cluster = await startNatsCluster(3);
    try {
      assert.deepEqual(cluster.nodes.map((n) => n.name), ["n1", "n2", "n3"]);
      assert.equal(new Set(cluster.urls).size, 3);
      await withClient(cluster.urls, async (nc) => {
        const jsm = await jetstreamManager(nc);
        await createStream(jsm, { name: "HARNESS", subjects: ["h.>"], replicas: 3 });
        const js = jetstream(nc);
        for (let i = 1; i <= 5; i++) await publishAcked(js, "h.before", `b${i}`);

        const leader = await cluster.leaderOf("HARNESS");
        assert.ok(["n1", "n2", "n3"].includes(leader), leader);
        await cluster.node(leader).kill9();

        // Publishing still gets acknowledgements (the client moves to a living node if it was on the dead one).
        for (let i = 1; i <= 5; i++) await publishAcked(js, "h.after", `a${i}`);
        const next = await cluster.leaderOf("HARNESS");
        assert.notEqual(next, leader);

        await cluster.node(leader).restart();
        await cluster.waitReady();
        // The stream's replica on the restarted node catches up: every peer current, 10 messages.
        const end = Date.now() + 30_000;
        for (;;) {
          const info = await jsm.streams.info("HARNESS").catch(() => undefined);
          const replicas = info?.cluster?.replicas ?? [];
          if (info && info.state.messages === 10 && replicas.length === 2 && replicas.every((r) => r.current)) break;
          if (Date.now() > end) assert.fail(`the stream did not become whole again: ${JSON.stringify(info?.cluster)}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }, true);
    } finally {
      await cluster.close();
    }
  });
});
