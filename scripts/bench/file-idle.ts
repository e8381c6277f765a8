// What 1,000 idle files cost the file input: its CPU and memory while nothing is written, and
// how soon a line appended to one of them is uploaded. Each file gets a few lines first; once
// all have arrived at the reference receiver (scripts/receiver.ts, its own process) the agent
// is measured for --seconds. Two layouts: 1,000 files in one watched directory, and 10 files
// in each of 100 directories (one glob with a wildcard directory).
//
//   bun scripts/bench/file-idle.ts [--files 1000] [--seconds 30] [--binary] [--keep]
//       [--glob-interval 1s] [--only one-dir|many-dirs]
//
//   --binary         run dist/cybexp-agent (built first if absent) instead of bun agent/main.ts
//   --glob-interval  the input's glob_interval (the default is the input's own, 1s)
//
// CPU is user+sys seconds from /proc/<pid>/stat over the window, as % of one core.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { cpuSeconds, stopChild } from "./procstat.ts";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const BUN = process.execPath;
const TOKEN = "bench-token";

const { values: opts } = parseArgs({
  options: {
    files: { type: "string", default: "1000" },
    seconds: { type: "string", default: "30" },
    binary: { type: "boolean", default: false },
    keep: { type: "boolean", default: false },
    "glob-interval": { type: "string" },
    only: { type: "string" },
  },
});
const FILES = Number(opts.files);
const SECONDS = Number(opts.seconds);
if (!Number.isInteger(FILES) || FILES < 100 || !(SECONDS > 0)) {
  console.error("usage: bun scripts/bench/file-idle.ts [--files N>=100] [--seconds S] [--binary] [--keep] [--glob-interval 1s] [--only one-dir|many-dirs]");
  process.exit(2);
}
const LAYOUTS = ["one-dir", "many-dirs"].filter((l) => !opts.only || l === opts.only);
const LINES_PER_FILE = 3;

const work = mkdtempSync(join(tmpdir(), "bench-file-idle-"));
const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of live) child.kill("SIGKILL");
  if (!opts.keep) rmSync(work, { recursive: true, force: true });
});
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => process.exit(130));

function agentCommand(): string[] {
  if (!opts.binary) return [BUN, join(ROOT, "agent/main.ts")];
  const binary = join(ROOT, "dist/cybexp-agent");
  if (!existsSync(binary) && spawnSync(BUN, ["scripts/build.ts"], { cwd: ROOT, stdio: "inherit" }).status !== 0) process.exit(1);
  return [binary];
}
const AGENT = agentCommand();

const receiver = spawn(BUN, ["scripts/receiver.ts", "--port", "0", "--token", TOKEN, "--dir", join(work, "received")], {
  cwd: ROOT,
  stdio: ["ignore", "pipe", "inherit"],
});
live.add(receiver);
const receiverUrl: string = await new Promise((ok, fail) => {
  createInterface({ input: receiver.stdout! }).once("line", (line) => ok(JSON.parse(line).listening));
  receiver.once("exit", (code) => fail(new Error(`receiver exited (${code})`)));
});
const receivedLines = async (): Promise<number> => ((await (await fetch(`${receiverUrl}/_stats`)).json()) as { lines: number }).lines;

