// The data_dir lock across real processes: a child of this same runtime holds it, this process
// is refused with the child's pid, and a kill -9 of the child frees it at once.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { after, describe, test } from "node:test";
import { Agent, AlreadyRunningError } from "../agent/agent.ts";
import { inputPlugins } from "../plugins/index.ts";
import { DataDirLock } from "../agent/lock.ts";
import { createLogger } from "../agent/log.ts";
import { until } from "./testing/until.ts";
import { isDeno } from "../agent/runtime/detect.ts";

const lockUrl = pathToFileURL(join(dirname(fileURLToPath(import.meta.url)), "..", "agent", "lock.ts")).href;
const dirs: string[] = [];
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function freshDir(): string {
  const d = mkdtempSync(join(tmpdir(), "lock-"));
  dirs.push(d);
  return d;
}

interface Holder {
  child: ChildProcess;
  /** What the child printed: {locked: pid, method} or {refused: message, pid}. */
  result: Promise<{ locked?: number; method?: string; refused?: string; pid?: number }>;
  exited: Promise<void>;
}

/** A child process of this same runtime that tries to take the lock on `dataDir` at `goAt` (ms
 *  since the epoch) and, once it has it, holds it until killed. */
function holder(dataDir: string, mode: "flock" | "lockfile", goAt = 0): Holder {
  const script = join(dirname(dataDir), `holder-${Math.random().toString(36).slice(2)}.ts`);
  writeFileSync(script, `
import { DataDirLock } from ${JSON.stringify(lockUrl)};
const [mode, dir, goAt] = process.argv.slice(-3);
await new Promise((r) => setTimeout(r, Math.max(0, Number(goAt) - Date.now())));
try {
  const lock = await DataDirLock.acquire(dir, { flock: mode === "lockfile" ? null : undefined });
  console.log(JSON.stringify({ locked: process.pid, method: lock.method }));
  setInterval(() => {}, 1000);
} catch (err) {
  console.log(JSON.stringify({ refused: err.message, pid: err.pid }));
}
`);
  const args = [...(isDeno() ? ["run", "-A"] : []), script, mode, dataDir, String(goAt)];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  let out = "", err = "";
  child.stderr!.on("data", (b) => (err += b));
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const result = new Promise<any>((resolve, reject) => {
    child.stdout!.on("data", (b) => {
      out += b;
      const line = out.split("\n").find((l) => l.startsWith("{"));
      if (line) resolve(JSON.parse(line));
    });
    void exited.then(() => reject(new Error(`the lock holder exited without a word: ${err}`)));
  });
  return { child, result, exited };
}

async function kill9(h: Holder): Promise<void> {
  h.child.kill("SIGKILL");
  await h.exited;
}

