// Rotation faster than any listing: files created, written and renamed out of the globs (or
// copied and truncated) several times a second, with glob_interval far longer than the test,
// so only the watched directories' events can find each new file in time. Every line must
// arrive exactly once.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { appendFileSync, chmodSync, copyFileSync, existsSync, renameSync, truncateSync, writeFileSync } from "node:fs";
import { appendFile, copyFile, mkdir, readdir, rename, rm, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import plugin from "./index.ts";
import { withInputEnv, type InputTestEnv } from "../../test/testing/plugin-harness.ts";
import { until } from "../../test/testing/until.ts";
import { isDeno } from "../../agent/runtime/detect.ts";
import { errorMessage } from "../../agent/errortext.ts";

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
const LOGROTATE = ["/usr/sbin/logrotate", "/sbin/logrotate", "/usr/bin/logrotate"].find((p) => existsSync(p));

/** Lines unique across the whole test: `tag` names the file they are written to. */
const lines = (tag: string, n: number) =>
  Array.from({ length: n }, (_, i) => `${tag} line ${i} Failed password for root from 10.0.${i % 256}.${i % 199} port ${1024 + i} ssh2`);
const text = (ls: string[]) => ls.map((l) => l + "\n").join("");

/** Writes `ls` to `path` in `pieces` appends, as a logger does, yielding between them. */
async function writeInPieces(path: string, ls: string[], pieces = 5): Promise<void> {
  const step = Math.ceil(ls.length / pieces);
  for (let i = 0; i < ls.length; i += step) await appendFile(path, text(ls.slice(i, i + step)));
}

/** Only the first listing happens during a test: the one at start. */
const SLOW_LISTING = { glob_interval: "60s", poll_interval: "250ms" };

/** Fails naming how many lines are missing or repeated, and the first of each. */
function assertEachOnce(got: string[], want: string[]): void {
  const seen = new Set<string>();
  const twice = got.filter((l) => (seen.has(l) ? true : (seen.add(l), false)));
  const missing = want.filter((l) => !seen.has(l));
  assert.deepEqual(
    { missing: missing.length, twice: twice.length },
    { missing: 0, twice: 0 },
    `${want.length} written, ${got.length} arrived; first missing: ${missing[0]}; first twice: ${twice[0]}`,
  );
  assert.equal(got.length, want.length);
}

/** Collects events until `want` have arrived (or the deadline), then a little longer for strays, and checks each came once. */
async function expectEachOnce(env: InputTestEnv, got: string[], want: string[], ms = 20_000): Promise<void> {
  const collect = () => {
    for (const e of env.events()) got.push(e.event);
    return got.length >= want.length;
  };
  await until(collect, `${want.length} lines (${got.length} so far)`, ms).catch(() => {});
  await pause(300);
  collect();
  try {
    assertEachOnce(got, want);
  } catch (err) {
    // What the input said about the files tells which rotation step it missed.
    const said = env.logs.filter((l) => !l.includes('"level":"debug"')).slice(-25).join("\n");
    throw new Error(`${errorMessage(err)}\ninput log:\n${said}`);
  }
}

async function logsDir(env: InputTestEnv): Promise<string> {
  const logs = join(env.dir, "logs");
  await mkdir(logs, { recursive: true });
  return logs;
}

/**
 * `rotations` times: app.log is created, `n` lines are written to it, and it is renamed to
 * app.log.<r> (which the glob "*.log" does not match); `everyMs` apart.
 */
async function renameRotations(logs: string, rotations: number, n: number, everyMs: number, tag = "r"): Promise<string[]> {
  const app = join(logs, "app.log");
  const written: string[] = [];
  for (let r = 1; r <= rotations; r++) {
    const ls = lines(`${tag}${r}`, n);
    await writeInPieces(app, ls);
    written.push(...ls);
    await rename(app, `${app}.${r}`);
    await pause(everyMs);
  }
  return written;
}

test("rename rotation 10 times a second (5,000 lines each, renamed out of the glob), glob_interval 60s: every line arrives once, and a late file", async () => {
  await withInputEnv(plugin, { name: "logs" }, async (env) => {
    const logs = await logsDir(env);
    env.start({ paths: [join(logs, "*.log")], ...SLOW_LISTING });
    await pause(100); // the first listing is done: from now on only events find files
    const want = await renameRotations(logs, 10, 5000, 100);
    const late = lines("late", 500);
    await writeFile(join(logs, "late.log"), text(late));
    await expectEachOnce(env, [], [...want, ...late]);
    assert.equal((await readdir(logs)).filter((f) => /^app\.log\.\d+$/.test(f)).length, 10);
  });
});

test("rename+create rotation every 50 ms, the new app.log created empty first (logrotate's create), glob_interval 60s: every line arrives once", async () => {
  await withInputEnv(plugin, { name: "logs" }, async (env) => {
    const logs = await logsDir(env);
    const app = join(logs, "app.log");
    await writeFile(app, "");
    env.start({ paths: [join(logs, "*.log")], ...SLOW_LISTING });
    await pause(100);
    const want: string[] = [];
    for (let r = 1; r <= 20; r++) {
      const ls = lines(`c${r}`, 1000);
      await writeInPieces(app, ls);
      want.push(...ls);
      await rename(app, `${app}.${r}`);
      await writeFile(app, ""); // create
      await pause(50);
    }
    const last = lines("after", 100);
    await appendFile(app, text(last));
    await expectEachOnce(env, [], [...want, ...last]);
  });
});

test("copytruncate 10 times a second (copy out of the glob, then truncate), glob_interval 60s: every line arrives once, and a late file", async () => {
  await withInputEnv(plugin, { name: "logs" }, async (env) => {
    const logs = await logsDir(env);
    const app = join(logs, "app.log");
    await writeFile(app, "");
    env.start({ paths: [join(logs, "*.log")], ...SLOW_LISTING });
    await pause(100);
    const want: string[] = [];
    for (let r = 1; r <= 10; r++) {
      const ls = lines(`t${r}`, 5000);
      await writeInPieces(app, ls);
      want.push(...ls);
      // What the input has not read when the file is truncated is only in the copy now.
      await copyFile(app, `${app}.${r}`);
      await truncate(app, 0);
      await pause(100);
    }
    const last = lines("after", 100);
    await appendFile(app, text(last));
    const late = lines("late", 500);
    await writeFile(join(logs, "late.log"), text(late));
    await expectEachOnce(env, [], [...want, ...last, ...late]);
  });
});

test("copytruncate with the copies matched by the glob (app.log*), 10 times a second: each copy starts where its original ended, every line once", async () => {
  await withInputEnv(plugin, { name: "logs" }, async (env) => {
    const logs = await logsDir(env);
    const app = join(logs, "app.log");
    await writeFile(app, "");
    env.start({ paths: [join(logs, "app.log*")], ...SLOW_LISTING });
    await pause(100);
    const want: string[] = [];
    for (let r = 1; r <= 10; r++) {
      const ls = lines(`g${r}`, 3000);
      await writeInPieces(app, ls);
      want.push(...ls);
      await copyFile(app, `${app}.${r}`);
      await truncate(app, 0);
      await pause(100);
    }
    await expectEachOnce(env, [], want);
  });
});

test("Debian logrotate 10 times a second: rename+create five times, copytruncate five times, then a late file; glob_interval 60s; every line arrives once", { skip: LOGROTATE ? false : "logrotate is not installed (apt-get install logrotate)" }, async () => {
  await withInputEnv(plugin, { name: "logs" }, async (env) => {
    const logs = await logsDir(env);
    const app = join(logs, "app.log");
    await writeFile(app, "");
    const conf = async (mode: string) => {
      const path = join(env.dir, `${mode}.conf`);
      await writeFile(path, `${app} {\n  rotate 50\n  ${mode}\n  missingok\n  nocompress\n}\n`);
      return path;
    };
    const createConf = await conf("create");
    const truncConf = await conf("copytruncate");
    const rotate = (confPath: string) =>
      new Promise<void>((resolve, reject) =>
        execFile(LOGROTATE!, ["-f", "-s", join(env.dir, "logrotate.state"), confPath], (err, _o, stderr) => (err ? reject(new Error(stderr || String(err))) : resolve())),
      );
    env.start({ paths: [join(logs, "*.log")], ...SLOW_LISTING });
    await pause(100);
    const want: string[] = [];
    for (let r = 1; r <= 10; r++) {
      const ls = lines(`lr${r}`, 3000);
      await writeInPieces(app, ls);
      want.push(...ls);
      const started = Date.now();
      await rotate(r <= 5 ? createConf : truncConf);
      await pause(Math.max(0, 100 - (Date.now() - started)));
    }
    const late = lines("late", 500);
    await writeFile(join(logs, "late.log"), text(late));
    await expectEachOnce(env, [], [...want, ...late]);
    assert.equal((await readdir(logs)).filter((f) => /^app\.log\.\d+$/.test(f)).length, 10, "logrotate rotated ten times");
  });
});

/** Waits `ms`, or (0) only lets the event loop turn once. */
const gap = (ms: number) => (ms === 0 ? new Promise((r) => setImmediate(r)) : pause(ms));

/** Writes `ls` to `path` in `pieces` synchronous appends: nothing of the input runs in between. */
function burst(path: string, ls: string[], pieces = 5): void {
  const step = Math.ceil(ls.length / pieces);
  for (let i = 0; i < ls.length; i += step) appendFileSync(path, text(ls.slice(i, i + step)));
}

test("a file created, written and renamed out of the globs in one burst, before any event about it is handled, at spacings 0-100 ms: every line arrives once", async () => {
  await withInputEnv(plugin, { name: "logs" }, async (env) => {
    const logs = await logsDir(env);
    const app = join(logs, "app.log");
    env.start({ paths: [join(logs, "*.log")], ...SLOW_LISTING });
    await pause(100);
    const want: string[] = [];
    let r = 0;
    for (const spacing of [0, 0, 10, 10, 50, 100]) {
      r++;
      const ls = lines(`burst${r}`, 3000);
      burst(app, ls);
      renameSync(app, `${app}.${r}`);
      want.push(...ls);
      await gap(spacing);
    }
    await expectEachOnce(env, [], want);
  });
});

test("copytruncate of a file created and written a moment before (0 ms to 20 ms), before or after the input opened it: every line arrives once", async () => {
  await withInputEnv(plugin, { name: "logs" }, async (env) => {
    const logs = await logsDir(env);
    const app = join(logs, "app.log");
    env.start({ paths: [join(logs, "*.log")], ...SLOW_LISTING });
    await pause(100);
    const want: string[] = [];
    let r = 0;
    for (const before of [-1, 0, 1, 5, 20]) {
      r++;
      const ls = lines(`ct${r}`, 3000);
      burst(app, ls);
      want.push(...ls);
      // -1: in the same burst, so the input never sees the file with its lines in it.
      if (before >= 0) await gap(before);
      copyFileSync(app, `${app}.${r}`);
      truncateSync(app, 0);
      await pause(100);
      const after = lines(`after${r}`, 10);
      appendFileSync(app, text(after));
      want.push(...after);
      await pause(50);
      // the next round starts with a new file, as after a rename
      renameSync(app, `${app}.${r}.old`);
      await pause(50);
    }
    await expectEachOnce(env, [], want);
  });
});

test("a file read to its end and closed as idle, then renamed out of the globs: nothing of it is sent again (short and long files)", async () => {
  await withInputEnv(plugin, { name: "logs" }, async (env) => {
    const logs = await logsDir(env);
    env.start({ paths: [join(logs, "*.log")], ...SLOW_LISTING, close_inactive: "200ms" });
    await pause(100);
    const short = lines("short", 3);
    const long = lines("long", 2000);
    writeFileSync(join(logs, "short.log"), text(short));
    writeFileSync(join(logs, "long.log"), text(long));
    const got: string[] = [];
    await expectEachOnce(env, got, [...short, ...long]);
    await pause(600); // closed as idle by now
    renameSync(join(logs, "short.log"), join(logs, "short.log.1"));
    renameSync(join(logs, "long.log"), join(logs, "long.log.1"));
    await pause(500);
    const more = lines("more", 5);
    writeFileSync(join(logs, "short.log"), text(more));
    await expectEachOnce(env, got, [...short, ...long, ...more]);
  });
});

test("files that are not copies of an emptied file are not read: one created empty and chmod-ed, a compressed rotation, one named after an emptied file but written after it was emptied", async () => {
  await withInputEnv(plugin, { name: "logs" }, async (env) => {
    const logs = await logsDir(env);
    const app = join(logs, "app.log");
    const other = join(logs, "other.log");
    env.start({ paths: [join(logs, "*.log")], ...SLOW_LISTING });
    await pause(100);
    // Created empty, its mode changed (logrotate's create): the next file named after it is no copy.
    writeFileSync(app, "");
    chmodSync(app, 0o640);
    await pause(50);
    writeFileSync(`${app}.1.gz`, text(lines("gz", 50)));
    writeFileSync(`${app}.1`, text(lines("notacopy", 50)));
    // Written and emptied in one burst, then a file named after it written later: not its copy.
    burst(other, lines("gone", 10));
    truncateSync(other, 0);
    await pause(100);
    writeFileSync(`${other}.1`, text(lines("later", 50)));
    await pause(300);
    const want = lines("real", 20);
    appendFileSync(app, text(want));
    await expectEachOnce(env, [], want);
  });
});

// Deno's watcher drops and reorders events when the machine is busy (the full suite under
// Deno lost one of these rotations in CI, never when run alone); under Bun, as in the
// compiled executable, inotify's events come whole and in order.
const UNDER_DENO = isDeno() ? "Deno's watcher can drop the events of a directory made again at once (see the file input's README)" : false;

test("a glob's directory made after the start, then removed and made again (with its parent, then alone): files in it are found at once, also when renamed away quickly (glob_interval 60s)", { skip: UNDER_DENO }, async () => {
  await withInputEnv(plugin, { name: "logs" }, async (env) => {
    const logs = join(env.dir, "var", "logs");
    env.start({ paths: [join(logs, "*.log")], ...SLOW_LISTING });
    await pause(100);
    await mkdir(logs, { recursive: true });
    const want = await renameRotations(logs, 3, 2000, 50, "first");
    const got: string[] = [];
    await expectEachOnce(env, got, want);
    await rm(join(env.dir, "var"), { recursive: true });
    await pause(50);
    await mkdir(logs, { recursive: true });
    const again = await renameRotations(logs, 3, 2000, 50, "again");
    await expectEachOnce(env, got, [...want, ...again]);
    // The directory itself this time, its parent staying.
    await rm(logs, { recursive: true });
    await pause(50);
    await mkdir(logs);
    const third = await renameRotations(logs, 3, 2000, 50, "third");
    await expectEachOnce(env, got, [...want, ...again, ...third]);
  });
});

test("2,000 files created at once in a watched directory (more than max_open_files): every line arrives once", async () => {
  await withInputEnv(plugin, { name: "logs" }, async (env) => {
    const logs = await logsDir(env);
    env.start({ paths: [join(logs, "*.log")], ...SLOW_LISTING, max_open_files: 500, close_inactive: "200ms" });
    await pause(100);
    const want: string[] = [];
    await Promise.all(Array.from({ length: 2000 }, (_, i) => {
      const ls = lines(`b${i}`, 3);
      want.push(...ls);
      return writeFile(join(logs, `host-${i}.log`), text(ls));
    }));
    await expectEachOnce(env, [], want, 30_000);
  });
});
