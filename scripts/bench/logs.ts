// Log-collection benchmarks (issue 3): the agent side by side with syslog-ng 3.38, each
// run alone, both uploading to the same reference Cybex-P receiver (scripts/receiver.ts, in
// its own process) as the same multipart upload of 1000 events.
//
//   A  one file of 1,000,000 sshd auth-log lines (~123 bytes), read from its beginning,
//      text events. Agent: a `file` input; syslog-ng: file() + flags(no-parse).
//   B  `loggen` sends 500,000 RFC 5424 messages of 200 bytes over one TCP connection, JSON
//      events. Agent: a `syslog` input; syslog-ng: syslog() + $(format-json) shaped like the
//      agent's syslog event.
//
// Measured per product: wall time from its start (A) or loggen's start (B) to the receiver's
// last upload; CPU seconds (user+sys, /proc/<pid>/stat) until then; peak RSS (VmHWM); for B
// loggen's CPU separately. Every event is checked: the count, and each sequence number
// exactly once. The agent runs with its spool (fsync "1s", the default); syslog-ng with its
// memory queue and, when the module exists, again with disk-buffer(reliable(yes)).
//
//   bun scripts/bench/logs.ts [--only A|B] [--lines 1000000] [--messages 500000] [--runs 1]
//       [--products agent,syslog-ng,syslog-ng+disk] [--binary] [--cpu-prof DIR] [--keep]
//       [--sng-workers 4] [--sng-window 10000]
//   --products    any of agent, agent+ready, agent+tap, syslog-ng, syslog-ng+disk. agent+ready:
//                 in A the file appears once the agent answers (its start-up is not timed);
//                 agent+tap: the same with one `cybexp-agent tap` client attached before the
//                 file appears (in B before loggen starts): their ratio is what tapping costs
//
//   --runs        run everything N times (one product at a time) and report medians
//   --binary      run dist/cybexp-agent (built first if absent) instead of bun agent/main.ts
//   --cpu-prof    write a Bun CPU profile (.cpuprofile and .md) of each agent run into DIR
//   --keep        keep the temporary directories (configs, logs, received uploads)
//   --sng-workers / --sng-window   syslog-ng's http() workers and its source window (log-iw-size
//                 per file or connection; keep it >= workers x 1000 or batches wait for the timeout)
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import {
  closeSync, existsSync, linkSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { errorMessage } from "../../agent/errortext.ts";
import { isBun } from "../../agent/runtime/detect.ts";
import { cpuSeconds, freePort, peakRssBytes, stopChild, waitForPort } from "./procstat.ts";
import { seqOfSshdLine, writeSshdLog } from "./sshd-lines.ts";
import {
  DEFAULT_TUNING, LOGGEN, SYSLOG_NG, fileToHttpConfig, hasDiskBuffer, syslogNgArgs, syslogTcpToHttpConfig, type Tuning,
} from "./syslog-ng/config.ts";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const BUN = isBun() ? process.execPath : join(ROOT, "node_modules/.bin/bun");
const TOKEN = "bench-token";
const HOST = "127.0.0.1";
const ORGID = "bench-org";
const BATCH = 1000;
/** A run fails when the receiver's count has not moved for this long. */
const STALL_MS = 60_000;

const { values: opts } = parseArgs({
  options: {
    only: { type: "string" },
    lines: { type: "string", default: "1000000" },
    messages: { type: "string", default: "500000" },
    runs: { type: "string", default: "1" },
    binary: { type: "boolean", default: false },
    products: { type: "string", default: "agent,syslog-ng,syslog-ng+disk" },
    "cpu-prof": { type: "string" },
    "sng-workers": { type: "string", default: String(DEFAULT_TUNING.workers) },
    "sng-window": { type: "string", default: String(DEFAULT_TUNING.logIwSize) },
    keep: { type: "boolean", default: false },
  },
  strict: true,
});

function positiveInt(name: string, value: string | undefined): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) usage(`--${name} expects a positive integer, got "${value}"`);
  return n;
}

function usage(message: string): never {
  console.error(`logs bench: ${message}`);
  process.exit(2);
}

