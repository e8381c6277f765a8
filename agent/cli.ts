// The cybexp-agent command line. Talks to a running daemon through <data_dir>/runningconfig.
import { spawn } from "node:child_process";
import { openSync, closeSync, readFileSync, readSync, renameSync, statSync, writeFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Agent, AlreadyRunningError } from "./agent.ts";
import type { InputPlugins } from "./plugin.ts";
import { ConfigError, defaultConfigPath, describeResolvedPaths, loadConfig, type AgentConfig } from "./config.ts";
import { errorMessage } from "./errortext.ts";
import { bunGlobal, denoGlobal, isBun } from "./runtime/detect.ts";
import { createLogger, RotatingFileSink, stderrSink, type RootLogger } from "./log.ts";
import { isAlive, readRunningConfig, type RunningConfig } from "./runningconfig.ts";
import { callDaemon, CliError, EXIT, loadConfigForClient, requireDaemon, type DaemonTarget } from "./commands/client.ts";
import { formatStatus, plural, type StatusJson } from "./commands/format.ts";
import { consoleCommand } from "./commands/console.ts";
import { tapCommand } from "./commands/tap.ts";
import { testCommand } from "./commands/test.ts";
import { topCommand } from "./commands/top.ts";
import { parseDuration } from "./units.ts";
import { ServiceSignals } from "./signals.ts";
import { VERSION } from "./version.ts";


const COMMANDS: Record<string, { usage: string; help: string }> = {
  run: {
    usage: "run [--log-file FILE]",
    help: "Run the agent in the foreground until SIGINT/SIGTERM (graceful: flush, save state). SIGHUP reloads the config file, SIGUSR1 reopens the log file. Logs go to stderr, or with --log-file to FILE, rotated at agent.log_max_bytes keeping agent.log_keep files.",
  },
  start: {
    usage: "start [INPUT...]",
    help: "No daemon running: start one in the background (its log in <data_dir>/agent.log) and return once it answers. With names: start those inputs in the running daemon.",
  },
  stop: { usage: "stop [INPUT...]", help: "No names: stop the daemon gracefully. With names: stop those inputs." },
  restart: { usage: "restart [INPUT...]", help: "No names: restart the daemon. With names: restart those inputs." },
  status: { usage: "status [--json]", help: "Show the daemon, every input, the output and the spool. Exit 3 if no daemon runs." },
  reload: {
    usage: "reload",
    help: "Re-read the config file and apply the difference (as SIGHUP to the daemon does). An invalid file is rejected with its errors and the running configuration stays.",
  },
  validate: { usage: "validate", help: "Check the config file: exit 0, or 1 with every error (TOML line, key path)." },
  post: {
    usage: "post --input NAME [--content-type TYPE] [FILE|-]",
    help: "Submit threat data by hand (JSON, NDJSON or text) to a manual input. Reads standard input when FILE is - or missing.",
  },
  init: {
    usage: "init [FILE]",
    help: "Write a commented starter config to FILE (default ./agent.config.toml), with data_dir ./data next to it. Never overwrites: an existing FILE is an error (exit 1).",
  },
  version: { usage: "version", help: "Print the version." },
  tap: {
    usage: "tap [INPUT...] [--limit N]",
    help: "Print the events inputs hand to the spool, as they come, one JSON object a line ({\"input\", \"event\", \"ts\"}); all inputs when none is named. At most 100 events a second are shown, the rest counted in notices on stderr. Ends after N events with --limit, or on Ctrl-C. Exit 3 if no daemon runs.",
  },
  top: {
    usage: "top",
    help: "A live view of the running daemon, refreshed every second: each input's state, events/s, bytes/s and errors; the output; the spool. q or Ctrl-C quits. When standard output is not a terminal, one plain line a second. Exit 3 if no daemon runs.",
  },
  test: {
    usage: "test [INPUT...] [--duration D]",
    help: "Run the named inputs (default: every enabled input) on a throwaway data directory and print each upload that would be sent (a header line, then its events). Sends nothing, and leaves data_dir as it was: no checkpoint or seen-set moves. Polling inputs poll once, files are read to their current end, listeners listen for D (default 10s).",
  },
  console: {
    usage: "console",
    help: "Print a one-time login URL for the web console of the running daemon (valid for 2 minutes, for one login) as the last line. Exit 3 if no daemon runs.",
  },
};

/** `text` folded at word boundaries to lines of at most `width` characters after `indent`. */
export function wrap(text: string, indent: string, width = 78): string {
  const out: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line && indent.length + line.length + 1 + word.length > width) {
      out.push(indent + line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) out.push(indent + line);
  return out.join("\n");
}

