// PhishTank input benchmark: a dump shaped like online-valid.json (100,000 records by default),
// compressed with /usr/bin/bzip2, served by a local HTTP server; the phishtank input (real
// spool and state in a temp dir) reads it on its first poll, then after a restart reads a
// dump with 1% of the records changed (half changed in place: `online` flipped, some details
// refreshed; half replaced by new ones).
// Every measured run is a child process of its own, so its peak RSS (VmHWM) is its own.
//
// Usage: bun scripts/bench/phishtank.ts [--records N] [--changed 0.01] [--keep]
//        (deno: deno run -A scripts/bench/phishtank.ts ...)
// Prints one JSON line per measurement:
//   first_poll     the input's first poll of the .json.bz2 dump (empty state)
//   repoll_changed a restarted input polling the changed dump (state from the first poll)
//   repoll_same    a restarted input polling the changed dump again, served without ETag
//                  (200 with the same content: the full read that posts nothing)
//   decompress     the bzip2 decoder alone over the .bz2 file
//   parse          jsonArrayBatches alone over the plain JSON file
//   plain_poll     the input's first poll of the plain .json dump (no decompression)
// and a summary line with diff+spool estimated as plain_poll - parse.
import { execFileSync, spawn } from "node:child_process";
import { createReadStream, createWriteStream, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { runtimeName } from "../../agent/runtime/detect.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const runtime = runtimeName();

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
const flag = (name: string) => process.argv.includes(`--${name}`);

// ---- the dump --------------------------------------------------------------------------------

/** mulberry32: a small seeded PRNG, so every run generates the same dump. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = ["secure", "login", "account", "verify", "update", "billing", "support", "signin", "wallet", "bank", "office", "mail",
  "auth", "service", "online", "client", "portal", "help", "confirm", "recovery", "id", "web", "app", "cloud", "pay", "card", "track",
  "delivery", "parcel", "post", "tax", "refund", "invoice", "doc", "share", "drive", "team", "meta", "apple", "micro"];
const TLDS = ["com", "net", "org", "top", "xyz", "info", "online", "site", "shop", "ru", "br", "co", "io", "app", "dev", "live", "click"];
const PATHS = ["/", "/login.php", "/signin/", "/verify/index.html", "/wp-content/plugins/update/", "/account/confirm", "/secure/auth.php",
  "/office365/index.php", "/banking/login", "/track/parcel.html", "/id/recovery", "/invoice/view.php", "/app/", "/webmail/"];
const TARGETS = ["Other", "Other", "Other", "Other", "Microsoft", "PayPal", "Facebook", "Amazon.com", "Apple", "AEON Card", "Allegro",
  "Banco De Brasil", "Netflix", "DHL", "Optus", "Coinbase", "Instagram", "WhatsApp", "Steam", "Santander UK"];
const RIRS = ["arin", "ripencc", "apnic", "lacnic", "afrinic"];
const COUNTRIES = ["US", "DE", "NL", "FR", "GB", "RU", "BR", "CN", "JP", "SG", "CA", "IN", "HK", "UA", "TR"];

interface GenRecord {
  id: number;
  t: number;
  online: "yes" | "no";
  detailShift: number;
}

function pick<T>(r: () => number, list: readonly T[]): T {
  return list[Math.floor(r() * list.length)]!;
}

function iso(sec: number): string {
  return new Date(sec * 1000).toISOString().replace(".000Z", "+00:00");
}

/** The record's JSON text, in the dump's style; everything but the given fields derives from the id. */
function recordText(g: GenRecord): string {
  const r = prng(g.id * 2654435761);
  const host = r() < 0.08
    ? `${1 + Math.floor(r() * 223)}.${Math.floor(r() * 256)}.${Math.floor(r() * 256)}.${Math.floor(r() * 256)}`
    : `${r() < 0.4 ? `${pick(r, WORDS)}-${pick(r, WORDS)}.` : ""}${pick(r, WORDS)}${Math.floor(r() * 1000)}.${pick(r, TLDS)}`;
  let path = pick(r, PATHS);
  if (r() < 0.3) path += `?id=${Math.floor(r() * 1e9).toString(36)}&session=${Math.floor(r() * 1e12).toString(16)}`;
  const url = `${r() < 0.7 ? "https" : "http"}://${host}${path}`;
  const verified = g.t + 60 + Math.floor(r() * 3600);
  const nDetails = r() < 0.1 ? 0 : r() < 0.94 ? 1 : 2;
  const details: string[] = [];
  for (let d = 0; d < nDetails; d++) {
    const a = 1 + Math.floor(r() * 223), b = Math.floor(r() * 256), c = Math.floor(r() * 256);
    details.push(`{"ip_address": "${a}.${b}.${c}.${Math.floor(r() * 256)}", "cidr_block": "${a}.${b}.${c & 0xe0}.0/19", ` +
      `"announcing_network": "${1000 + Math.floor(r() * 60000)}", "rir": "${pick(r, RIRS)}", "country": "${pick(r, COUNTRIES)}", ` +
      `"detail_time": "${iso(verified + 5 + g.detailShift)}"}`);
  }
  return `{"phish_id": "${g.id}", "url": "${url}", "phish_detail_url": "http://www.phishtank.com/phish_detail.php?phish_id=${g.id}", ` +
    `"submission_time": "${iso(g.t)}", "verified": "yes", "verification_time": "${iso(verified)}", "online": "${g.online}", ` +
    `"details": [${details.join(", ")}], "target": "${pick(r, TARGETS)}"}`;
}

function generate(n: number, changedFraction: number): { first: GenRecord[]; second: GenRecord[]; changed: number; added: number } {
  const r = prng(42);
  const first: GenRecord[] = [];
  let id = 7_900_000;
  let t = Date.UTC(2023, 0, 1) / 1000;
  for (let i = 0; i < n; i++) {
    id += 1 + Math.floor(r() * 3);
    t += Math.floor(r() * 600);
    first.push({ id, t, online: "yes", detailShift: 0 });
  }
  // The next dump: some records change in place (online flips, details refreshed), the
  // oldest ones leave and as many new ones arrive.
  const total = Math.round(n * changedFraction);
  const changed = Math.floor(total / 2);
  const added = total - changed;
  const second = first.slice(added).map((g) => ({ ...g }));
  for (let k = 0; k < changed; k++) {
    const g = second[Math.floor(((k + 0.5) * second.length) / changed)]!;
    g.online = "no";
    if (k % 2 === 1) g.detailShift = 3600;
  }
  for (let k = 0; k < added; k++) {
    id += 1 + Math.floor(r() * 3);
    t += Math.floor(r() * 600);
    second.push({ id, t, online: "yes", detailShift: 0 });
  }
  return { first, second, changed, added };
}

async function writeDump(file: string, records: GenRecord[]): Promise<void> {
  const out = createWriteStream(file);
  const write = (s: string) => new Promise<void>((resolve, reject) => out.write(s, (err) => (err ? reject(err) : resolve())));
  await write("[");
  for (let i = 0; i < records.length; i += 1000) {
    const part = records.slice(i, i + 1000).map(recordText).join(", ");
    await write(i === 0 ? part : `, ${part}`);
  }
  await write("]");
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
}

// ---- the measured child ------------------------------------------------------------------------

interface ChildResult {
  stage: string;
  cpu_seconds: number;
  /** From start to the end of the measured work (for an input: until its state is saved, which waits for the spool's fsync). */
  seconds: number;
  peak_rss_mb: number;
  sampled_peak_rss_mb: number;
  [k: string]: unknown;
}

function vmHwmBytes(): number | undefined {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB$/m.exec(readFileSync("/proc/self/status", "utf8"));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

const mb = (n: number) => Math.round((n / 1048576) * 10) / 10;

/** CPU seconds (user + system, all threads) of this process so far: less disturbed by other load than wall time. */
function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Samples RSS while `fn` runs (between its awaits), and the process's peak after. */
async function measured(stage: string, fn: () => Promise<Record<string, unknown>>): Promise<ChildResult> {
  let sampled = process.memoryUsage().rss;
  const timer = setInterval(() => (sampled = Math.max(sampled, process.memoryUsage().rss)), 10);
  const t0 = performance.now();
  const cpu0 = cpuSeconds();
  const extra = await fn();
  const seconds = (performance.now() - t0) / 1000;
  const cpu = cpuSeconds() - cpu0;
  clearInterval(timer);
  sampled = Math.max(sampled, process.memoryUsage().rss);
  const hwm = vmHwmBytes();
  return {
    stage, runtime, seconds: round3(seconds), cpu_seconds: round3(cpu),
    peak_rss_mb: mb(hwm ?? sampled), sampled_peak_rss_mb: mb(sampled), ...extra,
  };
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

async function childInput(url: string, dir: string, stage: string): Promise<ChildResult> {
  const { Spool } = await import("../../agent/spool/index.ts");
  const { StateStore } = await import("../../agent/state.ts");
  const { createInputContext } = await import("../../agent/context.ts");
  const { silentLogger } = await import("../../agent/log.ts");
  const { default: plugin } = await import("../../plugins/phishtank/index.ts");
  const spool = await Spool.open({ dir: join(dir, "spool"), maxBytes: 4 * 2 ** 30, whenFull: "block", fsync: 1000, log: silentLogger });
  const before = spool.stats().events;
  const ac = new AbortController();
  const ctx = createInputContext({
    name: "phishtank", spool, state: new StateStore(join(dir, "state")), route: "phishtank",
    log: silentLogger, signal: ac.signal, hostname: "bench",
  });
  const opts = plugin.options.parse({ url, username: "bench", interval: "1h" });
  let running: Promise<void> | undefined;
  const result = await measured(stage, async () => {
    const t0 = performance.now();
    const cpu0 = cpuSeconds();
    running = plugin.create(opts, ctx).run();
    // The poll is over when runPolls records its outcome; then wait for the state to be saved.
    for (;;) {
      const status = ctx.counters.detail.last_status;
      if (typeof status === "string" && (ctx.counters.detail.last_success || ctx.counters.detail.consecutive_failures)) break;
      await new Promise((r) => setTimeout(r, 2));
    }
    const pollSeconds = round3((performance.now() - t0) / 1000);
    const pollCpu = round3(cpuSeconds() - cpu0);
    await ctx.settled();
    return { poll_seconds: pollSeconds, poll_cpu_seconds: pollCpu, status: ctx.counters.detail.last_status, posted: spool.stats().events - before };
  });
  ac.abort();
  await running;
  await spool.close();
  return result;
}

async function childDecompress(file: string): Promise<ChildResult> {
  const { decompressFile } = await import("../../plugins/common/decompress.ts");
  return measured("decompress", async () => {
    const { body } = await decompressFile(file);
    let bytes = 0;
    const reader = body.getReader();
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      bytes += r.value.byteLength;
    }
    return { decompressed_mb: mb(bytes) };
  });
}

async function childParse(file: string): Promise<ChildResult> {
  const { jsonArrayBatches } = await import("../../plugins/common/jsonstream.ts");
  return measured("parse", async () => {
    const body = Readable.toWeb(createReadStream(file, { highWaterMark: 256 * 1024 })) as unknown as ReadableStream<Uint8Array>;
    let records = 0;
    for await (const batch of jsonArrayBatches(body, { batchSize: 1000 })) records += batch.length;
    return { records };
  });
}

// ---- the parent ----------------------------------------------------------------------------------

function runChild(args: string[]): Promise<ChildResult> {
  const script = new URL(import.meta.url).pathname;
  const cmd = runtime === "deno" ? ["run", "-A", "--no-check", script, "--child", ...args] : [script, "--child", ...args];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, cmd, { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    child.on("exit", (code) => {
      const line = out.trim().split("\n").pop() ?? "";
      if (code !== 0) return reject(new Error(`child ${args.join(" ")} exited with ${code}: ${out.slice(-500)}`));
      try {
        resolve(JSON.parse(line) as ChildResult);
      } catch {
        reject(new Error(`child ${args.join(" ")} printed no result: ${out.slice(-500)}`));
      }
    });
  });
}

interface Served {
  file: string;
  etag: boolean;
}

function serve(current: () => Served): Promise<{ server: Server; base: string }> {
  const server = createServer((req, res) => {
    const { file, etag: withEtag } = current();
    const st = statSync(file);
    const etag = `"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
    if (withEtag && req.headers["if-none-match"] === etag) {
      res.writeHead(304, { etag });
      res.end();
      return;
    }
    const headers: Record<string, string> = { "content-type": "application/octet-stream", "content-length": String(st.size) };
    if (withEtag) headers.etag = etag;
    res.writeHead(200, headers);
    createReadStream(file, { highWaterMark: 256 * 1024 }).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as { port: number }).port;
    resolve({ server, base: `http://127.0.0.1:${port}` });
  }));
}

