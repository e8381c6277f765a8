// End to end with the compiled executable: `cybexp-agent top` in a real terminal (a tmux pane),
// read from the screen as a user sees it; through a pipe, one plain line a second; and with no
// daemon. Runs when CYBEXP_E2E_BINARY names the executable (npm run test:e2e, .ci/run).
import assert from "node:assert/strict";
import { execFile, spawn, spawnSync } from "node:child_process";
import { appendFileSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Receiver } from "../../scripts/receiver.ts";
import { until } from "../testing/until.ts";
import { agentFolder, cli, configText, pause, referenceReceiver, runAgent, skip, stopGracefully, type RunningAgent } from "../testing/e2e.ts";

const noTmux = spawnSync("tmux", ["-V"]).status === 0 ? false : "tmux is not installed (apt-get install tmux)";

const INPUTS = `[inputs.auth]
type = "file"
typetag = "syslog"
paths = ["./auth.log"]
start_at = "beginning"
[inputs.desk]
type = "manual"
typetag = "manual-ti"
`;

/** What the pane runs: top, then its exit code and whether the terminal is back in cooked mode
 *  with echo ("TTY icanon echo"), then it stays so that the screen can be read. */
const TOP_SH = `./cybexp-agent top -c agent.config.toml
echo "TOP-EXIT=$?"
echo "TTY $(stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ' ')"
exec sleep 120
`;

function sshLine(k: number): string {
  return `Dec  7 23:10:01 bastion sshd[4242]: Failed password for root from 203.0.113.${k % 250} port ${40000 + k} ssh2\n`;
}

/** One tmux server of its own (a socket name no other run uses) holding one session "top". */
class Tmux {
  readonly socket = `cybexp-top-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;

  run(args: string[]): Promise<string> {
    return new Promise((res, rej) => {
      const env = { ...process.env };
      delete env.TMUX; // a run inside tmux starts a server of its own all the same
      execFile("tmux", ["-L", this.socket, ...args], { env, timeout: 10_000 }, (err, stdout, stderr) => {
        if (err) rej(new Error(`tmux ${args.join(" ")}: ${stderr || err.message}`));
        else res(stdout);
      });
    });
  }

  private socketPath: string | undefined;

  async start(cwd: string, columns: number, rows: number, command: string): Promise<void> {
    await this.run(["new-session", "-d", "-s", "top", "-x", String(columns), "-y", String(rows), "-c", cwd, command]);
    this.socketPath = (await this.run(["display-message", "-p", "#{socket_path}"])).trim();
  }

  /** The pane's lines, wrapped lines joined (so that a line wider than the pane shows as one). */
  async screen(): Promise<string[]> {
    return (await this.run(["capture-pane", "-p", "-J", "-t", "top"])).replace(/\n$/, "").split("\n").map((l) => l.trimEnd());
  }

  /** Waits until the screen shows what `cond` wants; resolves to that screen. */
  async screenUntil(cond: (lines: string[]) => boolean, what: string, ms = 20_000): Promise<string[]> {
    let last: string[] = [];
    try {
      await until(async () => {
        last = await this.screen();
        if (cond(last)) return true;
        await pause(100);
        return false;
      }, what, ms);
    } catch (err) {
      assert.fail(`${(err as Error).message}; the screen:\n${last.join("\n")}`);
    }
    return last;
  }

  /** Alternate screen, cursor shown, line wrap: "0 1 1" is the shell's terminal as it was. */
  terminalModes(): Promise<string> {
    return this.run(["display-message", "-p", "-t", "top", "#{alternate_on} #{cursor_flag} #{wrap_flag}"]).then((s) => s.trim());
  }

  /** Ends the server and its panes, and removes its socket (which kill-server leaves behind). */
  async kill(): Promise<void> {
    await this.run(["kill-server"]).catch(() => {});
    if (this.socketPath) rmSync(this.socketPath, { force: true });
  }
}

/** The cells of a screen line, split where two or more spaces are. */
const cells = (line: string) => line.trim().split(/ {2,}/);

/** The cell under `title` in the row of input `name`. */
function cell(screen: string[], name: string, title: string): string | undefined {
  const header = screen.find((l) => l.startsWith("INPUT "));
  const row = screen.find((l) => cells(l)[0] === name);
  if (!header || !row) return undefined;
  return cells(row)[cells(header).indexOf(title)];
}

const isView = (screen: string[]) => screen.some((l) => l.startsWith("INPUT ")) && screen.some((l) => /^q: quit/.test(l));
/** The footer, laid out for `columns`: the time at its right end (a line the terminal cut would lose it). */
const footerFits = (screen: string[], columns: number) => screen.some((l) => /^q: quit {2,}\d\d:\d\d:\d\d$/.test(l) && l.length === columns);

/** The pid of the `top` process of the pane: the child of its shell. */
async function topPid(tmux: Tmux): Promise<number> {
  const shell = (await tmux.run(["display-message", "-p", "-t", "top", "#{pane_pid}"])).trim();
  for (const p of readdirSync("/proc")) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const argv = readFileSync(`/proc/${p}/cmdline`, "utf8").split("\0");
      // the parent pid is the 4th field of /proc/PID/stat, after the ")" that ends the name
      const ppid = readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1]!.split(" ")[1];
      if (argv[1] === "top" && ppid === shell) return Number(p);
    } catch {
      // gone
    }
  }
  assert.fail(`no top process under the pane's shell (pid ${shell})`);
}

