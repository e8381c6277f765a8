// The runningconfig (how the CLI finds the daemon) and the start-up writes on a full disk: a
// real 4 MiB tmpfs filled to its last byte.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { after, before, describe, test } from "node:test";
import { removeLeftoverTempFiles } from "../agent/leftovers.ts";
import { isNoSpace } from "../agent/fserrors.ts";
import { Reserve } from "../agent/reserve.ts";
import { readRunningConfig, removeRunningConfig, runningConfigPath, writeRunningConfig } from "../agent/runningconfig.ts";
import { cannotMount, mountSmallDisk, type SmallDisk } from "./testing/tmpfs.ts";
import { isDeno } from "../agent/runtime/detect.ts";

const rc = { pid: process.pid, url: "http://127.0.0.1:8765", token: "tok" };

describe("runningconfig", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "rc-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("written 0600 and read back; a dead pid is stale; removal only of our own", async () => {
    await writeRunningConfig(dir, rc);
    assert.equal(statSync(runningConfigPath(dir)).mode & 0o777, 0o600);
    assert.deepEqual(await readRunningConfig(dir), rc);
    assert.deepEqual(readdirSync(dir), ["runningconfig"], "no temp file left");
    await removeRunningConfig(dir, 4_000_000);
    assert.ok(existsSync(runningConfigPath(dir)), "not ours: kept");
    writeFileSync(runningConfigPath(dir), JSON.stringify({ ...rc, pid: 4_000_000 }));
    assert.equal(await readRunningConfig(dir), undefined, "stale");
    await writeRunningConfig(dir, rc);
    await removeRunningConfig(dir);
    assert.equal(existsSync(runningConfigPath(dir)), false);
  });
});

describe("start-up on a full 4 MiB tmpfs", { skip: cannotMount }, () => {
  let disk: SmallDisk;
  let n = 0;
  const fullDataDir = async (withReserve: boolean) => {
    for (const name of readdirSync(disk.dir)) rmSync(join(disk.dir, name), { recursive: true, force: true });
    const d = join(disk.dir, `data-${++n}`);
    mkdirSync(d);
    if (withReserve) assert.equal(await new Reserve(d).ensure(), true);
    disk.fill(0);
    assert.equal(disk.free(), 0, "the disk is full");
    return d;
  };
  before(() => {
    disk = mountSmallDisk(4);
  });
  after(() => disk?.unmount());

  test("without a reserve the write fails with ENOSPC and leaves no runningconfig.<pid>.tmp", async () => {
    const d = await fullDataDir(false);
    await assert.rejects(writeRunningConfig(d, rc, new Reserve(d)), (err: unknown) => isNoSpace(err));
    assert.deepEqual(readdirSync(d), []);
  });

  test("with the reserve it succeeds: the reserve is released and the write retried", async () => {
    const d = await fullDataDir(true);
    await writeRunningConfig(d, rc, new Reserve(d));
    assert.deepEqual(JSON.parse(readFileSync(runningConfigPath(d), "utf8")), rc);
    assert.deepEqual(readdirSync(d).sort(), ["runningconfig"], "reserve gone, no temp file");
  });

  test("leftover temp files of an earlier run are removed (no free space needed), nothing else", async () => {
    const d = join(disk.dir, "left");
    for (const name of readdirSync(disk.dir)) rmSync(join(disk.dir, name), { recursive: true, force: true });
    mkdirSync(join(d, "state"), { recursive: true });
    const keep = ["runningconfig", "lock", "reserve", "agent.log", "runningconfig.tmp", "state/file%3Aauth.json", "state/x.json.tmp"];
    const leftovers = ["runningconfig.4000000.tmp", "reserve.tmp", "state/file%3Aauth.json.tmp-4000000-7", "state/misp.json.tmp-12-1"];
    for (const f of [...keep, ...leftovers]) writeFileSync(join(d, f), "{}");
    disk.fill(0);
    assert.equal(disk.free(), 0);
    const removed = await removeLeftoverTempFiles(d);
    assert.deepEqual(removed.map((p) => p.slice(d.length + 1)).sort(), [...leftovers].sort());
    for (const f of keep) assert.ok(existsSync(join(d, f)), `${f} kept`);
    assert.deepEqual(await removeLeftoverTempFiles(join(disk.dir, "no-such-dir")), [], "a missing data_dir is fine");
  });

  test("log lines to a full disk (the daemon's agent.log) are lost; the process goes on", async () => {
    for (const name of readdirSync(disk.dir)) rmSync(join(disk.dir, name), { recursive: true, force: true });
    const logUrl = pathToFileURL(join(dirname(fileURLToPath(import.meta.url)), "..", "agent", "log.ts")).href;
    const script = join(tmpdir(), `logger-${process.pid}-${++n}.ts`);
    writeFileSync(script, `
import { createLogger } from ${JSON.stringify(logUrl)};
const log = createLogger("info");
for (let i = 0; i < 3000; i++) log.info("line " + i, { pad: "p".repeat(1000) });
await new Promise((r) => setTimeout(r, 200));
for (let i = 0; i < 100; i++) log.error("after the disk filled " + i);
await new Promise((r) => setTimeout(r, 200));
console.log("alive");
`);
    disk.fill(64 * 1024);
    const logFd = openSync(join(disk.dir, "agent.log"), "a");
    const child = spawn(process.execPath, [...(isDeno() ? ["run", "-A"] : []), script], { stdio: ["ignore", "pipe", logFd] });
    closeSync(logFd);
    let out = "";
    child.stdout!.on("data", (b) => (out += b));
    const code = await new Promise<number | null>((r) => child.once("exit", (c) => r(c)));
    rmSync(script, { force: true });
    assert.equal(disk.free(), 0, "the log filled the disk");
    assert.equal(out.trim(), "alive");
    assert.equal(code, 0);
  });
});