const COMMON_OPTIONS = [
  "  -c, --config FILE   config file (default $CYBEXP_AGENT_CONFIG, else ./agent.config.toml)",
  "      --debug         print stack traces of errors",
];

function mainHelp(): string {
  const lines = [
    `cybexp-agent ${VERSION}: collects threat data and forwards it to the Cybex-P API`,
    "",
    "Usage: cybexp-agent COMMAND [options]",
    "",
    "Commands:",
    ...Object.values(COMMANDS).flatMap((c) => [`  ${c.usage}`, wrap(c.help, "      ")]),
    "",
    "Options for every command:",
    ...COMMON_OPTIONS,
    "  -h, --help          help for a command",
    "",
    "Exit codes: 0 ok, 1 error, 2 usage, 3 no daemon running.",
  ];
  return lines.join("\n");
}

function commandHelp(cmd: string): string {
  const c = COMMANDS[cmd]!;
  // init writes a file of its own naming; it reads no config
  const options = cmd === "init" ? COMMON_OPTIONS.slice(1) : COMMON_OPTIONS;
  return [`Usage: cybexp-agent ${c.usage}${cmd === "init" ? "" : " [-c FILE]"}`, "", wrap(c.help, ""), "", "Options:", ...options, "  -h, --help          this help"].join("\n");
}

export interface Parsed {
  command: string;
  /** The input types this executable knows, handed in by main.ts. */
  plugins: InputPlugins;
  configPath: string;
  positionals: string[];
  json: boolean;
  input?: string;
  contentType?: string;
  logFile?: string;
  debug: boolean;
  /** tap --limit */
  limit?: number;
  /** test --duration, in ms */
  durationMs?: number;
}

function parse(argv: string[], plugins: InputPlugins): Parsed | number {
  const command = argv[0];
  if (!command || command === "-h" || command === "--help" || command === "help") {
    console.log(mainHelp());
    return command ? EXIT.ok : EXIT.usage;
  }
  if (command === "--version" || command === "-V") return parse(["version"], plugins);
  if (!COMMANDS[command]) {
    console.error(`cybexp-agent: unknown command "${command}" (try --help)`);
    return EXIT.usage;
  }
  let values: Record<string, string | boolean | undefined>, positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv.slice(1),
      allowPositionals: true,
      options: {
        config: { type: "string", short: "c" },
        help: { type: "boolean", short: "h" },
        debug: { type: "boolean" },
        json: { type: "boolean" },
        input: { type: "string", short: "i" },
        "content-type": { type: "string" },
        "log-file": { type: "string" },
        limit: { type: "string" },
        duration: { type: "string" },
      },
    }));
  } catch (err) {
    console.error(`cybexp-agent ${command}: ${errorMessage(err)} (try cybexp-agent ${command} --help)`);
    return EXIT.usage;
  }
  if (values.help) {
    console.log(commandHelp(command));
    return EXIT.ok;
  }
  const usageError = (msg: string) => {
    console.error(`cybexp-agent ${command}: ${msg}\nUsage: cybexp-agent ${COMMANDS[command]!.usage}`);
    return EXIT.usage;
  };
  const takesNames = ["start", "stop", "restart", "tap", "test"].includes(command);
  if (values.json && command !== "status") return usageError("--json goes with status");
  if ((values.input || values["content-type"]) && command !== "post") return usageError("--input goes with post");
  if (values["log-file"] && command !== "run") return usageError("--log-file goes with run");
  if (values.limit !== undefined && command !== "tap") return usageError("--limit goes with tap");
  if (values.duration !== undefined && command !== "test") return usageError("--duration goes with test");
  let limit: number | undefined;
  if (values.limit !== undefined) {
    limit = Number(values.limit);
    if (!/^\d+$/.test(String(values.limit)) || limit < 1) return usageError(`--limit takes a whole number of events above 0, not "${values.limit}"`);
  }
  let durationMs: number | undefined;
  if (values.duration !== undefined) {
    durationMs = parseDuration(String(values.duration));
    if (durationMs === undefined) return usageError(`--duration takes a duration like "500ms", "10s" or "2m", not "${values.duration}"`);
  }
  if (command === "post") {
    if (!values.input) return usageError("--input NAME is required");
    if (positionals.length > 1) return usageError("one FILE at most");
  } else if (command === "init") {
    if (positionals.length > 1) return usageError("one FILE at most");
  } else if (!takesNames && positionals.length) return usageError(`unexpected argument "${positionals[0]}"`);
  return {
    command,
    plugins,
    configPath: resolve((values.config as string | undefined) ?? defaultConfigPath()),
    positionals,
    json: !!values.json,
    input: values.input as string | undefined,
    contentType: values["content-type"] as string | undefined,
    logFile: values["log-file"] === undefined ? undefined : resolve(values["log-file"] as string),
    debug: !!values.debug,
    limit,
    durationMs,
  };
}