async function waitFor(target: number, what: string, ms = 120_000): Promise<number> {
  const start = performance.now();
  for (;;) {
    if ((await receivedLines()) >= target) return performance.now() - start;
    if (performance.now() - start > ms) throw new Error(`${what}: ${await receivedLines()} of ${target} lines after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const line = (f: number, i: number) => `2026-12-02T10:00:00Z host sshd[${f}]: Failed password for root from 10.0.${f % 256}.${i} port 22 ssh2\n`;

/** The files of one layout, each with LINES_PER_FILE lines; returns their paths and the glob. */
function makeFiles(layout: string, dir: string): { paths: string[]; glob: string } {
  const paths: string[] = [];
  const perDir = layout === "one-dir" ? FILES : 10;
  for (let f = 0; f < FILES; f++) {
    const sub = layout === "one-dir" ? dir : join(dir, `d${String(Math.floor(f / perDir)).padStart(3, "0")}`);
    mkdirSync(sub, { recursive: true });
    const path = join(sub, `host-${f}.log`);
    writeFileSync(path, Array.from({ length: LINES_PER_FILE }, (_, i) => line(f, i)).join(""));
    paths.push(path);
  }
  return { paths, glob: layout === "one-dir" ? join(dir, "*.log") : join(dir, "d*", "*.log") };
}

function countOf(pid: number, what: "fd" | "inotify"): number {
  try {
    const fds = readdirSync(`/proc/${pid}/fd`);
    if (what === "fd") return fds.length;
    let watches = 0;
    for (const fd of fds) {
      try {
        watches += (readFileSync(`/proc/${pid}/fdinfo/${fd}`, "utf8").match(/^inotify wd:/gm) ?? []).length;
      } catch {
        // closed meanwhile
      }
    }
    return watches;
  } catch {
    return NaN;
  }
}

function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}

interface Row {
  layout: string;
  cpuPct: number;
  rss: number;
  fds: number;
  watches: number;
  wakeMs: number;
}

async function run(layout: string): Promise<Row> {
  const dir = join(work, layout);
  const { paths, glob } = makeFiles(layout, join(dir, "logs"));
  const base = await receivedLines();
  const config = `[agent]
data_dir = ${JSON.stringify(join(dir, "data"))}
log_level = "warn"
hostname = "bench"

[control]
listen = "127.0.0.1:0"

[api]
url = ${JSON.stringify(receiverUrl)}
token = ${JSON.stringify(TOKEN)}
orgid = "bench"
timezone = "UTC"

[inputs.idle]
type = "file"
typetag = "syslog"
paths = [${JSON.stringify(glob)}]
${opts["glob-interval"] ? `glob_interval = ${JSON.stringify(opts["glob-interval"])}\n` : ""}`;
  writeFileSync(join(dir, "agent.toml"), config);
  const agent = spawn(AGENT[0]!, [...AGENT.slice(1), "run", "-c", join(dir, "agent.toml")], { cwd: dir, stdio: ["ignore", "ignore", "inherit"] });
  live.add(agent);
  try {
    await waitFor(base + FILES * LINES_PER_FILE, "first read of every file");
    await new Promise((r) => setTimeout(r, 3000)); // checkpoints saved, idle back-off reached
    const cpu0 = cpuSeconds(agent.pid!)!;
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, SECONDS * 1000));
    const cpuPct = (100 * (cpuSeconds(agent.pid!)! - cpu0)) / ((performance.now() - t0) / 1000);
    const row: Row = { layout, cpuPct, rss: rssMiB(agent.pid!), fds: countOf(agent.pid!, "fd"), watches: countOf(agent.pid!, "inotify"), wakeMs: NaN };
    // One line appended to an idle file in the middle: how soon it is uploaded.
    const before = await receivedLines();
    appendFileSync(paths[Math.floor(FILES / 2)]!, line(0, 99));
    row.wakeMs = await waitFor(before + 1, "the appended line", 30_000);
    return row;
  } finally {
    live.delete(agent);
    await stopChild(agent, 10_000);
  }
}

console.error(`# ${FILES} files x ${LINES_PER_FILE} lines, idle window ${SECONDS} s, agent: ${AGENT.join(" ")}`);
const rows: Row[] = [];
for (const layout of LAYOUTS) rows.push(await run(layout));
console.log("| layout | CPU % of one core (idle) | RSS MiB | open fds | inotify watches | appended line uploaded after |");
console.log("|---|---|---|---|---|---|");
for (const r of rows) {
  const what = r.layout === "one-dir" ? `${FILES} files, 1 dir` : `${FILES} files, ${FILES / 10} dirs`;
  console.log(`| ${what} | ${r.cpuPct.toFixed(2)} | ${r.rss.toFixed(0)} | ${r.fds} | ${r.watches} | ${r.wakeMs.toFixed(0)} ms |`);
}
