// The relay path against the direct one, side by side: LINES sshd lines of a file through
//   direct: edge agent -> reference receiver (POST /raw)
//   relay:  edge agent ([output] type = "nats") -> nats-server -js (one node, R1) -> relay agent
//           (a `nats` input) -> reference receiver
// For each: events/s end to end (first line read to last line received), and the CPU seconds and
// peak RSS of each process (edge, nats-server, relay). Every line is checked to arrive once.
//
//   bun scripts/bench/fleet.ts [--lines 1000000] [--binary] [--keep]
//
// Needs nats-server (Debian's nats-server). --binary runs dist/cybexp-agent (built if absent).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, linkSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { isBun } from "../../agent/runtime/detect.ts";
import { cpuSeconds, freePort, peakRssBytes, stopChild, waitForPort } from "./procstat.ts";
import { seqOfSshdLine, writeSshdLog } from "./sshd-lines.ts";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const BUN = isBun() ? process.execPath : join(ROOT, "node_modules/.bin/bun");
const TOKEN = "bench-token";

const { values: opts } = parseArgs({
  options: {
    lines: { type: "string", default: "1000000" },
    binary: { type: "boolean", default: false },
    keep: { type: "boolean", default: false },
  },
  strict: true,
});
const LINES = Number(opts.lines);
if (!Number.isInteger(LINES) || LINES < 1) throw new Error(`--lines expects a positive integer, got ${opts.lines}`);
const NATS_SERVER = ["/usr/sbin/nats-server", "/usr/bin/nats-server"].find((p) => existsSync(p));
if (!NATS_SERVER) {
  console.error("fleet bench: nats-server not found (apt-get install nats-server)");
  process.exit(2);
}

function agentCommand(): string[] {
  if (!opts.binary) return [BUN, join(ROOT, "agent/main.ts")];
  const binary = join(ROOT, "dist/cybexp-agent");
  if (!existsSync(binary)) spawnSync(BUN, ["scripts/build.ts"], { cwd: ROOT, stdio: "inherit" });
  return [binary];
}
const AGENT = agentCommand();

const work = mkdtempSync(join(tmpdir(), "bench-fleet-"));
const receivedDir = join(existsSync("/dev/shm") ? mkdtempSync("/dev/shm/bench-fleet-") : work, "received");
const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of live) c.kill("SIGKILL");
  if (!opts.keep) {
    rmSync(work, { recursive: true, force: true });
    rmSync(resolve(receivedDir, ".."), { recursive: true, force: true });
  }
});

const inputFile = join(work, "auth.log");
writeSshdLog(inputFile, LINES);

function start(cmd: string[], cwd: string, log: string): ChildProcess {
  const out = openSync(log, "w");
  const child = spawn(cmd[0]!, cmd.slice(1), { cwd, stdio: ["ignore", out, out] });
  closeSync(out);
  live.add(child);
  child.once("exit", () => live.delete(child));
  return child;
}

const receiver = spawn(BUN, ["scripts/receiver.ts", "--port", "0", "--token", TOKEN, "--dir", receivedDir], { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] });
live.add(receiver);
const receiverUrl: string = await new Promise((res, rej) => {
  createInterface({ input: receiver.stdout! }).once("line", (l) => res(JSON.parse(l).listening));
  receiver.once("exit", (c) => rej(new Error(`receiver exited (${c})`)));
});
async function receivedLines(): Promise<number> {
  return ((await (await fetch(`${receiverUrl}/_stats`)).json()) as { lines: number }).lines;
}

