import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { appendFile, copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, truncate, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import plugin from "./index.ts";
import { LineSplitter, toJsonEvents } from "./lines.ts";
import { Spool } from "../../agent/spool.ts";
import { StateStore } from "../../agent/state.ts";
import { createInputContext } from "../../agent/context.ts";
import type { InputCounters } from "../../agent/context.ts";
import { silentLogger } from "../../agent/log.ts";
import { drainSpool, runInput } from "../../test/plugin-harness.ts";

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "../../test/fixtures");
const enc = (s: string) => new TextEncoder().encode(s);
const lines = (prefix: string, from: number, to: number) => {
  const out: string[] = [];
  for (let i = from; i < to; i++) out.push(`${prefix} line ${i} Failed password for root from 10.0.${i % 256}.${i % 199} port ${1024 + i} ssh2`);
  return out;
};
const text = (ls: string[]) => ls.map((l) => l + "\n").join("");

// ---- line assembly -------------------------------------------------------------------------

function splitAll(chunks: Uint8Array[], max = 1 << 20): { out: string[]; splitter: LineSplitter } {
  const splitter = new LineSplitter(max);
  const out: string[] = [];
  for (const c of chunks) splitter.push(c, out);
  return { out, splitter };
}

test("lines: the same lines whatever the chunking, CRLF and multi-byte characters included", () => {
  const input = enc("première ligne\r\n\nzweite Zeile ü€😀\nthird\r\n\r\nlast without newline");
  const expected = ["première ligne", "zweite Zeile ü€😀", "third"];
  for (let size = 1; size <= input.length; size++) {
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < input.length; i += size) chunks.push(input.slice(i, i + size));
    const { out, splitter } = splitAll(chunks);
    assert.deepEqual(out, expected, `chunk size ${size}`);
    assert.equal(splitter.pendingBytes, enc("last without newline").length);
    const rest: string[] = [];
    splitter.flush(rest);
    assert.deepEqual(rest, ["last without newline"]);
  }
});

test("lines: invalid UTF-8 is replaced, not dropped", () => {
  const { out } = splitAll([new Uint8Array([0x61, 0xff, 0x62, 0x0a, 0xc3, 0x0a])]);
  assert.deepEqual(out, ["a\uFFFDb", "\uFFFD"]);
});

test("lines: a line over max_line_bytes is cut (at character boundaries) and counted once", () => {
  const long = "x" + "é".repeat(10); // 21 bytes; byte 8 is inside a character
  const whole = splitAll([enc(`${long}\nshort\n`)], 8);
  assert.deepEqual(whole.out, ["xééé", "éééé", "ééé", "short"]);
  assert.equal(whole.splitter.splitLines, 1);
  // The same line arriving in small pieces, without its newline for a while.
  const bytes = enc(`${long}\nshort\n`);
  const chunks = [bytes.slice(0, 3), bytes.slice(3, 12), bytes.slice(12, 19), bytes.slice(19)];
  const pieces = splitAll(chunks, 8);
  assert.deepEqual(pieces.out.join(""), long + "short");
  assert.ok(pieces.out.every((l) => enc(l).length <= 8));
  assert.equal(pieces.splitter.splitLines, 1);
});

test("json lines: objects stay as written, anything else becomes message + parse_error", () => {
  const out = toJsonEvents(['{"a": 1}', '{"a": ', "[1,2]", "plain text", "null"]);
  assert.equal(out[0], '{"a": 1}');
  for (const [i, line] of [[1, '{"a": '], [2, "[1,2]"], [3, "plain text"], [4, "null"]] as const) {
    const ev = JSON.parse(out[i]!);
    assert.equal(ev.message, line);
    assert.equal(typeof ev.parse_error, "string");
    assert.ok(ev.parse_error.length > 0);
  }
  assert.match(JSON.parse(out[2]!).parse_error, /array/);
});