const LINES = positiveInt("lines", opts.lines);
const MESSAGES = positiveInt("messages", opts.messages);
const RUNS = positiveInt("runs", opts.runs);
const SNG_TUNING: Tuning = {
  ...DEFAULT_TUNING,
  batchLines: BATCH,
  workers: positiveInt("sng-workers", opts["sng-workers"]),
  logIwSize: positiveInt("sng-window", opts["sng-window"]),
};
if (opts.only !== undefined && opts.only !== "A" && opts.only !== "B") usage(`--only expects A or B, got "${opts.only}"`);
if (opts["cpu-prof"] && opts.binary) usage("--cpu-prof profiles the agent under bun: leave out --binary");
for (const tool of [SYSLOG_NG, LOGGEN]) if (!existsSync(tool)) usage(`${tool} not found (apt-get install syslog-ng-core syslog-ng-mod-http)`);

type ScenarioId = "A" | "B";
type ProductId = "agent" | "agent+ready" | "agent+tap" | "syslog-ng" | "syslog-ng+disk";
const isAgent = (p: ProductId) => p === "agent" || p === "agent+ready" || p === "agent+tap";

interface Scenario {
  id: ScenarioId;
  events: number;
  describe: string;
}

interface RunResult {
  scenario: ScenarioId;
  product: ProductId;
  run: number;
  ok: boolean;
  error?: string;
  wallS: number;
  cpuS: number;
  rssBytes: number;
  loggenCpuS?: number;
  /** How long loggen took to hand over all messages: far below wallS means the product buffered them. */
  loggenWallS?: number;
  receiverCpuS: number;
  uploads: number;
  received: number;
  /** Events the tap client printed (agent+tap). */
  tapped?: number;
}

const scenarios: Scenario[] = [
  { id: "A" as const, events: LINES, describe: `file of ${LINES} sshd lines, text events` },
  { id: "B" as const, events: MESSAGES, describe: `loggen ${MESSAGES} RFC 5424 messages (200 B) over 1 TCP connection, JSON events` },
].filter((s) => !opts.only || s.id === opts.only);
const PRODUCTS: readonly ProductId[] = ["agent", "agent+ready", "agent+tap", "syslog-ng", "syslog-ng+disk"];
const products = opts.products!.split(",").map((p) => p.trim()).filter((p) => p !== "") as ProductId[];
for (const p of products) if (!PRODUCTS.includes(p)) usage(`--products: unknown "${p}" (expected ${PRODUCTS.join(", ")})`);
if (products.length === 0) usage("--products is empty");
if (products.includes("syslog-ng+disk") && !hasDiskBuffer()) {
  console.error("# syslog-ng has no disk-buffer module: syslog-ng+disk is not run");
  products.splice(products.indexOf("syslog-ng+disk"), 1);
}

// ---- setup: work dirs, the input file, the receiver -------------------------------------

const work = mkdtempSync(join(tmpdir(), "bench-logs-"));
// Received uploads are kept for the duplicate check; in memory (tmpfs) so storing them costs
// the receiver as little as possible.
const receivedDir = join(existsSync("/dev/shm") ? mkdtempSync("/dev/shm/bench-logs-") : work, "received");
const live = new Set<ChildProcess>();

function cleanup(): void {
  for (const child of live) child.kill("SIGKILL");
  if (!opts.keep) {
    rmSync(work, { recursive: true, force: true });
    rmSync(resolve(receivedDir, ".."), { recursive: true, force: true });
  }
}
// The receiver and products hold this process's stderr: left running, they would keep a
// pipe reading it (`... | tail`) open forever.
process.on("exit", cleanup);
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => process.exit(128 + (signal === "SIGINT" ? 2 : signal === "SIGTERM" ? 15 : 1)));
}

/** mtime of the newest .ts file under agent/ and plugins/. */
function newestSource(): number {
  let newest = 0;
  for (const top of ["agent", "plugins"]) {
    for (const entry of readdirSync(join(ROOT, top), { recursive: true, encoding: "utf8" })) {
      if (entry.endsWith(".ts")) newest = Math.max(newest, statSync(join(ROOT, top, entry)).mtimeMs);
    }
  }
  return newest;
}

function agentCommand(): string[] {
  if (!opts.binary) {
    const prof = opts["cpu-prof"] ? ["--cpu-prof", "--cpu-prof-md", "--cpu-prof-dir", resolve(opts["cpu-prof"])] : [];
    return [BUN, ...prof, join(ROOT, "agent/main.ts")];
  }
  const binary = join(ROOT, "dist/cybexp-agent");
  if (!existsSync(binary)) {
    console.error("# building dist/cybexp-agent");
    const built = spawnSync(BUN, ["scripts/build.ts"], { cwd: ROOT, stdio: "inherit" });
    if (built.status !== 0 || !existsSync(binary)) usage("building dist/cybexp-agent failed");
  } else if (newestSource() > statSync(binary).mtimeMs) {
    console.error("# note: dist/cybexp-agent is older than agent/ or plugins/ (npm run build to refresh it)");
  }
  return [binary];
}
const AGENT = agentCommand();

