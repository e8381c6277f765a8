// Starting the compiled executable: one agent per data_dir however many start at once, and a
// start on a full disk that comes up and delivers what is spooled.
// Runs when CYBEXP_E2E_BINARY names the executable (npm run test:e2e, .ci/run).
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Receiver } from "../../scripts/receiver.ts";
import { cannotMount, mountSmallDisk, type SmallDisk } from "../testing/tmpfs.ts";
import { until } from "../testing/until.ts";
import { agentFolder, Arrivals, configText, referenceReceiver, skip, alive, cli } from "../testing/e2e.ts";



/** Pids of the processes that have `path` open (what holds the data_dir's lock). */
function openedBy(path: string): number[] {
  const pids: number[] = [];
  for (const p of readdirSync("/proc")) {
    if (!/^\d+$/.test(p)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${p}/fd`);
    } catch {
      continue; // gone
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${p}/fd/${fd}`) === path) {
          pids.push(Number(p));
          break;
        }
      } catch {
        // closed meanwhile
      }
    }
  }
  return pids;
}

/** Pids of `<dir>/cybexp-agent run` processes (daemons and foreground agents of that folder). */
function agentsOf(dir: string): number[] {
  const exe = join(dir, "cybexp-agent");
  const pids: number[] = [];
  for (const p of readdirSync("/proc")) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const argv = readFileSync(`/proc/${p}/cmdline`, "utf8").split("\0");
      if (argv[0] === exe && argv[1] === "run") pids.push(Number(p));
    } catch {
      // gone
    }
  }
  return pids;
}


const alreadyRunning = (dataDir: string, pid: number) => `an agent is already running on ${dataDir} (pid ${pid})`;

const MANUAL_INPUT = `[inputs.desk]
type = "manual"
typetag = "manual-ti"
`;

