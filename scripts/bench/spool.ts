// Spool micro-benchmark: append + read + ack throughput of 120-byte text events in records of
// 1000 events, in two shapes:
//   steady  - append a batch, read what is there, ack it (the forwarder keeping up)
//   backlog - append a large backlog first, then drain it (the forwarder catching up)
// Usage: bun scripts/bench/spool.ts [--events N] [--fsync never|always|<ms>] [--batch N]
// Prints one JSON line per scenario.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Spool } from "../../agent/spool/index.ts";
import { silentLogger } from "../../agent/log.ts";
import { crc32Implementation } from "../../agent/spool/crc32.ts";
import { runtimeName } from "../../agent/runtime/detect.ts";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

const totalEvents = Number(arg("events", "3000000"));
const batch = Number(arg("batch", "1000"));
const fsyncArg = arg("fsync", "1000");
const fsyncPolicy: "always" | "never" | number =
  fsyncArg === "always" || fsyncArg === "never" ? fsyncArg : Number(fsyncArg);
const runtime = runtimeName();

// 120 bytes each: a realistic syslog-ish line with a varying counter.
function makeEvents(n: number, seed: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const head = `<34>Oct 11 22:14:15 sensor01 sshd[${(seed + i) % 100000}]: Failed password for root from 10.0.0.1 port `;
    out.push((head + String(seed * 7 + i).padStart(10, "0")).padEnd(120, "x").slice(0, 120));
  }
  return out;
}

async function withSpool<T>(fn: (spool: Spool) => Promise<T>): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "spool-bench-"));
  try {
    const spool = await Spool.open({ dir, maxBytes: 4 * 2 ** 30, whenFull: "block", fsync: fsyncPolicy, log: silentLogger });
    try {
      return await fn(spool);
    } finally {
      await spool.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function report(scenario: string, events: number, ms: number, extra: Record<string, unknown> = {}) {
  console.log(JSON.stringify({
    bench: "spool", scenario, runtime, crc32: crc32Implementation, fsync: fsyncArg, batch,
    events, seconds: +(ms / 1000).toFixed(3), events_per_s: Math.round(events / (ms / 1000)),
    mb_per_s: +((events * 121) / 1e6 / (ms / 1000)).toFixed(1), ...extra,
  }));
}

const pool = [makeEvents(batch, 1), makeEvents(batch, 2), makeEvents(batch, 3), makeEvents(batch, 4)];
const route = JSON.stringify({ input: "bench", typetag: "syslog", orgid: "org", timezone: "UTC", name: "bench" });

await withSpool(async (spool) => {
  const t0 = performance.now();
  let appended = 0, acked = 0, i = 0;
  while (appended < totalEvents) {
    await spool.append(route, "text", pool[i++ & 3]!, { maxEventsPerRecord: batch });
    appended += batch;
    for (const r of spool.read(1 << 20)) {
      acked += r.count;
      spool.ack(r.id);
    }
  }
  for (let recs = spool.read(1 << 20); recs.length > 0; recs = spool.read(1 << 20)) {
    for (const r of recs) { acked += r.count; spool.ack(r.id); }
  }
  const ms = performance.now() - t0;
  if (acked !== appended) throw new Error(`acked ${acked} of ${appended}`);
  report("steady", acked, ms);
});

await withSpool(async (spool) => {
  const t0 = performance.now();
  let appended = 0, i = 0;
  while (appended < totalEvents) {
    await spool.append(route, "text", pool[i++ & 3]!, { maxEventsPerRecord: batch });
    appended += batch;
  }
  const tAppend = performance.now() - t0;
  let acked = 0;
  for (let recs = spool.read(1 << 20); recs.length > 0; recs = spool.read(1 << 20)) {
    for (const r of recs) { acked += r.count; spool.ack(r.id); }
  }
  const ms = performance.now() - t0;
  if (acked !== appended) throw new Error(`acked ${acked} of ${appended}`);
  report("backlog", acked, ms, {
    append_events_per_s: Math.round(appended / (tAppend / 1000)),
    drain_events_per_s: Math.round(acked / ((ms - tAppend) / 1000)),
  });
});