let inputFile = "";
if (scenarios.some((s) => s.id === "A")) {
  inputFile = join(work, "auth.log");
  const bytes = writeSshdLog(inputFile, LINES);
  console.error(`# A input: ${inputFile}, ${LINES} lines, ${bytes} bytes (${(bytes / LINES - 1).toFixed(1)} bytes a line + newline)`);
}

const receiver = spawn(BUN, ["scripts/receiver.ts", "--port", "0", "--token", TOKEN, "--dir", receivedDir], {
  cwd: ROOT,
  stdio: ["ignore", "pipe", "inherit"],
});
live.add(receiver);
const receiverUrl: string = await new Promise((resolveUrl, reject) => {
  const rl = createInterface({ input: receiver.stdout! });
  rl.once("line", (line) => resolveUrl(JSON.parse(line).listening));
  receiver.once("exit", (code) => reject(new Error(`receiver exited (${code})`)));
});

interface Stats {
  uploads: number;
  lines: number;
  rejected: number;
}
async function receiverStats(): Promise<Stats> {
  return (await (await fetch(`${receiverUrl}/_stats`)).json()) as Stats;
}

// ---- the products -----------------------------------------------------------------------

function toml(s: string): string {
  return JSON.stringify(s);
}

/** Where an agent run reads scenario A's file: the file itself, or (a late file) a link made once the agent answers. */
function agentInputPath(product: ProductId, dir: string): string {
  return product === "agent" ? inputFile : join(dir, "in", "auth.log");
}

function agentConfig(scenario: Scenario, product: ProductId, dir: string, label: string, port: number): string {
  const input =
    scenario.id === "A"
      ? `type = "file"\npaths = [${toml(agentInputPath(product, dir))}]\nformat = "text"\nstart_at = "beginning"`
      : `type = "syslog"\nlisten = [${toml(`tcp://${HOST}:${port}`)}]`;
  return `[agent]
data_dir = ${toml(join(dir, "data"))}
log_level = "warn"
hostname = "bench"

[control]
listen = "127.0.0.1:0"

[api]
url = ${toml(receiverUrl)}
token = ${toml(TOKEN)}
orgid = ${toml(ORGID)}
timezone = "UTC"

[inputs.bench]
${input}
typetag = "syslog"
name = ${toml(label)}
[inputs.bench.batch]
max_events = ${BATCH}
`;
}

function syslogNgConfig(scenario: Scenario, product: ProductId, dir: string, label: string, port: number): string {
  const tuning: Tuning = { ...SNG_TUNING };
  if (product === "syslog-ng+disk") {
    tuning.diskBufferDir = join(dir, "disk-buffer");
    mkdirSync(tuning.diskBufferDir);
  }
  const upload = {
    apiUrl: receiverUrl,
    token: TOKEN,
    meta: { input: "bench", name: label, orgid: ORGID, typetag: "syslog", timezone: "UTC" },
    kind: scenario.id === "A" ? ("text" as const) : ("json" as const),
  };
  return scenario.id === "A" ? fileToHttpConfig(inputFile, upload, tuning) : syslogTcpToHttpConfig(HOST, port, upload, tuning);
}

/** Starts the product with its output in dir/product.log. */
function startProduct(scenario: Scenario, product: ProductId, dir: string, label: string, port: number): ChildProcess {
  const out = openSync(join(dir, "product.log"), "w");
  let child: ChildProcess;
  if (isAgent(product)) {
    const config = join(dir, "agent.config.toml");
    if (product !== "agent") mkdirSync(join(dir, "in"));
    writeFileSync(config, agentConfig(scenario, product, dir, label, port));
    child = spawn(AGENT[0]!, [...AGENT.slice(1), "run", "--config", config], { cwd: ROOT, stdio: ["ignore", out, out] });
  } else {
    const config = join(dir, "syslog-ng.conf");
    writeFileSync(config, syslogNgConfig(scenario, product, dir, label, port));
    child = spawn(SYSLOG_NG, syslogNgArgs(config, dir), { cwd: dir, stdio: ["ignore", out, out] });
  }
  closeSync(out);
  live.add(child);
  child.once("exit", () => live.delete(child));
  return child;
}