async function waitForFile(path: string, child: ChildProcess): Promise<void> {
  const end = Date.now() + 30_000;
  while (!existsSync(path)) {
    if (child.exitCode !== null) throw new Error(`${path}: the process exited (${child.exitCode})`);
    if (Date.now() > end) throw new Error(`${path} did not appear`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const agentHead = (dir: string) => `[agent]
data_dir = ${JSON.stringify(join(dir, "data"))}
log_level = "warn"
hostname = "bench"
[control]
listen = "127.0.0.1:0"
`;
const fileInput = (dir: string, label: string) => `[inputs.bench]
type = "file"
typetag = "syslog"
name = "${label}"
orgid = "bench-org"
format = "text"
start_at = "beginning"
paths = [${JSON.stringify(join(dir, "in", "auth.log"))}]
`;
const api = `[api]
url = ${JSON.stringify(receiverUrl)}
token = "${TOKEN}"
orgid = "bench-org"
`;

interface Proc {
  name: string;
  child: ChildProcess;
  cpu0: number;
}

interface Result {
  path: string;
  wallS: number;
  eventsPerS: number;
  procs: Array<{ name: string; cpuS: number; rssMiB: number }>;
  duplicates: number;
}

/** Counts the label's lines in the stored uploads: each seq once. */
function checkReceived(label: string): { lines: number; duplicates: number; missing: number } {
  const seen = new Uint8Array(LINES);
  let lines = 0, duplicates = 0;
  for (const f of readdirSync(receivedDir)) {
    if (!f.endsWith(`-${label}.txt`)) continue;
    for (const line of readFileSync(join(receivedDir, f), "utf8").split("\n")) {
      if (!line) continue;
      lines++;
      const seq = seqOfSshdLine(line);
      if (seen[seq]) duplicates++;
      seen[seq] = 1;
    }
  }
  let missing = 0;
  for (const s of seen) if (!s) missing++;
  return { lines, duplicates, missing };
}

async function run(path: "direct" | "relay"): Promise<Result> {
  const dir = join(work, path);
  mkdirSync(join(dir, "edge", "in"), { recursive: true });
  const procs: Proc[] = [];
  const base = await receivedLines();
  let natsPort = 0;
  if (path === "relay") {
    natsPort = await freePort();
    mkdirSync(join(dir, "nats"));
    const nats = start([NATS_SERVER!, "-js", "-a", "127.0.0.1", "-p", String(natsPort), "-sd", join(dir, "nats")], dir, join(dir, "nats.log"));
    await waitForPort("127.0.0.1", natsPort, nats, 30_000);
    procs.push({ name: "nats-server", child: nats, cpu0: 0 });
    mkdirSync(join(dir, "relay"));
    writeFileSync(join(dir, "relay", "agent.config.toml"), `${agentHead(join(dir, "relay"))}${api}[inputs.fleet]
type = "nats"
typetag = "relayed"
servers = ["nats://127.0.0.1:${natsPort}"]
fetch_batch = 200
`);
    const relay = start([...AGENT, "run", "-c", join(dir, "relay", "agent.config.toml")], ROOT, join(dir, "relay.log"));
    await waitForFile(join(dir, "relay", "data", "runningconfig"), relay);
    procs.push({ name: "relay", child: relay, cpu0: 0 });
  }
  const output = path === "relay"
    ? `[output]\ntype = "nats"\n[output.nats]\nservers = ["nats://127.0.0.1:${natsPort}"]\ncreate_stream = true\n`
    : api;
  writeFileSync(join(dir, "edge", "agent.config.toml"), `${agentHead(join(dir, "edge"))}${output}${fileInput(join(dir, "edge"), path)}`);
  const edge = start([...AGENT, "run", "-c", join(dir, "edge", "agent.config.toml")], ROOT, join(dir, "edge.log"));
  await waitForFile(join(dir, "edge", "data", "runningconfig"), edge);
  procs.unshift({ name: "edge", child: edge, cpu0: 0 });
  for (const p of procs) p.cpu0 = cpuSeconds(p.child.pid!) ?? 0;
  const t0 = Date.now();
  linkSync(inputFile, join(dir, "edge", "in", "auth.log"));
  const target = base + LINES;
  let last = base, movedAt = Date.now();
  for (;;) {
    const n = await receivedLines();
    if (n >= target) break;
    if (n !== last) [last, movedAt] = [n, Date.now()];
    else if (Date.now() - movedAt > 60_000) throw new Error(`${path}: stalled at ${n - base} of ${LINES} lines (logs in ${dir})`);
    for (const p of procs) if (p.child.exitCode !== null) throw new Error(`${path}: ${p.name} exited (${p.child.exitCode}); logs in ${dir}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  const wallS = (Date.now() - t0) / 1000;
  const stats = procs.map((p) => ({ name: p.name, cpuS: (cpuSeconds(p.child.pid!) ?? NaN) - p.cpu0, rssMiB: (peakRssBytes(p.child.pid!) ?? NaN) / 1024 / 1024 }));
  await new Promise((r) => setTimeout(r, 1500));
  for (const p of procs) await stopChild(p.child, 15_000);
  const got = checkReceived(path);
  if (got.missing) throw new Error(`${path}: ${got.missing} lines missing`);
  return { path, wallS, eventsPerS: LINES / wallS, procs: stats, duplicates: got.duplicates };
}

console.log(`# ${LINES} sshd lines; agent: ${opts.binary ? "dist/cybexp-agent" : "bun agent/main.ts"}; ${spawnSync(NATS_SERVER, ["--version"], { encoding: "utf8" }).stdout.trim()}, JetStream, one node, R1`);
const results: Result[] = [];
for (const path of ["direct", "relay"] as const) {
  const r = await run(path);
  results.push(r);
  console.log(
    `${path.padEnd(6)}  ${r.wallS.toFixed(2)} s  ${Math.round(r.eventsPerS).toLocaleString("en-US")} events/s  ` +
      r.procs.map((p) => `${p.name}: cpu ${p.cpuS.toFixed(2)} s, peak RSS ${p.rssMiB.toFixed(0)} MiB`).join("; ") +
      `  duplicates ${r.duplicates}`,
  );
}
const [direct, relay] = results;
console.log(`relay / direct throughput: ${((100 * relay!.eventsPerS) / direct!.eventsPerS).toFixed(1)}%`);
console.log(JSON.stringify({ bench: "fleet", lines: LINES, results }));
await stopChild(receiver, 5_000);
process.exit(0);