test("options: defaults, units, required paths, unknown keys", () => {
  const o = plugin.options.parse({ paths: ["/var/log/auth.log"] });
  assert.deepEqual(o, {
    paths: ["/var/log/auth.log"], exclude: [], start_at: "beginning", format: "text", glob_interval: 1000,
    poll_interval: 250, max_line_bytes: 1 << 20, read_bytes: 1 << 20, close_inactive: 300_000,
  });
  assert.equal(plugin.options.safeParse({ paths: [] }).success, false);
  assert.equal(plugin.options.safeParse({}).success, false);
  assert.equal(plugin.options.safeParse({ paths: ["x"], start_at: "middle" }).success, false);
  assert.equal(plugin.options.safeParse({ paths: ["x"], poll_interval: "soon" }).success, false);
  assert.equal(plugin.options.safeParse({ paths: ["x"], follow: true }).success, false);
});

// ---- the input on real files and the real spool ---------------------------------------------

interface Env {
  dir: string;
  spool: Spool;
  state: StateStore;
  /** Every event the spool has received so far (in spool order). */
  events: Array<{ kind: string; event: string }>;
  collect(): Array<{ kind: string; event: string }>;
  waitForCount(n: number, ms?: number): Promise<void>;
  start(raw: Record<string, unknown>): { stop(): Promise<void>; counters: InputCounters };
}