interface LoggenRun {
  child: ChildProcess;
  /** Wall and CPU seconds and peak RSS once loggen has exited (from /usr/bin/time), if available. */
  usage(): { wallS?: number; cpuS?: number; rssBytes?: number; summary: string };
}

function startLoggen(port: number, dir: string): LoggenRun {
  const loggenArgs = [
    "--inet", "--stream", "--syslog-proto", "--size", "200", "--number", String(MESSAGES),
    // loggen's defaults are 1000 messages/s and a 10 s run: lift both.
    "--rate", "100000000", "--interval", "86400", "--quiet",
    HOST, String(port),
  ];
  const timeFile = join(dir, "loggen.time");
  const outFile = join(dir, "loggen.log");
  const out = openSync(outFile, "w");
  const timed = existsSync("/usr/bin/time");
  const child = timed
    ? spawn("/usr/bin/time", ["-f", "%e %U %S %M", "-o", timeFile, LOGGEN, ...loggenArgs], { stdio: ["ignore", out, out] })
    : spawn(LOGGEN, loggenArgs, { stdio: ["ignore", out, out] });
  closeSync(out);
  live.add(child);
  child.once("exit", () => live.delete(child));
  return {
    child,
    usage() {
      const summary = readFileSync(outFile, "utf8").trim().split("\n").pop() ?? "";
      if (!timed || !existsSync(timeFile)) return { summary };
      const [wall, user, sys, maxKb] = readFileSync(timeFile, "utf8").trim().split("\n").pop()!.split(" ").map(Number);
      return { wallS: wall, cpuS: user! + sys!, rssBytes: maxKb! * 1024, summary };
    },
  };
}

interface TapClient {
  child: ChildProcess;
  /** Events it printed so far. */
  lines(): number;
}