/** Runs one command line; `plugins` are the input types the executable was built with. */
export async function main(argv: string[], plugins: InputPlugins): Promise<number> {
  const p = parse(argv, plugins);
  if (typeof p === "number") return p;
  try {
    return await COMMAND_IMPL[p.command]!(p);
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const line of err.problems) console.error(line);
      return EXIT.error;
    }
    if (err instanceof CliError) {
      console.error(`cybexp-agent ${p.command}: ${err.message}`);
      return err.code;
    }
    console.error(`cybexp-agent ${p.command}: ${errorMessage(err)}`);
    if (p.debug && err instanceof Error && err.stack) console.error(err.stack);
    return EXIT.error;
  }
}

const COMMAND_IMPL: Record<string, (p: Parsed) => Promise<number>> = {
  tap: tapCommand,
  top: topCommand,
  test: testCommand,
  console: consoleCommand,

  version: async () => {
    console.log(`cybexp-agent ${VERSION}`);
    return EXIT.ok;
  },

  validate: async (p) => {
    const config = await loadConfig(p.configPath, p.plugins);
    const inputs = [...config.inputs.values()];
    const enabled = inputs.filter((i) => i.enabled).length;
    console.log(`${p.configPath}: OK (${plural(inputs.length, "input")}, ${enabled} enabled: ${inputs.map((i) => `${i.key} [${i.type}]`).join(", ") || "none"})`);
    for (const line of describeResolvedPaths(config)) console.log(`  ${line}`);
    return EXIT.ok;
  },

  run: async (p) => {
    // Signals are taken from here on: one that arrives while the agent starts waits for it.
    let log: RootLogger = createLogger("info");
    let logFile: RotatingFileSink | undefined;
    const signals = new ServiceSignals({ log: () => log, reopenLog: () => (logFile ? (logFile.reopen(), true) : false) });
    signals.install();
    const config = await loadConfig(p.configPath, p.plugins);
    if (p.logFile) logFile = new RotatingFileSink(p.logFile, { maxBytes: config.agent.logMaxBytes, keep: config.agent.logKeep });
    log = createLogger(config.agent.logLevel, logFile ?? stderrSink, config.agent.logFormat);
    log.debug("agent starting", { pid: process.pid, config: p.configPath });
    let agent: Agent;
    try {
      agent = await Agent.start({ configPath: p.configPath, plugins: p.plugins, log });
    } catch (err) {
      if (err instanceof AlreadyRunningError) throw new CliError(err.message);
      throw err;
    }
    signals.attach(agent);
    await agent.done;
    logFile?.end();
    return EXIT.ok;
  },

  start: async (p) => {
    const config = await loadConfig(p.configPath, p.plugins);
    if (p.positionals.length) return inputAction(config, "start", p.positionals);
    const running = await readRunningConfig(config.agent.dataDir);
    if (running) throw new CliError(new AlreadyRunningError(config.agent.dataDir, running.pid).message);
    const rc = await startDaemon(config);
    console.log(`cybexp-agent started (pid ${rc.pid}, control ${rc.url}, log ${join(config.agent.dataDir, "agent.log")})`);
    return EXIT.ok;
  },

  stop: async (p) => {
    const config = await loadConfigForClient(p.configPath, p.plugins);
    if (p.positionals.length) return inputAction(config, "stop", p.positionals);
    const rc = await requireDaemon(config);
    await stopDaemon(rc);
    console.log(`cybexp-agent stopped (pid ${rc.pid})`);
    return EXIT.ok;
  },

  restart: async (p) => {
    const config = await loadConfigForClient(p.configPath, p.plugins);
    if (p.positionals.length) return inputAction(config, "restart", p.positionals);
    // Check the new config before stopping the running daemon.
    const fresh = await loadConfig(p.configPath, p.plugins);
    const rc = await readRunningConfig(config.agent.dataDir);
    if (rc) await stopDaemon(rc);
    const started = await startDaemon(fresh);
    console.log(`cybexp-agent restarted (pid ${started.pid}, control ${started.url})`);
    return EXIT.ok;
  },

  status: async (p) => {
    const config = await loadConfigForClient(p.configPath, p.plugins);
    const rc = await requireDaemon(config);
    const status = (await callDaemon(rc, "GET", "/status")).body as StatusJson;
    console.log(p.json ? JSON.stringify(status, null, 2) : formatStatus(status, rc));
    return EXIT.ok;
  },

  reload: async (p) => {
    const config = await loadConfigForClient(p.configPath, p.plugins);
    const rc = await requireDaemon(config);
    const res = await callDaemon(rc, "POST", "/reload", undefined, true);
    const body = res.body as { problems?: string[]; started?: string[]; stopped?: string[]; restarted?: string[]; unchanged?: string[]; error?: string };
    if (res.status === 400 && body.problems) {
      for (const line of body.problems) console.error(line);
      console.error("cybexp-agent reload: the configuration was not changed");
      return EXIT.error;
    }
    if (res.status !== 200) throw new CliError(body.error ?? `HTTP ${res.status}`);
    const list = (xs?: string[]) => (xs?.length ? xs.join(", ") : "none");
    console.log(`reloaded: started ${list(body.started)}; restarted ${list(body.restarted)}; stopped ${list(body.stopped)}; unchanged ${list(body.unchanged)}`);
    return EXIT.ok;
  },

  post: async (p) => {
    const config = await loadConfigForClient(p.configPath, p.plugins);
    const rc = await requireDaemon(config);
    const file = p.positionals[0] ?? "-";
    let body: Uint8Array;
    try {
      body = file === "-" ? await readStdin() : readFileSync(file);
    } catch (err) {
      throw new CliError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`);
    }
    const contentType = p.contentType ?? contentTypeFor(file);
    const res = await callDaemon(rc, "POST", `/inputs/${encodeURIComponent(p.input!)}/events`, body, true, contentType);
    const answer = res.body as { accepted?: number; error?: string };
    if (res.status !== 202) throw new CliError(answer.error ?? `HTTP ${res.status}`);
    console.log(`accepted ${plural(answer.accepted ?? 0, "event")} into input ${p.input}`);
    return EXIT.ok;
  },

  init: async (p) => {
    const file = resolve(p.positionals[0] ?? "agent.config.toml");
    const text = starterForInit(await starterConfig());
    try {
      writeFileSync(file, text, { flag: "wx", mode: 0o600 });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "EEXIST") throw new CliError(`${file} exists; not overwritten (remove it or name another FILE)`);
      throw new CliError(`cannot write ${file}: ${code ?? errorMessage(err)}`);
    }
    console.log(`wrote ${file}: set CYBEXP_API_TOKEN (and api.url, api.orgid), then: cybexp-agent validate -c ${file}`);
    return EXIT.ok;
  },
};

/** The commented starter config: packaging/agent.config.toml, which the .deb installs as
 *  /etc/cybexp-agent/agent.config.toml; the compiled executable carries it inside. */
export async function starterConfig(): Promise<string> {
  if (isBun()) return (await import("../packaging/agent.config.toml", { with: { type: "text" } })).default as unknown as string;
  // Deno imports text only behind an unstable flag; the source tree has the file beside it
  return readFileSync(fileURLToPath(new URL("../packaging/agent.config.toml", import.meta.url)), "utf8");
}

/** The packaged file keeps its state in /var/lib/cybexp-agent; a config written by `init` keeps
 *  it in ./data beside itself, so that it works for any user in any folder. */
export function starterForInit(packaged: string): string {
  const packagedDir = '"/var/lib/cybexp-agent"', initDir = '"./data"';
  const out = packaged.replace(new RegExp(`^(data_dir\\s*= )${packagedDir}( *)`, "m"), (_, key: string, pad: string) => key + initDir + pad + " ".repeat(packagedDir.length - initDir.length));
  if (out === packaged) throw new Error("the starter config has no data_dir line to set");
  return out;
}

async function inputAction(config: DaemonTarget, action: string, names: string[]): Promise<number> {
  const rc = await requireDaemon(config);
  let failed = 0;
  for (const name of names) {
    const res = await callDaemon(rc, "POST", `/inputs/${encodeURIComponent(name)}/${action}`, undefined, true);
    if (res.status === 200) console.log(`${action}: ${name}`);
    else {
      failed++;
      console.error(`cybexp-agent ${action}: ${(res.body as { error?: string }).error ?? `HTTP ${res.status}`}`);
    }
  }
  return failed ? EXIT.error : EXIT.ok;
}

/** How to run this same program again: compiled binary, Bun on the source, or Deno on the source. */
export function selfCommand(args: string[]): { cmd: string; args: string[] } {
  const deno = denoGlobal();
  const main = fileURLToPath(new URL("./main.ts", import.meta.url));
  if (deno) return { cmd: deno.execPath(), args: ["run", "-A", main, ...args] };
  const bunMain = bunGlobal()?.main ?? "";
  if (bunMain.startsWith("/$bunfs/") || import.meta.url.includes("$bunfs")) return { cmd: process.execPath, args };
  return { cmd: process.execPath, args: [main, ...args] };
}

async function startDaemon(config: AgentConfig): Promise<RunningConfig> {
  const dataDir = config.agent.dataDir;
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  // The daemon writes agent.log itself (so that it can rotate it); what the runtime prints on
  // its own (a crash, a panic, an error before the log is open) goes to agent.out.
  const logPath = join(dataDir, "agent.log");
  const outPath = join(dataDir, "agent.out");
  if (safeSize(outPath) > config.agent.logMaxBytes) {
    try {
      renameSync(outPath, `${outPath}.1`);
    } catch {}
  }
  const outFd = openSync(outPath, "a", 0o600);
  const logStart = safeSize(logPath);
  const outStart = safeSize(outPath);
  const { cmd, args } = selfCommand(["run", "-c", config.file, "--log-file", logPath]);
  const child = spawn(cmd, args, {
    detached: true,
    stdio: ["ignore", outFd, outFd],
    env: { ...process.env, CYBEXP_AGENT_CONFIG: config.file },
  });
  closeSync(outFd);
  let exited: number | null | undefined;
  child.on("exit", (code) => (exited = code));
  child.on("error", () => (exited = -1));
  child.unref();
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    if (exited !== undefined) break;
    const rc = await readRunningConfig(dataDir);
    if (rc && rc.pid === child.pid) {
      try {
        const res = await fetch(`${rc.url}/health`, { signal: AbortSignal.timeout(2000) });
        await res.body?.cancel();
        return rc;
      } catch {
        // not answering yet
      }
    }
  }
  const said = `${logSince(logPath, logStart)}\n${logSince(outPath, outStart)}`;
  // Started at the same time as another daemon on this data_dir, which won the lock.
  const lost = AlreadyRunningError.pattern.exec(said);
  if (exited !== undefined && lost) throw new CliError(lost[0]);
  const reason = logErrors(said);
  if (exited === undefined) {
    try {
      process.kill(child.pid!, "SIGTERM");
    } catch {}
    throw new CliError(`the daemon did not answer within 20 s${reason ? `: ${reason}` : ""} (see ${logPath} and ${outPath})`);
  }
  throw new CliError(`the daemon exited during start-up${reason ? `: ${reason}` : ""} (see ${logPath} and ${outPath})`);
}

function safeSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/** What the log got since byte `from` (the last 64 KiB of it at most). */
function logSince(path: string, from: number): string {
  let fd: number | undefined;
  try {
    fd = openSync(path, "r");
    const end = statSync(path).size;
    const start = Math.max(from, end - 65536);
    const buf = Buffer.alloc(Math.max(0, end - start));
    const n = readSync(fd, buf, 0, buf.length, start);
    return buf.subarray(0, n).toString("utf8");
  } catch {
    return "";
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** The error lines among what the daemon said (JSON or text log records, or plain lines), as one line. */
function logErrors(said: string): string {
  const msgs = said
    .split("\n")
    .filter(Boolean)
    .map((l) => {
      try {
        const j = JSON.parse(l);
        return j.level === "error" ? j.msg + (j.error ? `: ${j.error}` : "") : "";
      } catch {
        if (/^\S+ (DEBUG|INFO|WARN) /.test(l)) return "";
        return l.replace(/^\S+ ERROR /, "").replace(/^cybexp-agent run: /, "");
      }
    })
    .filter(Boolean);
  return msgs.slice(-5).join("; ");
}

async function stopDaemon(rc: RunningConfig): Promise<void> {
  await callDaemon(rc, "POST", "/shutdown");
  const deadline = Date.now() + 15_000;
  while (isAlive(rc.pid)) {
    if (Date.now() > deadline) throw new CliError(`the daemon (pid ${rc.pid}) did not stop within 15 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function readStdin(): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function contentTypeFor(file: string): string | undefined {
  if (/\.json$/i.test(file)) return "application/json";
  if (/\.(ndjson|jsonl)$/i.test(file)) return "application/x-ndjson";
  if (/\.(txt|log)$/i.test(file)) return "text/plain";
  return undefined;
}
