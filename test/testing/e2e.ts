// What the end-to-end tests share: the compiled executable run as its own process in a folder
// of its own, the reference receiver, and what arrived there per input compared with what was
// sent. Not a test file itself (no ".test." in the name), so neither runner collects it.
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { startReceiver, type Receiver } from "../../scripts/receiver.ts";
import { until } from "./until.ts";

export const BINARY = process.env.CYBEXP_E2E_BINARY ? resolve(process.env.CYBEXP_E2E_BINARY) : "";
/** For describe(..., { skip }): the reason when no executable is named, else false. */
export const skip: string | false = BINARY ? false : "set CYBEXP_E2E_BINARY to the compiled executable (npm run test:e2e)";
export const TOKEN = "e2e-token";

export const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The strict reference receiver on a free loopback port, keeping what it accepts for Arrivals. */
export function referenceReceiver(): Promise<Receiver> {
  return startReceiver({ port: 0, hostname: "127.0.0.1", token: TOKEN, keepFiles: true });
}

// ---- the agent as a process -----------------------------------------------------------------

/** An agent config posting to `receiverUrl`, control on a free loopback port, short batch and
 *  fsync waits so that tests see their events quickly; `inputs` follows as it is. */
export function configText(receiverUrl: string, inputs: string, api: { timezone?: string } = {}): string {
  return `[agent]
data_dir = "./data"
[control]
listen = "127.0.0.1:0"
[api]
url = "${receiverUrl}"
token = "${TOKEN}"
orgid = "org-e2e"
${api.timezone ? `timezone = "${api.timezone}"\n` : ""}[api.batch]
max_wait = "200ms"
[spool]
fsync = "100ms"
${inputs}`;
}

/** A fresh folder under the temp dir holding the executable alone, and its config when given. */
export function agentFolder(config?: string): string {
  const dir = mkdtempSync(join(tmpdir(), "e2e-"));
  copyFileSync(BINARY, join(dir, "cybexp-agent"));
  chmodSync(join(dir, "cybexp-agent"), 0o755);
  if (config !== undefined) writeFileSync(join(dir, "agent.config.toml"), config);
  return dir;
}