/** `cybexp-agent tap bench` against the agent in `dir`, its events counted and thrown away; resolves once it taps. */
async function startTap(dir: string): Promise<TapClient> {
  const child = spawn(AGENT[0]!, [...AGENT.slice(1), "tap", "bench", "--config", join(dir, "agent.config.toml")], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  live.add(child);
  child.once("exit", () => live.delete(child));
  let lines = 0, stderr = "";
  child.stdout!.on("data", (b: Buffer) => {
    for (const byte of b) if (byte === 10) lines++;
  });
  await new Promise<void>((resolveTap, reject) => {
    child.stderr!.on("data", (b: Buffer) => {
      stderr += b;
      if (stderr.includes("tapping")) resolveTap();
    });
    child.once("exit", (code) => reject(new Error(`tap exited (${code}): ${stderr}`)));
  });
  return { child, lines: () => lines };
}

async function waitForFile(path: string, product: ChildProcess, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!existsSync(path)) {
    if (product.exitCode !== null) throw new Error(`exited (${product.exitCode}) before ${path} appeared`);
    if (Date.now() > deadline) throw new Error(`${path} did not appear within ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// ---- one run ----------------------------------------------------------------------------

/** Polls the receiver until it has `target` lines in all; fails fast on rejections, exits, stalls. */
async function waitForLines(target: number, base: Stats, product: ChildProcess): Promise<Stats> {
  let last = base.lines;
  let movedAt = Date.now();
  for (;;) {
    const stats = await receiverStats();
    if (stats.lines >= target) return stats;
    if (stats.rejected > base.rejected) throw new Error(`the receiver rejected ${stats.rejected - base.rejected} uploads`);
    if (product.exitCode !== null || product.signalCode !== null) {
      throw new Error(`exited (${product.exitCode ?? product.signalCode}) with ${stats.lines - base.lines} of ${target - base.lines} events delivered`);
    }
    if (stats.lines !== last) {
      last = stats.lines;
      movedAt = Date.now();
    } else if (Date.now() - movedAt > STALL_MS) {
      throw new Error(`stalled at ${stats.lines - base.lines} of ${target - base.lines} events for ${STALL_MS / 1000} s`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The keys of the agent's syslog event (DESIGN.md "Event shapes"), which syslog-ng's JSON copies. */
const SYSLOG_EVENT_KEYS = [
  "facility", "severity", "timestamp", "hostname", "appname", "procid", "msgid", "structured_data", "message", "format",
  "source_ip", "transport",
].sort().join(",");

interface Received {
  uploads: number;
  lines: number;
  lastReceivedAt: number;
  problems: string[];
}

/** Reads back every upload the receiver stored for `label` and checks each event arrived once. */
function checkReceived(scenario: Scenario, label: string): Received {
  const expected = scenario.events;
  const seen = new Uint8Array(expected);
  const problems: string[] = [];
  let uploads = 0;
  let lines = 0;
  let lastReceivedAt = 0;
  let duplicates = 0;
  let foreign = 0;
  let badJson = 0;
  let otherShape: string | undefined;
  const suffix = `-${label}.json`;
  for (const entry of readdirSync(receivedDir)) {
    if (!entry.endsWith(suffix)) continue;
    const meta = JSON.parse(readFileSync(join(receivedDir, entry), "utf8"));
    uploads++;
    lastReceivedAt = Math.max(lastReceivedAt, meta.receivedAt);
    const want = { name: label, orgid: ORGID, typetag: "syslog", timezone: "UTC", filename: scenario.id === "A" ? "bench.txt" : "bench.ndjson" };
    for (const [key, value] of Object.entries(want)) {
      if (meta[key] !== value && problems.length < 5) problems.push(`upload ${meta.seq}: ${key} "${meta[key]}", expected "${value}"`);
    }
    const base = entry.slice(0, -".json".length);
    const ext = meta.filename.slice(meta.filename.lastIndexOf(".") + 1);
    const content = readFileSync(join(receivedDir, `${base}.${ext}`), "utf8");
    for (const line of content.split("\n")) {
      if (line === "") continue;
      lines++;
      let seq: number;
      if (scenario.id === "A") seq = seqOfSshdLine(line);
      else {
        let message: unknown;
        try {
          const event = JSON.parse(line);
          message = event.message;
          const keys = Object.keys(event).sort().join(",");
          if (keys !== SYSLOG_EVENT_KEYS && !otherShape) otherShape = keys;
        } catch {
          badJson++;
        }
        // loggen numbers its messages "seq: 0000000042, thread: ..." from 0.
        const m = typeof message === "string" ? /seq: (\d+)/.exec(message) : null;
        seq = m ? Number(m[1]) : -1;
      }
      if (seq < 0 || seq >= expected) foreign++;
      else if (seen[seq]) duplicates++;
      else seen[seq] = 1;
    }
  }
  let missing = 0;
  for (let i = 0; i < expected; i++) if (!seen[i]) missing++;
  if (missing) problems.push(`${missing} events missing`);
  if (duplicates) problems.push(`${duplicates} duplicate events`);
  if (foreign) problems.push(`${foreign} lines without a known sequence number`);
  if (badJson) problems.push(`${badJson} lines that are not JSON`);
  if (otherShape) problems.push(`events with keys ${otherShape}, expected ${SYSLOG_EVENT_KEYS}`);
  return { uploads, lines, lastReceivedAt, problems };
}

function deleteReceived(label: string): void {
  for (const entry of readdirSync(receivedDir)) if (entry.includes(`-${label}.`)) rmSync(join(receivedDir, entry));
}

function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}

async function runOnce(scenario: Scenario, product: ProductId, run: number): Promise<RunResult> {
  const label = `${scenario.id}-${product.replace("syslog-ng", "sng").replace("+", "-")}-${run}`;
  const dir = join(work, label);
  mkdirSync(dir);
  const result: RunResult = {
    scenario: scenario.id, product, run, ok: false, wallS: NaN, cpuS: NaN, rssBytes: NaN, receiverCpuS: NaN, uploads: 0, received: 0,
  };
  const port = scenario.id === "B" ? await freePort(HOST) : 0;
  const base = await receiverStats();
  const receiverCpu0 = cpuSeconds(receiver.pid!) ?? NaN;
  let t0 = Date.now();
  const child = startProduct(scenario, product, dir, label, port);
  let loggen: LoggenRun | undefined;
  let tap: TapClient | undefined;
  try {
    let productCpu0 = 0;
    if (product === "agent+ready" || product === "agent+tap") {
      await waitForFile(join(dir, "data", "runningconfig"), child, 30_000);
      if (product === "agent+tap") tap = await startTap(dir);
      if (scenario.id === "A") {
        productCpu0 = cpuSeconds(child.pid!) ?? 0;
        t0 = Date.now();
        linkSync(inputFile, agentInputPath(product, dir));
      }
    }
    if (scenario.id === "B") {
      await waitForPort(HOST, port, child, 30_000);
      productCpu0 = cpuSeconds(child.pid!) ?? 0;
      t0 = Date.now();
      loggen = startLoggen(port, dir);
    }
    const target = base.lines + scenario.events;
    await waitForLines(target, base, child);
    result.cpuS = (cpuSeconds(child.pid!) ?? NaN) - productCpu0;
    result.rssBytes = peakRssBytes(child.pid!) ?? NaN;
    result.receiverCpuS = (cpuSeconds(receiver.pid!) ?? NaN) - receiverCpu0;
    if (loggen) {
      await new Promise<void>((r) => (loggen!.child.exitCode !== null ? r() : loggen!.child.once("exit", () => r())));
      const usage = loggen.usage();
      result.loggenCpuS = usage.cpuS;
      result.loggenWallS = usage.wallS;
      if (!/count=\d+|average rate/.test(usage.summary)) console.error(`# loggen: ${usage.summary}`);
    }
    // Anything arriving after the count was reached is a duplicate; give late uploads a moment
    // (more than the batch timeouts of 1 s) before looking.
    await new Promise((r) => setTimeout(r, 1500));
    const after = await receiverStats();
    if (tap) {
      await stopChild(tap.child, 5_000);
      result.tapped = tap.lines();
    }
    const stopped = await stopChild(child, 15_000);
    if (stopped === "killed") console.error(`# ${label}: did not stop within 15 s of SIGTERM, killed`);
    const got = checkReceived(scenario, label);
    result.uploads = got.uploads;
    result.received = got.lines;
    result.wallS = (got.lastReceivedAt - t0) / 1000;
    if (after.lines !== target) got.problems.push(`receiver counted ${after.lines - base.lines} events, expected ${scenario.events}`);
    if (got.problems.length) throw new Error(got.problems.join("; "));
    result.ok = true;
  } catch (err) {
    result.error = errorMessage(err);
    await stopChild(child, 5_000);
    if (loggen) await stopChild(loggen.child, 1_000);
    if (tap) await stopChild(tap.child, 1_000);
    const log = tail(join(dir, "product.log"));
    console.error(`# ${label} FAILED: ${result.error}${log ? `\n# ${product} output (${join(dir, "product.log")}):\n${log}` : ""}`);
  } finally {
    if (!opts.keep) {
      deleteReceived(label);
      if (result.ok) rmSync(dir, { recursive: true, force: true });
    }
  }
  return result;
}

// ---- report -----------------------------------------------------------------------------

function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

interface Row {
  scenario: ScenarioId;
  product: ProductId;
  ok: number;
  runs: number;
  wallS: number;
  cpuS: number;
  rssMb: number;
  loggenCpuS: number;
  receiverCpuS: number;
  uploads: number;
}

function summarize(results: RunResult[]): Row[] {
  const rows: Row[] = [];
  for (const scenario of scenarios) {
    for (const product of products) {
      const all = results.filter((r) => r.scenario === scenario.id && r.product === product);
      const ok = all.filter((r) => r.ok);
      rows.push({
        scenario: scenario.id,
        product,
        ok: ok.length,
        runs: all.length,
        wallS: median(ok.map((r) => r.wallS)),
        cpuS: median(ok.map((r) => r.cpuS)),
        rssMb: median(ok.map((r) => r.rssBytes / 1024 / 1024)),
        loggenCpuS: median(ok.map((r) => r.loggenCpuS ?? NaN)),
        receiverCpuS: median(ok.map((r) => r.receiverCpuS)),
        uploads: median(ok.map((r) => r.uploads)),
      });
    }
  }
  return rows;
}

function fmt(x: number, digits = 2): string {
  return Number.isFinite(x) ? x.toFixed(digits) : "-";
}

function printTable(rows: Row[]): void {
  const header = ["scenario", "product", "ok/runs", "wall s", "events/s", "cpu s", "cpu µs/event", "peak RSS MiB", "loggen cpu s", "receiver cpu s", "uploads"];
  const body = rows.map((r) => {
    const events = scenarios.find((s) => s.id === r.scenario)!.events;
    return [
      r.scenario, r.product, `${r.ok}/${r.runs}`, fmt(r.wallS), fmt(events / r.wallS, 0), fmt(r.cpuS),
      fmt((r.cpuS * 1e6) / events, 2), fmt(r.rssMb, 0), fmt(r.loggenCpuS), fmt(r.receiverCpuS), fmt(r.uploads, 0),
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  console.log(line(header));
  for (const b of body) console.log(line(b));
}

function printRatios(rows: Row[]): void {
  for (const scenario of scenarios) {
    const ready = rows.find((r) => r.scenario === scenario.id && r.product === "agent+ready");
    const tapped = rows.find((r) => r.scenario === scenario.id && r.product === "agent+tap");
    if (ready && tapped) {
      console.log(`${scenario.id} tap cost: throughput with a tap client ${fmt((100 * ready.wallS) / tapped.wallS, 1)}% of without, cpu ${fmt(tapped.cpuS / ready.cpuS)}x, peak RSS ${fmt(tapped.rssMb / ready.rssMb)}x`);
    }
    const agent = rows.find((r) => r.scenario === scenario.id && r.product === "agent");
    if (!agent) continue;
    for (const other of rows.filter((r) => r.scenario === scenario.id && !isAgent(r.product))) {
      console.log(
        `${scenario.id} agent / ${other.product}: wall ${fmt(agent.wallS / other.wallS)}x, ` +
          `cpu ${fmt(agent.cpuS / other.cpuS)}x, peak RSS ${fmt(agent.rssMb / other.rssMb)}x`,
      );
    }
  }
}

// ---- main -------------------------------------------------------------------------------

const agentDesc = opts.binary ? "dist/cybexp-agent" : `bun agent/main.ts${opts["cpu-prof"] ? " (under --cpu-prof)" : ""}`;
if (products.some(isAgent)) console.log(`# agent: ${agentDesc}, spool on (fsync "1s"), batches of ${BATCH}, api.concurrency 4`);
if (products.some((p) => !isAgent(p))) console.log(
  `# syslog-ng: ${spawnSync(SYSLOG_NG, ["--version"], { encoding: "utf8" }).stdout.split("\n")[0]}, flags(flow-control), ` +
    `http() batch-lines(${BATCH}) batch-timeout(${SNG_TUNING.batchTimeoutMs}) workers(${SNG_TUNING.workers}), ` +
    `log-iw-size ${SNG_TUNING.logIwSize} per file or connection, log-fetch-limit(${SNG_TUNING.logFetchLimit}); ` +
    `"syslog-ng" = memory queue (no disk-buffer), "syslog-ng+disk" = disk-buffer(reliable(yes))`,
);
for (const s of scenarios) console.log(`# ${s.id}: ${s.describe}`);

const results: RunResult[] = [];
for (let run = 1; run <= RUNS; run++) {
  for (const scenario of scenarios) {
    for (const product of products) {
      const r = await runOnce(scenario, product, run);
      results.push(r);
      if (r.ok) {
        console.error(
          `# run ${run} ${scenario.id} ${product}: wall ${fmt(r.wallS)} s, cpu ${fmt(r.cpuS)} s, ` +
            `peak RSS ${fmt(r.rssBytes / 1024 / 1024, 0)} MiB` +
            (r.loggenCpuS !== undefined ? `, loggen cpu ${fmt(r.loggenCpuS)} s, loggen done after ${fmt(r.loggenWallS ?? NaN)} s` : "") +
            (r.tapped !== undefined ? `, the tap client printed ${r.tapped} events` : ""),
        );
      }
    }
  }
}

const rows = summarize(results);
console.log(RUNS > 1 ? `# medians of ${RUNS} runs` : "# one run");
printTable(rows);
printRatios(rows);
console.log(JSON.stringify({ bench: "logs", runs: RUNS, rows }));

await stopChild(receiver, 5_000);
const allOk = results.every((r) => r.ok);
if (!allOk && !opts.keep) {
  // Keep the failed runs' configs and logs (successful runs' were removed), not the input.
  if (inputFile) rmSync(inputFile, { force: true });
  opts.keep = true;
  rmSync(resolve(receivedDir, ".."), { recursive: true, force: true });
  console.error(`# failed runs kept in ${work}`);
}
if (opts["cpu-prof"]) console.error(`# CPU profiles in ${resolve(opts["cpu-prof"])}; summary: bun scripts/bench/cpuprofile-top.ts FILE.cpuprofile`);
if (opts.keep && allOk) console.error(`# kept ${work} and ${receivedDir}`);
process.exit(allOk ? 0 : 1);