describe("data_dir lock", () => {
  test("on Linux it is flock(2); a second try in this process is refused naming this pid; release frees it", async () => {
    const dir = freshDir();
    const lock = await DataDirLock.acquire(dir);
    if (process.platform === "linux") assert.equal(lock.method, "flock");
    assert.equal(readFileSync(join(dir, "lock"), "utf8"), `${process.pid}\n`);
    await assert.rejects(DataDirLock.acquire(dir, { pidWaitMs: 0 }), (err: unknown) => {
      assert.ok(err instanceof AlreadyRunningError);
      assert.equal(err.message, `an agent is already running on ${dir} (pid ${process.pid})`);
      return true;
    });
    assert.equal(DataDirLock.heldOn(dir), lock);
    lock.release();
    assert.equal(DataDirLock.heldOn(dir), undefined);
    assert.ok(existsSync(join(dir, "lock")), "the lock file is kept");
    (await DataDirLock.acquire(dir, { pidWaitMs: 0 })).release();
  });

  for (const mode of ["flock", "lockfile"] as const) {
    test(`${mode}: a child process holds it, this one is refused with the child's pid; after kill -9 it is free at once`, async () => {
      const dir = freshDir();
      const h = holder(dir, mode);
      const r = await h.result;
      assert.equal(r.locked, h.child.pid, JSON.stringify(r));
      assert.equal(r.method, mode);
      const t0 = Date.now();
      await assert.rejects(DataDirLock.acquire(dir, { flock: mode === "lockfile" ? null : undefined }), (err: unknown) => {
        assert.ok(err instanceof AlreadyRunningError, String(err));
        assert.equal(err.pid, h.child.pid);
        assert.match(err.message, new RegExp(`^an agent is already running on ${dir} \\(pid ${h.child.pid}\\)$`));
        return true;
      });
      assert.ok(Date.now() - t0 < 1000, "refused without waiting when the pid is there");
      await kill9(h);
      // no wait and no retry: the kernel dropped the lock with the process (the lock file's
      // stale pid is taken over at once)
      const lock = await DataDirLock.acquire(dir, { flock: mode === "lockfile" ? null : undefined, pidWaitMs: 0 });
      assert.equal(lock.method, mode);
      assert.equal(readFileSync(lock.path, "utf8"), `${process.pid}\n`);
      lock.release();
    });
  }

  test("six processes trying at the same instant: exactly one holds it, the others name its pid", async () => {
    for (let round = 0; round < 3; round++) {
      const dir = freshDir();
      const goAt = Date.now() + 1500;
      const hs = Array.from({ length: 6 }, () => holder(dir, "flock", goAt));
      const results = await Promise.all(hs.map((h) => h.result));
      const winners = results.filter((r) => r.locked);
      assert.equal(winners.length, 1, `round ${round}: ${JSON.stringify(results)}`);
      for (const r of results.filter((r) => r.refused)) assert.equal(r.pid, winners[0]!.locked, `round ${round}: ${JSON.stringify(results)}`);
      await Promise.all(hs.map(kill9));
    }
  });

  test("a pid left in the lock file by a dead holder does not refuse anyone", async () => {
    const dir = freshDir();
    writeFileSync(join(dir, "lock"), "4000000\n");
    const lock = await DataDirLock.acquire(dir, { pidWaitMs: 0 });
    assert.equal(readFileSync(join(dir, "lock"), "utf8"), `${process.pid}\n`, "truncated and rewritten");
    lock.release();
  });

  test("the agent takes it before touching the spool, the state, the runningconfig or leftover temp files", async () => {
    const dir = freshDir();
    const dataDir = join(dir, "data");
    mkdirSync(dataDir);
    writeFileSync(join(dataDir, "runningconfig.4000000.tmp"), "");
    const configPath = join(dir, "agent.toml");
    writeFileSync(configPath, `[agent]\ndata_dir = "data"\n[control]\nlisten = "127.0.0.1:0"\n[api]\nurl = "http://127.0.0.1:9"\ntoken = "t"\norgid = "o"\n`);
    const log = createLogger("error", { write() {} });
    const h = holder(dataDir, "flock");
    assert.ok((await h.result).locked);
    await assert.rejects(Agent.start({ configPath, plugins: inputPlugins, log }), (err: unknown) => {
      assert.ok(err instanceof AlreadyRunningError);
      assert.equal(err.message, `an agent is already running on ${dataDir} (pid ${h.child.pid})`);
      return true;
    });
    assert.deepEqual(readdirSync(dataDir).sort(), ["lock", "runningconfig.4000000.tmp"], "nothing else touched");
    await kill9(h);
    const agent = await Agent.start({ configPath, plugins: inputPlugins, log });
    try {
      await until(() => existsSync(join(dataDir, "runningconfig")), "the runningconfig");
      assert.equal(existsSync(join(dataDir, "runningconfig.4000000.tmp")), false, "the earlier run's temp file is gone");
      assert.equal(readFileSync(join(dataDir, "lock"), "utf8"), `${process.pid}\n`);
    } finally {
      await agent.shutdown();
    }
    assert.equal(DataDirLock.heldOn(dataDir), undefined, "released at the end of shutdown");
    (await DataDirLock.acquire(dataDir, { pidWaitMs: 0 })).release();
  });
});