async function withEnv(fn: (env: Env) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), "file-input-"));
  const spool = await Spool.open({ dir: join(dir, "spool"), maxBytes: 256 << 20, whenFull: "block", fsync: 5, log: silentLogger });
  const state = new StateStore(join(dir, "state"));
  const running: Array<() => Promise<void>> = [];
  const env: Env = {
    dir, spool, state, events: [],
    collect: () => drainSpool(spool, env.events),
    async waitForCount(n, ms = 5000) {
      const deadline = Date.now() + ms;
      while (env.collect().length < n) {
        if (Date.now() > deadline) assert.fail(`expected ${n} events, got ${env.events.length}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    },
    start(raw) {
      let ctx!: ReturnType<typeof createInputContext>;
      const { stop } = runInput((signal) => {
        ctx = createInputContext({ name: "logs", spool, state, route: "logs", log: silentLogger, signal, hostname: "test" });
        return plugin.create(plugin.options.parse({ glob_interval: "20ms", poll_interval: "5ms", ...raw }), ctx).run();
      });
      running.push(stop);
      return { stop, counters: ctx.counters };
    },
  };
  try {
    await fn(env);
  } finally {
    for (const stop of running) await stop();
    await spool.close();
    await rm(dir, { recursive: true, force: true });
  }
}

const texts = (env: Env) => env.collect().map((e) => e.event);
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits a while and checks that no more than `n` events arrived (nothing duplicated or extra). */
async function settlesAt(env: Env, n: number) {
  await env.waitForCount(n);
  await pause(100);
  assert.equal(env.collect().length, n);
}

test("text: lines written in pieces arrive whole; the unfinished last line waits for its newline", async () => {
  await withEnv(async (env) => {
    const path = join(env.dir, "auth.log");
    await writeFile(path, "first line\r\nsecond ");
    env.start({ paths: [path] });
    await env.waitForCount(1);
    await appendFile(path, "half");
    await pause(60);
    assert.deepEqual(texts(env), ["first line"]);
    await appendFile(path, " done\n\n\nthird\nfour");
    await appendFile(path, "th\n");
    await settlesAt(env, 4);
    assert.deepEqual(texts(env), ["first line", "second half done", "third", "fourth"]);
    assert.ok(env.events.every((e) => e.kind === "text"));
  });
});

test("json: cowrie events pass through as written; a broken line becomes a parse_error event", async () => {
  await withEnv(async (env) => {
    const cowrie = (await readFile(join(FIXTURES, "cowrie/cowrie.json"), "utf8")).trimEnd().split("\n");
    const path = join(env.dir, "cowrie.json");
    await writeFile(path, text(cowrie) + '{"eventid":"cowrie.login.failed","username":\n');
    env.start({ paths: [path], format: "json" });
    await settlesAt(env, cowrie.length + 1);
    const got = env.collect();
    assert.ok(got.every((e) => e.kind === "json"));
    assert.deepEqual(got.slice(0, cowrie.length).map((e) => e.event), cowrie);
    assert.deepEqual(JSON.parse(got[3]!.event).message, []); // cowrie's `message` can be an array
    const broken = JSON.parse(got[cowrie.length]!.event);
    assert.equal(broken.message, '{"eventid":"cowrie.login.failed","username":');
    assert.equal(typeof broken.parse_error, "string");
  });
});

test("start_at = end: only lines written after the start arrive (an unfinished line is read whole)", async () => {
  await withEnv(async (env) => {
    const path = join(env.dir, "app.log");
    await writeFile(path, text(lines("old", 0, 50)) + "being wri");
    env.start({ paths: [path], start_at: "end" });
    await pause(80);
    await appendFile(path, "tten\n" + text(lines("new", 0, 3)));
    await settlesAt(env, 4);
    assert.deepEqual(texts(env), ["being written", ...lines("new", 0, 3)]);
  });
});

test("restart resumes at the checkpoint: no duplicates, no losses, also when stopped mid-file", async () => {
  await withEnv(async (env) => {
    const path = join(env.dir, "big.log");
    const all = lines("big", 0, 20_000);
    await writeFile(path, text(all.slice(0, 15_000)));
    // Small reads so the stop lands in the middle of the file.
    let input = env.start({ paths: [path], read_bytes: "4KiB" });
    await env.waitForCount(500);
    await input.stop();
    const afterFirst = env.collect().length;
    assert.ok(afterFirst < 15_000, "stopped mid-file");
    await appendFile(path, text(all.slice(15_000, 18_000)));
    input = env.start({ paths: [path], start_at: "end" }); // start_at does not apply to a checkpointed file
    await env.waitForCount(18_000);
    await input.stop();
    await appendFile(path, text(all.slice(18_000)));
    env.start({ paths: [path] });
    await settlesAt(env, all.length);
    assert.deepEqual(texts(env), all);
    const saved = await env.state.load<{ files: Record<string, { path: string; offset: number }> }>("logs");
    assert.equal(Object.keys(saved!.files).length, 1);
  });
});

test("rename rotation: the old file is read to its end, the new file at the path from its start", async () => {
  await withEnv(async (env) => {
    const path = join(env.dir, "auth.log");
    await writeFile(path, text(lines("a", 0, 100)));
    env.start({ paths: [path] });
    await env.waitForCount(100);
    // The writer keeps writing to the renamed file for a moment before it reopens the path.
    await appendFile(path, text(lines("a", 100, 150)));
    await rename(path, path + ".1");
    await appendFile(path + ".1", text(lines("a", 150, 160)));
    await writeFile(path, text(lines("b", 0, 70)));
    await settlesAt(env, 230);
    const got = texts(env);
    assert.deepEqual(got.filter((l) => l.startsWith("a ")), lines("a", 0, 160));
    assert.deepEqual(got.filter((l) => l.startsWith("b ")), lines("b", 0, 70));
  });
});

test("rename rotation within the glob: the renamed file keeps its offset, nothing is read twice", async () => {
  await withEnv(async (env) => {
    const path = join(env.dir, "app.log");
    await writeFile(path, text(lines("a", 0, 40)));
    env.start({ paths: [path + "*"] });
    await env.waitForCount(40);
    await rename(path, path + ".1");
    await writeFile(path, text(lines("b", 0, 5)));
    await appendFile(path + ".1", text(lines("a", 40, 45)));
    await settlesAt(env, 50);
    const got = texts(env);
    assert.deepEqual(got.filter((l) => l.startsWith("a ")), lines("a", 0, 45));
    assert.deepEqual(got.filter((l) => l.startsWith("b ")), lines("b", 0, 5));
  });
});

test("copytruncate: after the file is truncated, the new lines arrive (shorter or longer than before)", async () => {
  await withEnv(async (env) => {
    const path = join(env.dir, "app.log");
    await writeFile(path, text(lines("a", 0, 30)));
    env.start({ paths: [path] });
    await env.waitForCount(30);
    await truncate(path, 0);
    await pause(50);
    await appendFile(path, text(lines("b", 0, 3)));
    await env.waitForCount(33);
    // Truncated and written past the old size at once: the changed first bytes give it away.
    await truncate(path, 0);
    await appendFile(path, text(lines("c", 0, 60)));
    await settlesAt(env, 93);
    assert.deepEqual(texts(env), [...lines("a", 0, 30), ...lines("b", 0, 3), ...lines("c", 0, 60)]);
  });
});

test("copytruncate while stopped, with the copy matched by the glob: the copy resumes at the old offset", async () => {
  await withEnv(async (env) => {
    const path = join(env.dir, "auth.log");
    await writeFile(path, text(lines("a", 0, 40))); // well over the 1 KiB fingerprint
    let input = env.start({ paths: [path + "*"] });
    await env.waitForCount(40);
    await input.stop();
    await appendFile(path, text(lines("a", 40, 50)));
    await copyFile(path, path + ".1");
    await truncate(path, 0);
    await appendFile(path, text(lines("b", 0, 5)));
    input = env.start({ paths: [path + "*"] });
    await settlesAt(env, 55);
    const got = texts(env);
    assert.deepEqual(got.filter((l) => l.startsWith("a ")), lines("a", 0, 50));
    assert.deepEqual(got.filter((l) => l.startsWith("b ")), lines("b", 0, 5));
  });
});

test("start_at = end: a file rotated while the input was stopped is read from its start", async () => {
  await withEnv(async (env) => {
    const path = join(env.dir, "auth.log");
    await writeFile(path, text(lines("old", 0, 50)));
    let input = env.start({ paths: [path], start_at: "end" });
    await pause(80);
    await appendFile(path, text(lines("a", 0, 10)));
    await env.waitForCount(10);
    await input.stop();
    await appendFile(path, text(lines("a", 10, 20)));
    await copyFile(path, path + ".1"); // copytruncate, the copy matched by the glob
    await truncate(path, 0);
    await appendFile(path, text(lines("b", 0, 5)));
    input = env.start({ paths: [path + "*"], start_at: "end" });
    await settlesAt(env, 25);
    const got = texts(env);
    assert.deepEqual(got.filter((l) => l.startsWith("a ")), lines("a", 0, 20));
    assert.deepEqual(got.filter((l) => l.startsWith("b ")), lines("b", 0, 5));
  });
});

test("a new file in place of a checkpointed one (inode possibly reused) is read from its start", async () => {
  await withEnv(async (env) => {
    const path = join(env.dir, "app.log");
    await writeFile(path, text(lines("a", 0, 20)));
    let input = env.start({ paths: [path] });
    await env.waitForCount(20);
    await input.stop();
    await unlink(path);
    await writeFile(path, text(lines("b", 0, 40))); // longer than the old offset
    input = env.start({ paths: [path] });
    await settlesAt(env, 60);
    assert.deepEqual(texts(env), [...lines("a", 0, 20), ...lines("b", 0, 40)]);
  });
});

test("a deleted file is read to its end and closed", async () => {
  await withEnv(async (env) => {
    const path = join(env.dir, "gone.log");
    await writeFile(path, text(lines("a", 0, 10)));
    const input = env.start({ paths: [path] });
    await env.waitForCount(10);
    await appendFile(path, text(lines("a", 10, 20)) + "unfinished");
    await unlink(path);
    await settlesAt(env, 21);
    assert.deepEqual(texts(env), [...lines("a", 0, 20), "unfinished"]);
    const deadline = Date.now() + 3000;
    while (input.counters.detail.files !== 0) {
      if (Date.now() > deadline) assert.fail(`file still followed: ${JSON.stringify(input.counters.detail)}`);
      await pause(10);
    }
  });
});

test("a file created later that matches the glob is read from its start; excluded files are not", async () => {
  await withEnv(async (env) => {
    env.start({ paths: [join(env.dir, "logs/**/*.log")], exclude: ["debug*"], start_at: "end" });
    await pause(60);
    const { mkdir } = await import("node:fs/promises");
    await mkdir(join(env.dir, "logs/nginx"), { recursive: true });
    await writeFile(join(env.dir, "logs/nginx/access.log"), text(lines("n", 0, 5)));
    await writeFile(join(env.dir, "logs/nginx/debug.log"), text(lines("d", 0, 5)));
    await settlesAt(env, 5);
    assert.deepEqual(texts(env), lines("n", 0, 5));
  });
});

test("200 files are all read completely, and later lines of every file arrive", async () => {
  await withEnv(async (env) => {
    const want: string[] = [];
    for (let i = 0; i < 200; i++) {
      const ls = lines(`f${i}`, 0, 50);
      want.push(...ls);
      await writeFile(join(env.dir, `host-${i}.log`), text(ls));
    }
    env.start({ paths: [join(env.dir, "host-*.log")], read_bytes: "2KiB" });
    await env.waitForCount(want.length);
    for (let i = 0; i < 200; i++) {
      const ls = lines(`f${i}`, 50, 52);
      want.push(...ls);
      await appendFile(join(env.dir, `host-${i}.log`), text(ls));
    }
    await settlesAt(env, want.length);
    assert.deepEqual([...texts(env)].sort(), want.sort());
  });
});

test("reads are fair: a huge file does not hold back a small one", async () => {
  await withEnv(async (env) => {
    await writeFile(join(env.dir, "a-huge.log"), text(lines("h", 0, 40_000)));
    await writeFile(join(env.dir, "b-small.log"), text(lines("s", 0, 3)));
    env.start({ paths: [join(env.dir, "*.log")], read_bytes: "16KiB" });
    await env.waitForCount(40_003, 10_000);
    const got = texts(env);
    // With 16 KiB turns, the small file's lines come within the first few turns of the huge one.
    const firstSmall = got.findIndex((l) => l.startsWith("s "));
    assert.ok(firstSmall >= 0 && firstSmall < 1000, `small file first seen at event ${firstSmall}`);
  });
});

test("the bundled auth.log sample arrives line for line", async () => {
  await withEnv(async (env) => {
    const sample = join(FIXTURES, "sample/auth.log");
    const want = (await readFile(sample, "utf8")).trimEnd().split("\n");
    env.start({ paths: [sample] });
    await settlesAt(env, want.length);
    assert.deepEqual(texts(env), want);
  });
});

// Debian's logrotate rotating a file while it is being written: four times by rename + create,
// once by copytruncate, and a file that appears later under the glob. Every line must arrive.
const LOGROTATE = ["/usr/sbin/logrotate", "/sbin/logrotate"].find((p) => existsSync(p));

test("logrotate: rename+create four times, copytruncate once, a late file — every line arrives", { skip: LOGROTATE ? false : "logrotate is not installed (apt-get install logrotate)" }, async () => {
  await withEnv(async (env) => {
    const logs = join(env.dir, "logs");
    await mkdir(logs);
    const app = join(logs, "app.log");
    await writeFile(app, "");
    const conf = (mode: string) => {
      const path = join(env.dir, `${mode}.conf`);
      return writeFile(path, `${app} {\n  rotate 20\n  ${mode}\n  missingok\n  nocompress\n}\n`).then(() => path);
    };
    const createConf = await conf("create");
    const truncConf = await conf("copytruncate");
    const rotate = (confPath: string) =>
      new Promise<void>((resolve, reject) =>
        execFile(LOGROTATE!, ["-f", "-s", join(env.dir, "logrotate.state"), confPath], (err, _o, stderr) => (err ? reject(new Error(stderr || String(err))) : resolve())),
      );
    env.start({ paths: [join(logs, "*.log*")] });

    const total = 6000;
    const want = lines("rot", 0, total);
    let paused = false;
    const writer = (async () => {
      for (let i = 0; i < total; i += 100) {
        while (paused) await pause(1);
        await appendFile(app, text(want.slice(i, i + 100)));
        await pause(4);
      }
    })();
    for (let r = 0; r < 4; r++) {
      await pause(40);
      await rotate(createConf);
    }
    // copytruncate itself loses what is written between its copy and its truncate (logrotate's
    // documentation says so), so the writer holds still for that one moment.
    await pause(40);
    paused = true;
    await pause(10);
    await rotate(truncConf);
    paused = false;
    await writer;
    const late = lines("late", 0, 500);
    await writeFile(join(logs, "late.log"), text(late));

    const expected = [...want, ...late];
    await env.waitForCount(expected.length, 20_000);
    await pause(200);
    const got = texts(env);
    const missing = expected.filter((l) => !got.includes(l));
    assert.deepEqual(missing, [], `${missing.length} lines missing`);
    const seen = new Set<string>();
    const twice = got.filter((l) => (seen.has(l) ? true : (seen.add(l), false)));
    assert.deepEqual(twice.slice(0, 5), [], `${twice.length} lines twice`);
    assert.ok((await readdir(logs)).filter((f) => /^app\.log\.\d+$/.test(f)).length >= 5, "logrotate rotated five times");
  });
});
