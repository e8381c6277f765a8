// The nats output against a real nats-server: the message a batch becomes (subject, headers,
// body, id), a resend dropped by the duplicate window, a record larger than max_payload cut at
// lines into numbered parts, a stream created on demand, and failures as retries whose words
// name the servers and never the credentials.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { NatsOutputConfig } from "../agent/config.ts";
import { silentLogger } from "../agent/log.ts";
import { cutAtLines, NatsTransport } from "../agent/output/nats.ts";
import type { OutgoingBatch } from "../agent/output/transport.ts";
import { natsClient, natsSkip, jetstreamManager, startNatsServer, type NatsServer } from "./testing/nats.ts";
import { freePort } from "./testing/ports.ts";

const enc = new TextEncoder();
const stop = new AbortController().signal;

function config(servers: string[], over: Partial<NatsOutputConfig> = {}): NatsOutputConfig {
  return {
    servers, timeout: 2000, stream: "CYBEXP_RAW", subjectPrefix: "cybexp.raw", createStream: true, replicas: 1, duplicateWindowMs: 120_000, ...over,
  };
}

function batch(lines: string[], over: Partial<OutgoingBatch["meta"]> = {}, position = "1:0"): OutgoingBatch {
  const payload = enc.encode(lines.map((l) => `${l}\n`).join(""));
  return {
    meta: { input: "auth", name: "auth", orgid: "org.acme", typetag: "ssh d", timezone: "Europe/Berlin", ...over },
    kind: "text",
    records: [{ payload, count: lines.length, position, appendedAt: 1_765_000_000_000 }],
    events: lines.length,
    bytes: payload.byteLength,
  };
}

/** Every message of the stream, oldest first. */
async function messages(url: string, stream = "CYBEXP_RAW") {
  const nc = await natsClient(url);
  try {
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info(stream);
    const out = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
      const m = await jsm.streams.getMessage(stream, { seq });
      if (m) out.push({ subject: m.subject, headers: m.header, body: new TextDecoder().decode(m.data) });
    }
    return out;
  } finally {
    await nc.close();
  }
}

describe("the nats output", { skip: natsSkip }, () => {
  let nats: NatsServer;
  before(async () => {
    // A small max_payload, so that cutting records to it is seen with small data.
    nats = await startNatsServer({ config: ["max_payload: 65536"] });
  });
  after(async () => {
    await nats?.close();
  });

  test("a batch is one message: subject <prefix>.<orgid>.<typetag> made safe, the file part as body, the parts in headers; a resend is dropped", async () => {
    const out = new NatsTransport(config([nats.url]), "sensor01-0123abcd", "sensor01", silentLogger);
    try {
      assert.deepEqual(await out.send(batch(["203.0.113.9 failed", "198.51.100.7 failed"]), stop), { type: "sent" });
      assert.equal(out.detail().server, `127.0.0.1:${nats.port}`);
      assert.deepEqual(await out.send(batch(["203.0.113.9 failed", "198.51.100.7 failed"]), stop), { type: "sent" });
      assert.equal(out.detail().duplicates_dropped, 1);
      const got = await messages(nats.url);
      assert.equal(got.length, 1, "the resend with the same spool position is stored once");
      const m = got[0]!;
      assert.equal(m.subject, "cybexp.raw.org_acme.ssh_d");
      assert.equal(m.body, "203.0.113.9 failed\n198.51.100.7 failed\n");
      assert.equal(m.headers.get("Cybexp-Name"), "auth");
      assert.equal(m.headers.get("Cybexp-Orgid"), "org.acme");
      assert.equal(m.headers.get("Cybexp-Typetag"), "ssh d");
      assert.equal(m.headers.get("Cybexp-Timezone"), "Europe/Berlin");
      assert.equal(m.headers.get("Cybexp-Kind"), "text");
      assert.equal(m.headers.get("Cybexp-Host"), "sensor01");
      assert.equal(m.headers.get("Nats-Msg-Id"), "sensor01-0123abcd-1:0-1765000000000");
    } finally {
      await out.close();
    }
  });

  test("a record larger than max_payload goes as numbered parts cut at lines, each under the limit, the same parts when sent again", async () => {
    const out = new NatsTransport(config([nats.url]), "big-agent", "sensor02", silentLogger);
    try {
      const lines = Array.from({ length: 3000 }, (_, i) => `line ${i} ${"x".repeat(60)}`);
      const b = batch(lines, { name: "big", orgid: "o", typetag: "t" }, "7:4096");
      assert.deepEqual(await out.send(b, stop), { type: "sent" });
      assert.deepEqual(await out.send(b, stop), { type: "sent" });
      const parts = (await messages(nats.url)).filter((m) => m.headers.get("Cybexp-Name") === "big");
      assert.ok(parts.length >= 4, `${parts.length} parts`);
      const ids = parts.map((m) => m.headers.get("Nats-Msg-Id"));
      assert.deepEqual(ids, parts.map((_, i) => `big-agent-7:4096-1765000000000-${i + 1}of${parts.length}`));
      assert.ok(parts.every((m) => enc.encode(m.body).byteLength <= 65536));
      assert.equal(parts.map((m) => m.body).join(""), lines.map((l) => `${l}\n`).join(""));
      assert.equal(out.detail().duplicates_dropped, parts.length);
    } finally {
      await out.close();
    }
  });

  test("an event larger than max_payload is rejected (to dead letters), not retried for ever", async () => {
    const out = new NatsTransport(config([nats.url]), "a", "h", silentLogger);
    try {
      const r = await out.send(batch(["y".repeat(100_000)]), stop);
      assert.equal(r.type, "rejected");
      assert.match((r as { error: string }).error, /larger than the NATS server's max_payload \(65536 bytes/);
    } finally {
      await out.close();
    }
  });

  test("no server: a retry naming the servers; no stream and create_stream off: a retry saying what to do", async () => {
    const port = await freePort();
    const down = new NatsTransport(config([`nats://127.0.0.1:${port}`], { token: "s3cret-token" }), "a", "h", silentLogger);
    const r = await down.send(batch(["x"]), stop);
    assert.equal(r.type, "retry");
    assert.match((r as { error: string }).error, new RegExp(`^cannot connect to NATS \\(nats://127\\.0\\.0\\.1:${port}\\)`));
    assert.ok(!(r as { error: string }).error.includes("s3cret-token"));
    assert.equal(await down.probe(AbortSignal.timeout(3000)), false);
    await down.close();

    const noStream = new NatsTransport(config([nats.url], { stream: "NONE", subjectPrefix: "elsewhere", createStream: false }), "a", "h", silentLogger);
    try {
      const r2 = await noStream.send(batch(["x"]), stop);
      assert.equal(r2.type, "retry");
      assert.match((r2 as { error: string }).error, /no JetStream stream answered for elsewhere\.org_acme\.ssh_d .*create_stream = true creates it/);
      assert.equal(await noStream.probe(AbortSignal.timeout(3000)), true, "the server itself answers");
    } finally {
      await noStream.close();
    }
  });
});

test("cutAtLines: whole lines, each piece at most max unless one line is longer", () => {
  const text = "aaaa\nbb\ncccccc\nd\n";
  const parts = cutAtLines(enc.encode(text), 8).map((p) => new TextDecoder().decode(p));
  assert.deepEqual(parts, ["aaaa\nbb\n", "cccccc\n", "d\n"]);
  assert.deepEqual(cutAtLines(enc.encode("0123456789\nab\n"), 4).map((p) => new TextDecoder().decode(p)), ["0123456789\n", "ab\n"]);
  assert.equal(cutAtLines(enc.encode(text), 100).length, 1);
});
