// The compiled executable as a service: signals (SIGHUP reloads, SIGUSR1 reopens the log, the
// others do not kill it), a signal during start-up, the daemon's size-bounded agent.log, and
// `init`. Runs when CYBEXP_E2E_BINARY names the executable (npm run test:e2e, .ci/run).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Receiver } from "../../scripts/receiver.ts";
import { until } from "../testing/until.ts";
import { agentFolder, alive, Arrivals, cli, configText, referenceReceiver, skip } from "../testing/e2e.ts";

const MANUAL = `[inputs.desk]
type = "manual"
typetag = "manual"
`;
const FILE_INPUT = `[inputs.fw]
type = "file"
typetag = "fw"
paths = ["logs/*.log"]
start_at = "beginning"
`;

const read = (p: string) => (existsSync(p) ? readFileSync(p, "utf8") : "");
const pidOf = (dir: string) => (JSON.parse(readFileSync(join(dir, "data", "runningconfig"), "utf8")) as { pid: number }).pid;
const count = (text: string, what: string) => text.split(what).length - 1;

describe("signals and the daemon's log (compiled executable)", { skip }, () => {
  let receiver: Receiver;
  before(async () => {
    receiver = await referenceReceiver();
  });
  after(async () => {
    await receiver?.close();
  });

  test("SIGHUP reloads: an added input delivers, an invalid file changes nothing; USR1/USR2/QUIT/PIPE do not kill it; USR1 reopens a moved agent.log", async () => {
    const d = agentFolder(configText(receiver.url, MANUAL));
    try {
      const s = await cli(d, ["start"]);
      assert.equal(s.code, 0, `start: ${s.stderr}`);
      const pid = pidOf(d);
      const logPath = join(d, "data", "agent.log");
      const log = () => read(logPath);
      await until(() => log().includes('"msg":"agent started"'), "the daemon's own agent.log");

      // an input added to the file, then SIGHUP
      mkdirSync(join(d, "logs"));
      const lines = Array.from({ length: 20 }, (_, i) => `fw line ${i}`);
      writeFileSync(join(d, "logs", "a.log"), lines.join("\n") + "\n");
      appendFileSync(join(d, "agent.config.toml"), FILE_INPUT);
      const arrivals = new Arrivals(receiver, "fw");
      process.kill(pid, "SIGHUP");
      await until(() => log().includes('"msg":"configuration reloaded"'), `the reload on SIGHUP: ${log().slice(-1500)}`);
      await until(async () => new Set(await arrivals.lines()).size === lines.length, "the added input's lines", 30_000);
      assert.ok(alive(pid), "alive after SIGHUP");
      assert.match(log(), /"msg":"configuration reloaded","started":\["fw"\]/);

      // an invalid file: logged, the running configuration stays
      const good = readFileSync(join(d, "agent.config.toml"), "utf8");
      writeFileSync(join(d, "agent.config.toml"), good.replace('typetag = "fw"', 'typetag = "fw"\nno_such_option = 1'));
      process.kill(pid, "SIGHUP");
      await until(() => log().includes("reload on SIGHUP failed"), "the failed reload logged");
      assert.match(log(), /"level":"error","msg":"reload on SIGHUP failed; the running configuration stays","problems":\[".*no_such_option/);
      const st = await cli(d, ["status", "--json"]);
      assert.equal(st.code, 0, st.stderr);
      const inputs = (JSON.parse(st.stdout) as { inputs: { name: string; state: string }[] }).inputs;
      assert.deepEqual(inputs.map((i) => [i.name, i.state]).sort(), [["desk", "running"], ["fw", "running"]]);
      writeFileSync(join(d, "agent.config.toml"), good);

      // signals that must not kill it, each seen by the agent before the next
      for (const [sig, seen] of [["SIGUSR2", "received SIGUSR2; ignored"], ["SIGQUIT", "received SIGQUIT; ignored"], ["SIGUSR1", "received SIGUSR1; log file reopened"]] as const) {
        process.kill(pid, sig);
        await until(() => log().includes(seen), `the agent's line on ${sig}`);
        assert.ok(alive(pid), `alive after ${sig}`);
      }
      process.kill(pid, "SIGPIPE");
      process.kill(pid, "SIGHUP"); // a reload after it shows the process went on past the SIGPIPE
      await until(() => count(log(), '"msg":"configuration reloaded"') === 2, "a reload after SIGPIPE");
      assert.ok(alive(pid), "alive after SIGPIPE");

      // logrotate's way: move agent.log away, then SIGUSR1
      renameSync(logPath, `${logPath}.moved`);
      process.kill(pid, "SIGUSR1");
      await until(() => log().includes("received SIGUSR1; log file reopened"), "a new agent.log after SIGUSR1");
      assert.match(read(`${logPath}.moved`), /"msg":"agent started"/, "the moved file keeps what was written before");
      const status = await cli(d, ["status"]);
      assert.equal(status.code, 0, status.stderr);

      const stop = await cli(d, ["stop"]);
      assert.equal(stop.code, 0, stop.stderr);
      assert.match(log(), /"msg":"agent stopped"/);
      assert.equal(read(join(d, "data", "agent.out")), "", "the runtime printed nothing of its own");
    } finally {
      await cli(d, ["stop"]);
      rmSync(d, { recursive: true, force: true });
    }
  });

  test("a SIGHUP during start-up is carried out once the agent is up, not fatal", async () => {
    // at debug level the agent says when it begins to start (its signal handlers are in place)
    const d = agentFolder(configText(receiver.url, MANUAL).replace("[agent]\n", '[agent]\nlog_level = "debug"\n'));
    const child = spawn(join(d, "cybexp-agent"), ["run", "-c", "agent.config.toml"], { cwd: d, env: { PATH: "/usr/bin:/bin" }, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (b: Buffer) => (stderr += b.toString("utf8")));
    const exited = new Promise<string>((r) => child.once("exit", (code, sig) => r(sig ? `signal ${sig}` : `exit ${code}`)));
    try {
      await until(() => stderr.includes('"msg":"agent starting"') || child.exitCode !== null, "the agent's first line");
      child.kill("SIGHUP");
      child.kill("SIGHUP");
      await until(() => stderr.includes('"msg":"configuration reloaded"') || child.exitCode !== null || child.signalCode !== null, "the reload after start-up", 30_000);
      assert.equal(child.exitCode, null, `still running: ${stderr}`);
      assert.equal(child.signalCode, null, `not killed: ${stderr}`);
      assert.ok(stderr.indexOf('"msg":"agent started"') < stderr.indexOf('"msg":"configuration reloaded"'), `the reload after start-up: ${stderr}`);
      child.kill("SIGTERM");
      await exited;
      assert.match(stderr, /"msg":"agent stopped"/);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      rmSync(d, { recursive: true, force: true });
    }
  });

  test("the daemon's agent.log is rotated at agent.log_max_bytes, keeping agent.log_keep files; log_format text", async () => {
    const config = configText(receiver.url, MANUAL).replace("[agent]\n", '[agent]\nlog_max_bytes = 1024\nlog_keep = 2\nlog_format = "text"\n');
    const d = agentFolder(config);
    try {
      const s = await cli(d, ["start"]);
      assert.equal(s.code, 0, `start: ${s.stderr}`);
      const pid = pidOf(d);
      const data = join(d, "data");
      const logs = () => readdirSync(data).filter((f) => f.startsWith("agent.log")).sort();
      const all = () => logs().map((f) => read(join(data, f))).join("");
      // each reload adds an input, so that its "configuration reloaded" line names it
      for (let i = 1; i <= 12; i++) {
        appendFileSync(join(d, "agent.config.toml"), `[inputs.in${i}]\ntype = "manual"\ntypetag = "m"\n`);
        process.kill(pid, "SIGHUP");
        await until(() => all().includes(`INFO  configuration reloaded started=["in${i}"]`), `reload ${i}: ${logs()}`);
      }
      assert.deepEqual(logs(), ["agent.log", "agent.log.1", "agent.log.2"]);
      assert.ok(!all().includes("INFO  agent started"), "the oldest records went with the file beyond log_keep");
      for (const f of logs()) assert.ok(statSync(join(data, f)).size <= 1024, `${f} within log_max_bytes: ${statSync(join(data, f)).size}`);
      const current = read(join(data, "agent.log"));
      for (const line of current.split("\n").filter(Boolean)) assert.match(line, /^\d{4}-\d\d-\d\dT[\d:.]+Z (DEBUG|INFO |WARN |ERROR) \S/, "text records");
      assert.ok(alive(pid));
      const stop = await cli(d, ["stop"]);
      assert.equal(stop.code, 0, stop.stderr);
    } finally {
      await cli(d, ["stop"]);
      rmSync(d, { recursive: true, force: true });
    }
  });
});

describe("init (compiled executable)", { skip }, () => {
  test("writes the commented starter config, refuses to overwrite it, and it validates once CYBEXP_API_TOKEN is set", async () => {
    const d = agentFolder();
    try {
      const w = await cli(d, ["init"]);
      assert.equal(w.code, 0, w.stderr);
      const path = join(d, "agent.config.toml");
      const text = readFileSync(path, "utf8");
      assert.match(text, /^# cybexp-agent configuration/);
      assert.match(text, /^data_dir\s*= "\.\/data"/m);
      assert.match(text, /token\s*= "\$\{CYBEXP_API_TOKEN\}"/);
      assert.equal(statSync(path).mode & 0o077, 0, "not readable by others (it may hold a token once edited)");

      writeFileSync(path, "# mine\n");
      const again = await cli(d, ["init"]);
      assert.equal(again.code, 1);
      assert.match(again.stderr, /agent\.config\.toml exists; not overwritten/);
      assert.equal(readFileSync(path, "utf8"), "# mine\n", "left as it was");

      const other = await cli(d, ["init", "sub.toml"]);
      assert.equal(other.code, 0, other.stderr);
      assert.equal(readFileSync(join(d, "sub.toml"), "utf8"), text);
      const v = await new Promise<{ code: number; out: string }>((res) => {
        const c = spawn(join(d, "cybexp-agent"), ["validate", "-c", "sub.toml"], { cwd: d, env: { PATH: "/usr/bin:/bin", CYBEXP_API_TOKEN: "t0k" } });
        let out = "";
        c.stdout.on("data", (b) => (out += b));
        c.stderr.on("data", (b) => (out += b));
        c.on("exit", (code) => res({ code: code ?? 1, out }));
      });
      assert.equal(v.code, 0, v.out);
      assert.match(v.out, /OK \(4 inputs, 2 enabled: auth \[file\], cowrie \[file\], syslog \[syslog\], analyst \[manual\]\)/);
      const noToken = await cli(d, ["validate", "-c", "sub.toml"]);
      assert.equal(noToken.code, 1);
      assert.match(noToken.stderr, /CYBEXP_API_TOKEN is not set/);

      const help = await cli(d, ["init", "--help"]);
      assert.match(help.stdout, /Never overwrites/);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});