/** The shell's terminal is back: no view on it, top's exit code and the tty modes printed after it. */
async function assertRestored(tmux: Tmux, code: number): Promise<string[]> {
  const screen = await tmux.screenUntil((s) => s.some((l) => l.startsWith("TTY ")), `TOP-EXIT=${code} and the tty modes after top`);
  assert.ok(screen.includes(`TOP-EXIT=${code}`), screen.join("\n"));
  assert.ok(screen.includes("TTY icanon echo"), `cooked mode with echo again: ${screen.join("\n")}`);
  assert.ok(!isView(screen), `the view is gone from the screen:\n${screen.join("\n")}`);
  assert.equal(await tmux.terminalModes(), "0 1 1", "alternate screen off, cursor shown, line wrap on");
  return screen;
}

describe("top in a terminal (tmux)", { skip: skip || noTmux }, () => {
  let receiver: Receiver;
  let agent: RunningAgent;
  let stopped = false;
  /** `top` in a pane of `columns` x `rows` in the agent's folder; the tmux server goes at the
   *  end (a top still running gets SIGHUP then), so that a failed test leaves none behind. */
  const inPane = async (columns: number, rows: number, body: (t: Tmux) => Promise<void>) => {
    const t = new Tmux();
    try {
      await t.start(agent.dir, columns, rows, "sh ./top.sh");
      await body(t);
    } finally {
      await t.kill();
    }
  };

  before(async () => {
    receiver = await referenceReceiver();
    agent = await runAgent(receiver, INPUTS, (dir) => {
      writeFileSync(join(dir, "auth.log"), "");
      writeFileSync(join(dir, "top.sh"), TOP_SH);
    });
  });
  after(async () => {
    if (agent && !stopped) await stopGracefully(agent);
    await receiver?.close();
  });

  test("120 columns: each input with its state, events/s up while lines are appended; at 70 columns every line fits; q quits and gives the terminal back", () => inPane(120, 30, async (t) => {
    let screen = await t.screenUntil((s) => isView(s) && cell(s, "auth", "STATE") === "running" && cell(s, "desk", "STATE") === "running", "the view with auth and desk running");
    assert.match(screen[0]!, new RegExp(`^ cybexp-agent \\S+  pid ${agent.child.pid}  up \\S+  host \\S+  control ${agent.url.replace(/\./g, "\\.")}$`));
    assert.deepEqual(cells(screen.find((l) => l.startsWith("INPUT "))!), ["INPUT", "TYPE", "STATE", "EVENTS/S", "BYTES/S", "EVENTS", "ERRORS", "RESTARTS", "LAST ERROR"]);
    assert.equal(cell(screen, "auth", "TYPE"), "file");
    assert.equal(cell(screen, "desk", "TYPE"), "manual");

    let k = 0;
    const writer = setInterval(() => appendFileSync(join(agent.dir, "auth.log"), sshLine(k++)), 20);
    try {
      screen = await t.screenUntil((s) => Number(cell(s, "auth", "EVENTS/S")) > 0, "auth's events/s above 0 while lines are appended");
      assert.ok(Number(cell(screen, "auth", "EVENTS")) > 0);
      assert.match(cell(screen, "auth", "BYTES/S")!, /^[\d.]+ (B|KiB)$/);
      assert.match(screen.find((l) => l.startsWith("inputs "))!, /^inputs 2 \(2 running\) {3}events\/s [1-9]/);
    } finally {
      clearInterval(writer);
    }
    assert.equal(cell(screen, "desk", "EVENTS/S"), "0");
    assert.ok(screen.some((l) => /^OUTPUT {2}ok {3}uploads\/s \S+ {3}events\/s \S+ {3}retries 0 {3}dead letters 0$/.test(l)), screen.join("\n"));
    assert.ok(screen.some((l) => /^SPOOL {3}\d+ events? {3}[\d.]+ (B|KiB) of 1\.0 GiB {3}oldest \d+s {3}dropped 0$/.test(l)), screen.join("\n"));
    assert.ok(footerFits(screen, 120), `the footer spans the 120 columns:\n${screen.join("\n")}`);

    await t.run(["resize-window", "-t", "top", "-x", "70"]);
    screen = await t.screenUntil((s) => isView(s) && footerFits(s, 70), "the view drawn again for 70 columns");
    for (const l of screen) assert.ok(l.length <= 70, `a line wider than 70 columns: ${JSON.stringify(l)}\n${screen.join("\n")}`);
    assert.ok(!screen.some((l) => l.includes("RESTARTS")), `a column left out at 70 columns:\n${screen.join("\n")}`);
    assert.equal(cell(screen, "auth", "STATE"), "running");
    assert.equal(cell(screen, "desk", "STATE"), "running");
    assert.doesNotMatch(screen[0]!, /control /, "the title gives way");

    await t.run(["send-keys", "-t", "top", "q"]);
    await assertRestored(t, 0);
  }));

  test("SIGTERM: top ends with 0 and gives the terminal back", () => inPane(100, 24, async (t) => {
    await t.screenUntil(isView, "the view");
    process.kill(await topPid(t), "SIGTERM");
    await assertRestored(t, 0);
  }));

  test("the daemon stops: top gives the terminal back, says so on stderr and exits 1", () => inPane(100, 24, async (t) => {
    await t.screenUntil(isView, "the view");
    const pid = agent.child.pid;
    stopped = true;
    await stopGracefully(agent);
    const screen = await assertRestored(t, 1);
    assert.ok(screen.includes(`cybexp-agent top: the daemon (pid ${pid}) stopped`), screen.join("\n"));
  }));
});

