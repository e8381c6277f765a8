// Spool append to API 2xx: 120-byte text events appended in records of 1000 to a real spool
// (fsync "1s"), uploaded by the real forwarder (batches of 1000, concurrency 4) to the
// reference receiver running as its own process. Reports events/s until the receiver has
// counted every event.
//
//   bun scripts/bench/pipeline.ts [--events 1000000] [--store] [--fsync 1s]
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { CybexApiTransport } from "../../agent/output/http.ts";
import { Forwarder, routeKey } from "../../agent/forwarder.ts";
import { createLogger } from "../../agent/log.ts";
import { Spool } from "../../agent/spool/index.ts";
import { parseDuration } from "../../agent/units.ts";

const { values } = parseArgs({
  options: {
    events: { type: "string", default: "1000000" },
    store: { type: "boolean", default: false },
    fsync: { type: "string", default: "1s" },
    concurrency: { type: "string", default: "4" },
  },
});
const total = Number(values.events);
const dir = mkdtempSync(join(tmpdir(), "bench-pipeline-"));
const log = createLogger("warn");

// The receiver in its own process, as the real API would be.
const receiverArgs = ["scripts/receiver.ts", "--port", "0", "--token", "bench", ...(values.store ? ["--dir", join(dir, "received")] : [])];
const receiverProc = spawn(process.execPath, receiverArgs, { stdio: ["ignore", "pipe", "inherit"] });
const receiverUrl: string = await new Promise((resolve, reject) => {
  const rl = createInterface({ input: receiverProc.stdout! });
  rl.once("line", (line) => resolve(JSON.parse(line).listening));
  receiverProc.once("exit", (c) => reject(new Error(`receiver exited ${c}`)));
});

const fsync = values.fsync === "always" || values.fsync === "never" ? values.fsync : parseDuration(values.fsync!)!;
const spool = await Spool.open({ dir: join(dir, "spool"), maxBytes: 1024 ** 3, whenFull: "block", fsync, log });
const forwarder = new Forwarder({
  spool,
  output: new CybexApiTransport({ url: receiverUrl, token: "bench", timeoutMs: 30_000, concurrency: Number(values.concurrency), tlsVerify: true }, log),
  batchFor: () => ({ maxEvents: 1000, maxBytes: 1024 * 1024, maxWaitMs: 1000 }),
  deadLetterDir: join(dir, "dead-letter"),
  log,
});
forwarder.start();

const route = routeKey({ input: "bench", name: "bench", orgid: "org", typetag: "syslog", timezone: "UTC" });
// 120 bytes per event, each one different (the sequence number) so nothing can be cached.
const pad = "x".repeat(200);
const event = (i: number) => {
  const head = `<34>1 2026-11-27T10:00:00.000Z sensor01 sshd 4242 - - Failed password for root from 203.0.113.${i % 250} seq=${i} `;
  return head + pad.slice(0, 120 - head.length);
};

const cpu0 = process.cpuUsage();
const t0 = performance.now();
let peakRss = 0;
const rssTimer = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 50);

const producer = (async () => {
  for (let i = 0; i < total; i += 1000) {
    const batch: string[] = new Array(Math.min(1000, total - i));
    for (let j = 0; j < batch.length; j++) batch[j] = event(i + j);
    await spool.append(route, "text", batch, { maxEventsPerRecord: 1000 });
  }
  return performance.now() - t0;
})();

let received = 0;
while (received < total) {
  await new Promise((r) => setTimeout(r, 20));
  received = forwarder.status().sent_events;
}
const appendMs = await producer;
// Confirm with the receiver's own count.
const stats = (await (await fetch(`${receiverUrl}/_stats`)).json()) as { lines: number; uploads: number };
const wallMs = performance.now() - t0;
const cpu = process.cpuUsage(cpu0);
clearInterval(rssTimer);

const result = {
  events: total,
  event_bytes: 120,
  received_lines: stats.lines,
  uploads: stats.uploads,
  wall_s: +(wallMs / 1000).toFixed(3),
  append_s: +(appendMs / 1000).toFixed(3),
  events_per_s: Math.round(total / (wallMs / 1000)),
  mb_per_s: +((total * 121) / (wallMs / 1000) / 1e6).toFixed(1),
  agent_cpu_s: +((cpu.user + cpu.system) / 1e6).toFixed(2),
  agent_peak_rss_mb: Math.round(peakRss / 1024 / 1024),
  fsync: values.fsync,
  receiver_stores_files: values.store,
};
console.log(JSON.stringify(result));

await forwarder.stop(1000);
await spool.close();
receiverProc.kill();
rmSync(dir, { recursive: true, force: true });
if (stats.lines !== total) {
  console.error(`receiver counted ${stats.lines} lines, expected ${total}`);
  process.exit(1);
}
process.exit(0);