async function parent(): Promise<void> {
  const n = Number(arg("records", "100000"));
  const fraction = Number(arg("changed", "0.01"));
  const dir = mkdtempSync(join(tmpdir(), "phishtank-bench-"));
  try {
    const t0 = performance.now();
    const { first, second, changed, added } = generate(n, fraction);
    const a = join(dir, "a.json");
    const b = join(dir, "b.json");
    await writeDump(a, first);
    await writeDump(b, second);
    for (const f of [a, b]) execFileSync("/usr/bin/bzip2", ["-k", "-f", "-9", f]);
    console.log(JSON.stringify({
      bench: "phishtank", runtime, records: n, dump_mb: mb(statSync(a).size), bz2_mb: mb(statSync(`${a}.bz2`).size),
      changed_in_place: changed, replaced: added, setup_seconds: Math.round(performance.now() - t0) / 1000,
    }));

    let served: Served = { file: `${a}.bz2`, etag: true };
    const { server, base } = await serve(() => served);
    const url = `${base}/data/online-valid.json.bz2`;
    const results: Record<string, ChildResult> = {};
    const report = (r: ChildResult) => {
      results[r.stage] = r;
      console.log(JSON.stringify(r));
    };
    try {
      const state = join(dir, "input");
      report(await runChild(["input", url, state, "first_poll"]));
      served = { file: `${b}.bz2`, etag: true };
      report(await runChild(["input", url, state, "repoll_changed"]));
      served = { file: `${b}.bz2`, etag: false };
      report(await runChild(["input", url, state, "repoll_same"]));
      report(await runChild(["decompress", `${a}.bz2`]));
      report(await runChild(["parse", a]));
      served = { file: a, etag: true };
      report(await runChild(["input", `${base}/data/online-valid.json`, join(dir, "plain"), "plain_poll"]));
    } finally {
      server.close();
    }
    const first_ = results.first_poll!, plain = results.plain_poll!, parse = results.parse!, dec = results.decompress!;
    console.log(JSON.stringify({
      summary: "phishtank",
      runtime,
      first_poll_s: first_.poll_seconds,
      first_poll_cpu_s: first_.poll_cpu_seconds,
      first_poll_peak_rss_mb: first_.peak_rss_mb,
      repoll_changed_s: results.repoll_changed!.poll_seconds,
      repoll_changed_posted: results.repoll_changed!.posted,
      repoll_same_s: results.repoll_same!.poll_seconds,
      decompress_s: dec.seconds,
      decompress_cpu_s: dec.cpu_seconds,
      parse_s: parse.seconds,
      parse_cpu_s: parse.cpu_seconds,
      diff_spool_s_est: round3((plain.poll_seconds as number) - parse.seconds),
      diff_spool_cpu_s_est: round3((plain.poll_cpu_seconds as number) - (parse.cpu_seconds as number)),
      target: "first poll < 3 s and < 300 MB",
      met: (first_.poll_seconds as number) < 3 && first_.peak_rss_mb < 300,
    }));
  } finally {
    if (!flag("keep")) rmSync(dir, { recursive: true, force: true });
    else console.error(`kept ${dir}`);
  }
}

async function child(): Promise<void> {
  const i = process.argv.indexOf("--child");
  const [mode, a, b, c] = process.argv.slice(i + 1);
  let r: ChildResult;
  if (mode === "input") r = await childInput(a!, b!, c!);
  else if (mode === "decompress") r = await childDecompress(a!);
  else if (mode === "parse") r = await childParse(a!);
  else throw new Error(`unknown child mode ${mode}`);
  console.log(JSON.stringify(r));
  process.exit(0);
}

if (flag("child")) await child();
else await parent();