describe("top without a terminal", { skip }, () => {
  let receiver: Receiver;
  let agent: RunningAgent;

  before(async () => {
    receiver = await referenceReceiver();
    agent = await runAgent(receiver, INPUTS, (dir) => writeFileSync(join(dir, "auth.log"), ""));
  });
  after(async () => {
    if (agent) await stopGracefully(agent);
    await receiver?.close();
  });

  test("stdout piped: one plain line a second, no escape codes; events/s of a manual input after a post; SIGINT ends it with 0", async () => {
    const child = spawn(join(agent.dir, "cybexp-agent"), ["top", "-c", "agent.config.toml"], { cwd: agent.dir, env: { PATH: "/usr/bin:/bin" }, stdio: ["ignore", "pipe", "pipe"] });
    const exited = new Promise<{ code: number | null; signal: string | null }>((r) => child.once("exit", (code, signal) => r({ code, signal })));
    let stdout = "", stderr = "";
    child.stdout!.on("data", (b: Buffer) => (stdout += b.toString("utf8")));
    child.stderr!.on("data", (b: Buffer) => (stderr += b.toString("utf8")));
    const lines = () => stdout.split("\n").slice(0, -1);
    try {
      await until(() => lines().length >= 1, "the first line");
      const posted = await cli(agent.dir, ["post", "--input", "desk", "-c", "agent.config.toml", "-"], "203.0.113.9\nevil.example\nphish.example\n");
      assert.equal(posted.code, 0, posted.stderr);
      await until(() => lines().some((l) => / desk=[1-9]/.test(l)), `a line with desk's events/s above 0: ${stdout}`);
      assert.ok(lines().length >= 2);
      const plain = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ inputs 2 \(2 running\) events\/s (-|[\d.]+) bytes\/s (-|[\d.]+ (B|KiB)) output ok uploads\/s (-|[\d.]+) retries 0 dead 0 spool \d+ events [\d.]+ (B|KiB) oldest \d+s auth=(-|[\d.]+) desk=(-|[\d.]+)$/;
      for (const l of lines()) assert.match(l, plain);
      assert.match(lines()[0]!, / events\/s - bytes\/s - .* auth=- desk=-$/, "no rates on the first line");
      assert.doesNotMatch(stdout, /\x1b/);
      child.kill("SIGINT");
      assert.deepEqual(await exited, { code: 0, signal: null });
      assert.equal(stderr, "");
    } finally {
      child.kill("SIGKILL");
    }
  });

  test("no daemon: exit 3 with the usual message", async () => {
    const dir = agentFolder(configText(receiver.url, INPUTS));
    try {
      const r = await cli(dir, ["top", "-c", "agent.config.toml"]);
      assert.equal(r.code, 3);
      assert.match(r.stderr, /^cybexp-agent top: no daemon is running for .*agent\.config\.toml \(data_dir .*data\)\n$/);
      assert.equal(r.stdout, "");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