/** What a CLI command of the folder's executable did. */
export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `cybexp-agent ARGS` in `cwd` (the folder holding the executable), with only PATH set. */
export function cli(cwd: string, args: string[], input?: string): Promise<Ran> {
  return new Promise((res) => {
    const child = execFile(join(cwd, "cybexp-agent"), args, { cwd, env: { PATH: "/usr/bin:/bin" }, timeout: 60_000 }, (err, stdout, stderr) => {
      res({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
    if (input !== undefined) child.stdin!.end(input);
  });
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export interface InputStatus {
  name: string;
  state: string;
  events: number;
  errors: number;
  last_error: string | null;
  last_poll?: string | null;
  [detail: string]: unknown;
}

export interface RunningAgent {
  dir: string;
  child: ChildProcess;
  /** The control server, from the runningconfig. */
  url: string;
  token: string;
  /** The last few KB of the agent's log (stderr), for failure messages. */
  log(): string;
  running(): boolean;
  status(): Promise<{ inputs: InputStatus[] }>;
  input(name: string): Promise<InputStatus>;
  /** SIGTERM (SIGKILL after 10 s); resolves to how it ended: "exit 0", "signal SIGKILL", ... */
  stop(): Promise<string>;
}

export interface StartOptions {
  /** The program and its arguments; by default the folder's executable in the foreground (`run`). */
  command?: string[];
  /** By default only PATH, as a service manager would start it. */
  env?: NodeJS.ProcessEnv;
}

/** Runs the agent in `dir` and waits for its runningconfig; a second run finds the first one's
 *  data_dir. The folder stays when it stops. */
export async function startAgent(dir: string, opts: StartOptions = {}): Promise<RunningAgent> {
  const [program, ...args] = opts.command ?? [join(dir, "cybexp-agent"), "run", "-c", "agent.config.toml"];
  const child: ChildProcess = spawn(program!, args, {
    cwd: dir,
    env: opts.env ?? { PATH: "/usr/bin:/bin" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (b: Buffer) => {
    stderr = (stderr + b.toString("utf8")).slice(-8000);
  });
  const exited = new Promise<string>((r) => child.once("exit", (code, signal) => r(signal ? `signal ${signal}` : `exit ${code}`)));
  const running = () => child.exitCode === null && child.signalCode === null;
  const stop = async () => {
    if (running()) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      const how = await exited;
      clearTimeout(timer);
      return how;
    }
    return await exited;
  };
  try {
    const rcPath = join(dir, "data", "runningconfig");
    let rc: { pid: number; url: string; token: string } | undefined;
    await until(() => {
      if (!running()) assert.fail(`the agent exited during start-up: ${stderr}`);
      if (!existsSync(rcPath)) return false;
      try {
        rc = JSON.parse(readFileSync(rcPath, "utf8"));
      } catch {
        return false; // being written
      }
      return rc?.pid === child.pid;
    }, "the agent's runningconfig", 30_000);
    const { url, token } = rc!;
    const status = async () => {
      const res = await fetch(`${url}/status`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(res.status, 200, "GET /status");
      return (await res.json()) as { inputs: InputStatus[] };
    };
    return {
      dir, child, url, token, running, stop, status,
      log: () => stderr,
      async input(name) {
        const s = (await status()).inputs.find((i) => i.name === name);
        assert.ok(s, `input ${name} in /status`);
        return s;
      },
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** An agent in a fresh folder of its own (prepared by `prepare` before it starts), with `inputs`
 *  in its config; stop() also removes the folder. */
export async function runAgent(receiver: Receiver, inputs: string, prepare?: (dir: string) => void): Promise<RunningAgent> {
  const dir = agentFolder(configText(receiver.url, inputs));
  const remove = () => rmSync(dir, { recursive: true, force: true });
  let agent: RunningAgent;
  try {
    prepare?.(dir);
    agent = await startAgent(dir);
  } catch (err) {
    remove();
    throw err;
  }
  return {
    ...agent,
    async stop() {
      const how = await agent.stop();
      remove();
      return how;
    },
  };
}

/** Stops the agent and checks that it went the graceful way: its own "agent stopped" and the
 *  runningconfig removed (the exit status is not used: Deno's child_process reports the signal
 *  it sent even when the process exits 0). */
export async function stopGracefully(agent: RunningAgent): Promise<void> {
  const how = await agent.stop();
  const graceful = how !== "signal SIGKILL" && /"msg":"agent stopped"/.test(agent.log()) && !existsSync(join(agent.dir, "data", "runningconfig"));
  assert.ok(graceful, `a graceful stop on SIGTERM (${how}): ${agent.log().slice(-1500)}`);
}

// ---- what arrives -----------------------------------------------------------------------------

/** The lines of every accepted upload of one input, decoded once per upload as they arrive.
 *  Make one after anything that empties receiver.uploads. */
export class Arrivals {
  private readonly decoded: string[] = [];
  private seen = 0;
  constructor(private readonly receiver: Receiver, readonly name: string) {}

  /** Lines received so far (cheap: the receiver counts them). */
  count(): number {
    let n = 0;
    for (const u of this.receiver.uploads) if (u.name === this.name) n += u.lines;
    return n;
  }

  /** In the order the uploads were accepted. */
  async lines(): Promise<string[]> {
    while (this.seen < this.receiver.uploads.length) {
      const u = this.receiver.uploads[this.seen++]!;
      if (u.name !== this.name) continue;
      const text = new TextDecoder().decode(await this.receiver.file(u.seq));
      for (const l of text.split("\n").slice(0, -1)) this.decoded.push(l);
    }
    return this.decoded;
  }

  /** The lines that arrived after the first `from`. */
  async since(from: number): Promise<string[]> {
    return (await this.lines()).slice(from);
  }

  /** [typetag, filename] of every upload of this input, once each. */
  kinds(): string[][] {
    const seen = new Set<string>();
    for (const u of this.receiver.uploads) if (u.name === this.name) seen.add(JSON.stringify([u.typetag, u.filename]));
    return [...seen].map((s) => JSON.parse(s));
  }
}

/** Waits until each input got at least its count of lines, or `ms` passed (calling `check`
 *  meanwhile, which may fail the test), then a little longer so that duplicates arriving just
 *  behind the last line are seen too. Does not fail on a timeout, so that the caller can say
 *  which lines are missing; resolves to what is still short ("" when nothing is). */
export async function settle(wanted: Array<[Arrivals, number]>, opts: { ms?: number; check?: () => void } = {}): Promise<string> {
  const end = Date.now() + (opts.ms ?? 30_000);
  while (wanted.some(([a, n]) => a.count() < n) && Date.now() < end) {
    opts.check?.();
    await pause(20);
  }
  await pause(700);
  return wanted.filter(([a, n]) => a.count() < n).map(([a, n]) => `${a.name} has ${a.count()} of ${n} lines`).join(", ");
}

/** settle(), failing as `what` (worked out at the failure, so it can tell what happened meanwhile) when an input is still short. */
export async function settleOrFail(wanted: Array<[Arrivals, number]>, what: string | (() => string), check?: () => void, ms = 30_000): Promise<void> {
  const short = await settle(wanted, { ms, check });
  if (short) assert.fail(`${typeof what === "string" ? what : what()}: ${short}`);
}

/** Where `want` and `got` differ, for a failure message ("" when they hold the same lines once each):
 *  missing lines as ranges of their positions in `want`, lines that came twice, and strangers. */
export function differences(got: string[], want: string[]): string {
  const wanted = new Set(want);
  const counts = new Map<string, number>();
  for (const l of got) counts.set(l, (counts.get(l) ?? 0) + 1);
  const ranges: Array<[number, number]> = [];
  let missing = 0;
  want.forEach((l, i) => {
    if (counts.has(l)) return;
    missing++;
    const last = ranges.at(-1);
    if (last && last[1] === i - 1) last[1] = i;
    else ranges.push([i, i]);
  });
  const twice = [...counts].filter(([, n]) => n > 1).map(([l]) => l);
  const unexpected = [...counts.keys()].filter((l) => !wanted.has(l));
  const first = (ls: string[]) => ls.slice(0, 3).map((l) => JSON.stringify(l.slice(0, 160))).join(", ");
  const out: string[] = [];
  if (missing) {
    const shown = ranges.slice(0, 5).map(([a, b]) => (a === b ? `#${a}` : `#${a}-#${b}`)).join(", ");
    out.push(`${missing} missing (sent as ${shown}${ranges.length > 5 ? ", ..." : ""}; first: ${first(want.filter((l) => !counts.has(l)))})`);
  }
  if (twice.length) out.push(`${twice.length} twice (first: ${first(twice)})`);
  if (unexpected.length) out.push(`${unexpected.length} unexpected (first: ${first(unexpected)})`);
  return out.join("; ");
}

/** Asserts that `got` holds exactly the lines of `want`, each once. */
export function assertSameLines(got: string[], want: string[], what: string): void {
  const diff = differences(got, want);
  assert.equal(diff, "", `${what}: ${want.length} expected, ${got.length} arrived: ${diff}`);
  assert.equal(got.length, want.length, what);
}

/** A JSON event's text in one canonical form (key order kept), to compare events whose
 *  whitespace the agent may change (MISP's pretty-printed elements are put on one line). */
export const canonical = (line: string) => {
  try {
    return JSON.stringify(JSON.parse(line));
  } catch {
    return `not JSON: ${line}`;
  }
};

// ---- health ------------------------------------------------------------------------------------

export interface Health {
  status: number;
  body: { status: string; problems?: string[] };
}

/** GET /health of a control server: its status code and body. */
export async function health(url: string): Promise<Health> {
  const res = await fetch(`${url}/health`);
  return { status: res.status, body: await res.json() };
}

/** Polls GET /health every 100 ms until `wanted` holds; resolves to that answer. */
export async function healthUntil(url: string, wanted: (h: Health) => boolean, what: string, ms: number): Promise<Health> {
  let last: Health | undefined;
  try {
    await until(async () => {
      last = await health(url);
      if (wanted(last)) return true;
      await pause(100);
      return false;
    }, what, ms);
  } catch (err) {
    assert.fail(`${(err as Error).message} (last answer: ${JSON.stringify(last)})`);
  }
  return last!;
}