describe("one agent per data_dir", { skip }, () => {
  let receiver: Receiver;
  const dirs: string[] = [];
  before(async () => {
    receiver = await referenceReceiver();
  });
  after(async () => {
    for (const d of dirs) for (const pid of agentsOf(d)) process.kill(pid, "SIGKILL");
    await receiver.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  test("six rounds of two `start` at once on one folder: one daemon each round, the other start exits 1 naming its pid", async () => {
    const d = agentFolder(configText(receiver.url, MANUAL_INPUT));
    dirs.push(d);
    const dataDir = join(d, "data");
    for (let round = 1; round <= 6; round++) {
      const both = await Promise.all([cli(d, ["start"]), cli(d, ["start"])]);
      const what = `round ${round}: ${JSON.stringify(both)}`;
      assert.deepEqual(both.map((r) => r.code).sort(), [0, 1], what);
      const won = both.find((r) => r.code === 0)!;
      const lost = both.find((r) => r.code === 1)!;
      const pid = Number(/started \(pid (\d+),/.exec(won.stdout)?.[1]);
      assert.ok(pid > 0, what);
      assert.equal(lost.stderr.trim(), `cybexp-agent start: ${alreadyRunning(dataDir, pid)}`, what);
      assert.deepEqual(agentsOf(d), [pid], `${what}: exactly one agent process`);
      assert.deepEqual(openedBy(join(dataDir, "lock")), [pid], `${what}: exactly one process holds the data_dir`);
      assert.equal(JSON.parse(readFileSync(join(dataDir, "runningconfig"), "utf8")).pid, pid);
      assert.equal(readFileSync(join(dataDir, "lock"), "utf8"), `${pid}\n`);
      // and a start while it runs is refused the same way
      const again = await cli(d, ["start"]);
      assert.equal(again.code, 1, JSON.stringify(again));
      assert.equal(again.stderr.trim(), `cybexp-agent start: ${alreadyRunning(dataDir, pid)}`);
      const stop = await cli(d, ["stop"]);
      assert.equal(stop.code, 0, stop.stderr);
      await until(() => agentsOf(d).length === 0, `round ${round}: the daemon to be gone`);
      assert.ok(existsSync(join(dataDir, "lock")), "the lock file stays");
    }
  });

  test("six rounds of two `run` at once: one runs, the other exits 1 naming its pid", async () => {
    const d = agentFolder(configText(receiver.url, MANUAL_INPUT));
    dirs.push(d);
    const dataDir = join(d, "data");
    for (let round = 1; round <= 6; round++) {
      const runs = [0, 1].map(() => {
        const child: ChildProcess = spawn(join(d, "cybexp-agent"), ["run"], { cwd: d, env: { PATH: "/usr/bin:/bin" }, stdio: ["ignore", "ignore", "pipe"] });
        let stderr = "";
        child.stderr!.on("data", (b: Buffer) => (stderr += b.toString("utf8")));
        const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
        return { child, exited, stderr: () => stderr };
      });
      const first = await Promise.race(runs.map((r, i) => r.exited.then((code) => ({ i, code }))));
      const lost = runs[first.i]!, won = runs[1 - first.i]!;
      const what = `round ${round}: ${lost.stderr()} / ${won.stderr().slice(-500)}`;
      assert.equal(first.code, 1, what);
      assert.equal(lost.stderr().trim(), `cybexp-agent run: ${alreadyRunning(dataDir, won.child.pid!)}`, what);
      await until(() => existsSync(join(dataDir, "runningconfig")) && JSON.parse(readFileSync(join(dataDir, "runningconfig"), "utf8")).pid === won.child.pid, `${what}: the winner's runningconfig`);
      assert.deepEqual(agentsOf(d), [won.child.pid], what);
      assert.deepEqual(openedBy(join(dataDir, "lock")), [won.child.pid], what);
      won.child.kill("SIGTERM");
      await won.exited;
      assert.match(won.stderr(), /"msg":"agent stopped"/, what);
    }
  });
});

describe("start on a full disk", { skip: skip || cannotMount }, () => {
  let receiver: Receiver;
  let disk: SmallDisk;
  let d = "";
  before(async () => {
    receiver = await referenceReceiver();
    disk = mountSmallDisk(8);
  });
  after(async () => {
    if (d) for (const pid of agentsOf(d)) process.kill(pid, "SIGKILL");
    await receiver.close();
    disk?.unmount();
    if (d) rmSync(d, { recursive: true, force: true });
  });

  test("kill -9 with a backlog on a full 8 MiB tmpfs: the daemon starts, answers status and delivers the backlog", async () => {
    const inputs = `[inputs.backlog]
type = "file"
typetag = "syslog"
paths = ["./logs/*.log"]
`;
    d = agentFolder(configText(receiver.url, inputs));
    mkdirSync(join(d, "logs"));
    mkdirSync(join(disk.dir, "data"));
    symlinkSync(join(disk.dir, "data"), join(d, "data")); // data_dir = "./data" lives on the small disk
    const dataDir = join(d, "data");

    // 1. the API is down: 20,000 lines go into the spool and stay there
    receiver.failFor(600_000, 503);
    const s1 = await cli(d, ["start"]);
    assert.equal(s1.code, 0, s1.stderr);
    const pid1 = JSON.parse(readFileSync(join(dataDir, "runningconfig"), "utf8")).pid as number;
    assert.ok(existsSync(join(dataDir, "reserve")), "the reserve is made while there is room");
    const total = 20_000;
    const lines = Array.from({ length: total }, (_, i) => `2026-12-01T10:00:00Z fw01 kernel: DROP IN=eth0 SRC=198.51.100.${i % 250} DPT=${i % 65535} seq=${i}`);
    appendFileSync(join(d, "logs", "fw.log"), lines.join("\n") + "\n");
    const spooled = async () => {
      const st = await cli(d, ["status", "--json"]);
      if (st.code !== 0) return -1;
      return (JSON.parse(st.stdout) as { spool: { events: number } }).spool.events;
    };
    await until(async () => (await spooled()) >= total, "the backlog in the spool", 60_000);
    // and the input's checkpoint saved past it, so that the restart has nothing to read again
    const size = statSync(join(d, "logs", "fw.log")).size;
    const checkpoint = join(dataDir, "state", "backlog.json");
    await until(() => existsSync(checkpoint) && readFileSync(checkpoint, "utf8").includes(`"offset":${size},`), "the file input's checkpoint at the end of the file", 30_000);

    // 2. the disk fills up to its last byte, the agent dies hard, a crash leaves a temp file
    disk.fill(0);
    await new Promise((r) => setTimeout(r, 300)); // whatever the agent still writes (checkpoints)
    disk.fill(0);
    assert.equal(disk.free(), 0, "the disk is full");
    process.kill(pid1, "SIGKILL");
    await until(() => !alive(pid1), "the daemon to die (and be reaped)");
    writeFileSync(join(dataDir, `runningconfig.${pid1}.tmp`), "");
    assert.equal(disk.free(), 0, "still full");

    // 3. the API is back; the agent starts on the full disk and delivers
    receiver.failFor(0);
    const arrivals = new Arrivals(receiver, "backlog");
    const s2 = await cli(d, ["start"]);
    assert.equal(s2.code, 0, `start on a full disk: ${s2.stderr}`);
    const pid2 = Number(/started \(pid (\d+),/.exec(s2.stdout)?.[1]);
    assert.equal(existsSync(join(dataDir, `runningconfig.${pid1}.tmp`)), false, "the crashed run's temp file is removed");
    assert.match(readFileSync(join(dataDir, "agent.log"), "utf8"), /released the disk-space reserve/, "start-up went through on the reserve");
    const st = await cli(d, ["status"]);
    assert.equal(st.code, 0, `status on a full disk: ${st.stderr}`);
    assert.match(st.stdout, /backlog\s+file\s+running/);
    const delivered = async () => new Set(await arrivals.lines()).size;
    const end = Date.now() + 120_000;
    while ((await delivered()) < total && Date.now() < end && agentsOf(d).includes(pid2)) await new Promise((r) => setTimeout(r, 100));
    const got = await arrivals.lines();
    const unique = new Set(got);
    const status = await cli(d, ["status", "--json"]);
    console.log(`full disk: ${unique.size} of ${total} backlog lines delivered after the restart (${got.length - unique.size} twice); disk free now ${disk.free()} bytes`);
    assert.equal(got.length, unique.size, "nothing twice: the checkpoint was saved before the crash");
    assert.ok(agentsOf(d).includes(pid2), `the daemon is still running: ${readFileSync(join(dataDir, "agent.log"), "utf8").slice(-1500)}`);
    assert.equal(unique.size, total, `every backlog line delivered: ${status.stdout.slice(0, 1500)}`);
    for (const l of lines.slice(0, 50)) assert.ok(unique.has(l));
    const stop = await cli(d, ["stop"]);
    assert.equal(stop.code, 0, stop.stderr);
  });
});
