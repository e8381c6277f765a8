import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { appendFile, copyFile, mkdir, mkdtemp, open, readdir, readFile, rename, rm, truncate, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import plugin from "./index.ts";
import { LineSplitter, toJsonEvents } from "./lines.ts";
import { MultilineJoiner } from "./multiline.ts";
import { codecFor } from "./encoding.ts";
import { Spool } from "../../agent/spool/index.ts";
import { StateStore } from "../../agent/state.ts";
import { createInputContext } from "../../agent/context.ts";
import type { InputCounters } from "../../agent/context.ts";
import { silentLogger } from "../../agent/log.ts";
import { ConfigError, parseConfig } from "../../agent/config.ts";
import { drainSpool, runInput } from "../../test/testing/plugin-harness.ts";

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "testdata");
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

test("lines: the same lines whatever the chunking, CRLF, byte-order marks and multi-byte characters included", () => {
  const input = enc("\uFEFFpremière ligne\r\n\nzweite Zeile ü€😀\n\uFEFFthird\r\n\r\nlast without newline");
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

/** Every way of cutting `input` into chunks of one size. */
function chunkings(input: Uint8Array, sizes: Iterable<number>): Array<[number, Uint8Array[]]> {
  const out: Array<[number, Uint8Array[]]> = [];
  for (const size of sizes) {
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < input.length; i += size) chunks.push(input.slice(i, i + size));
    out.push([size, chunks]);
  }
  return out;
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

test("lines: each line's end offset is reported exactly, whatever the chunking", () => {
  const input = enc("ab\r\n\nçé😀 x\nthird\n\nlast");
  // Offsets just after "ab\r\n" (4 bytes), "\n" (no event), "çé😀 x\n" (2+2+4+1+1+1) and "third\n".
  const wantEnds = [4, 16, 22];
  for (const [size, chunks] of chunkings(input, range(1, input.length + 1))) {
    const splitter = new LineSplitter(1 << 20);
    const out: string[] = [];
    const ends: number[] = [];
    let at = 0;
    for (const c of chunks) {
      splitter.push(c, out, ends, at);
      at += c.length;
    }
    assert.deepEqual(out, ["ab", "çé😀 x", "third"], `chunk size ${size}`);
    assert.deepEqual(ends, wantEnds, `chunk size ${size}`);
    splitter.flush(out, ends, at);
    assert.deepEqual([out.at(-1), ends.at(-1)], ["last", input.length]);
  }
  // Cut for length: each piece ends where the next begins.
  const cut = new LineSplitter(4);
  const out: string[] = [];
  const ends: number[] = [];
  cut.push(enc("abcdefghij\nk\n"), out, ends, 100);
  assert.deepEqual(out, ["abcd", "efgh", "ij", "k"]);
  assert.deepEqual(ends, [104, 108, 111, 113]);
});

test("lines: utf-16le (BOM, CRLF, surrogate pairs, odd chunk edges) and latin1 decode the same whatever the chunking", () => {
  const text = "\uFEFFfirst ü\r\n\r\nsecond 😀 \u010A\nthird";
  const bytes = new Uint8Array(text.length * 2);
  for (let i = 0; i < text.length; i++) {
    bytes[2 * i] = text.charCodeAt(i) & 0xff;
    bytes[2 * i + 1] = text.charCodeAt(i) >> 8;
  }
  for (const [size, chunks] of chunkings(bytes, range(1, bytes.length + 1))) {
    const splitter = new LineSplitter(1 << 20, codecFor("utf-16le"));
    const out: string[] = [];
    const ends: number[] = [];
    let at = 0;
    for (const c of chunks) {
      splitter.push(c, out, ends, at);
      at += c.length;
    }
    // U+010A is the bytes 0A 01: not a line break.
    assert.deepEqual(out, ["first ü", "second 😀 \u010A"], `chunk size ${size}`);
    // 10 code units (BOM, "first ü", CRLF), then an empty line (2 units), then 12 units.
    assert.deepEqual(ends, [20, 48], `chunk size ${size}`);
    assert.equal(splitter.pendingBytes, 10, `chunk size ${size}`);
    splitter.flush(out);
    assert.equal(out.at(-1), "third");
  }
  // A line cut for length keeps surrogate pairs whole.
  const cut = new LineSplitter(6, codecFor("utf-16le"));
  const out: string[] = [];
  const pairBytes = new Uint8Array([0x61, 0, 0x62, 0, 0x3d, 0xd8, 0x00, 0xde, 0x63, 0, 0x0a, 0]); // "ab😀c\n"
  cut.push(pairBytes, out);
  assert.deepEqual(out, ["ab", "😀c"]);

  const latin = new LineSplitter(1 << 20, codecFor("latin1"));
  const lout: string[] = [];
  latin.push(new Uint8Array([0x63, 0x61, 0x66, 0xe9, 0x20, 0x80, 0x0a, 0xff, 0x0a]), lout);
  assert.deepEqual(lout, ["café €", "ÿ"]);
});

test("multiline joiner: start lines begin events, others are added; size bound splits (counted once); held-back start is exact", () => {
  const j = new MultilineJoiner(/^\d{4}-/, 60, 0);
  const out: string[] = [];
  const lines = ["orphan continuation", "2024- first", "  at a", "  at b", "2024- second", "x".repeat(30), "y".repeat(30), "z".repeat(30)];
  const ends: number[] = [];
  let pos = 0;
  for (const l of lines) ends.push((pos += l.length + 1));
  j.push(lines.slice(0, 5), ends.slice(0, 5), out, 1);
  assert.deepEqual(out, ["orphan continuation", "2024- first\n  at a\n  at b"]);
  assert.equal(j.heldFrom, ends[3]);
  j.push(lines.slice(5), ends.slice(5), out, 2);
  // 13 + 31 + 31 bytes is over 60: the event is cut before the "y" line, and 31 + 31 again before the "z" line.
  assert.deepEqual(out.slice(2), ["2024- second\n" + "x".repeat(30), "y".repeat(30)]);
  assert.equal(j.splitEvents, 1);
  j.flush(out);
  assert.deepEqual(out.slice(4), ["z".repeat(30)]);
  assert.equal(j.splitEvents, 1);
  assert.equal(j.heldFrom, -1);
  assert.equal(j.lastLineAt, 2);
});

test("json lines with multiline: a pretty-printed object becomes one line of the same JSON", () => {
  const out = toJsonEvents(['{\n  "a": [1,\n 2],\n  "b": "x y"\n}', '{\n  "a": '], true);
  assert.equal(out[0], '{   "a": [1,  2],   "b": "x y" }');
  assert.deepEqual(JSON.parse(out[0]!), { a: [1, 2], b: "x y" });
  assert.equal(JSON.parse(out[1]!).message, '{\n  "a": ');
});

test("options: defaults, units, required paths, unknown keys", () => {
  const o = plugin.options.parse({ paths: ["/var/log/auth.log"] });
  assert.deepEqual(o, {
    paths: ["/var/log/auth.log"], exclude: [], start_at: "beginning", format: "text", glob_interval: 1000,
    poll_interval: 250, max_line_bytes: 1 << 20, read_bytes: 1 << 20, close_inactive: 300_000,
    close_removed_after: 5000, max_open_files: 1024, encoding: "utf-8",
  });
  assert.equal(plugin.options.safeParse({ paths: [] }).success, false);
  assert.equal(plugin.options.safeParse({}).success, false);
  assert.equal(plugin.options.safeParse({ paths: ["x"], start_at: "middle" }).success, false);
  assert.equal(plugin.options.safeParse({ paths: ["x"], poll_interval: "soon" }).success, false);
  assert.equal(plugin.options.safeParse({ paths: ["x"], follow: true }).success, false);
  const ml = plugin.options.parse({ paths: ["x"], multiline: { start_pattern: "^\\d" }, encoding: "utf-16le" });
  assert.deepEqual([ml.multiline, ml.encoding], [{ start_pattern: "^\\d", timeout: 1000 }, "utf-16le"]);
  assert.equal(plugin.options.safeParse({ paths: ["x"], encoding: "ebcdic" }).success, false);
  assert.equal(plugin.options.safeParse({ paths: ["x"], multiline: { start_pattern: "^x", negate: true } }).success, false);
  assert.equal(plugin.options.safeParse({ paths: ["x"], max_open_files: 0 }).success, false);
});

test("config: a bad multiline.start_pattern is an error naming the key", () => {
  const toml = (pattern: string) => `[api]\nurl = "http://127.0.0.1:1"\ntoken = "t"\norgid = "o"\n` +
    `[inputs.app]\ntype = "file"\ntypetag = "app"\npaths = ["/var/log/app.log"]\nmultiline = { start_pattern = '${pattern}', timeout = "2s" }\n`;
  const ok = parseConfig(toml("^\\d{4}-"), "/etc/agent.toml", { file: plugin }, {});
  assert.deepEqual(ok.inputs.get("app")!.options.multiline, { start_pattern: "^\\d{4}-", timeout: 2000 });
  assert.throws(() => parseConfig(toml("^(\\d{4}"), "/etc/agent.toml", { file: plugin }, {}), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.problems.length, 1);
    assert.match(err.problems[0]!, /inputs\.app\.multiline\.start_pattern: not a valid regular expression/);
    return true;
  });
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
        ctx = createInputContext({ name: "logs", spool, state, route: "logs", log: silentLogger, signal, hostname: "test", stateSchema: plugin.state });
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
    const cowrie = (await readFile(join(FIXTURES, "cowrie.json"), "utf8")).trimEnd().split("\n");
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

/**
 * A logger that reopens its path for every write (20 lines every few ms) while `rotate` is
 * called every `everyMs`; resolves with every line written once `rotations` are done.
 */
async function writeWhileRotating(path: string, everyMs: number, rotations: number, rotate: (r: number) => Promise<void>): Promise<string[]> {
  const written: string[] = [];
  let writing = true;
  const writer = (async () => {
    for (let i = 0; writing; i += 20) {
      const ls = lines("rot", i, i + 20);
      await appendFile(path, text(ls));
      written.push(...ls);
      await pause(3);
    }
  })();
  try {
    for (let r = 1; r <= rotations; r++) {
      await pause(everyMs);
      await rotate(r);
    }
  } finally {
    writing = false;
    await writer;
  }
  return written;
}

/** Fails naming how many lines are missing or repeated. */
function assertEachOnce(got: string[], want: string[]) {
  const seen = new Set<string>();
  const twice = got.filter((l) => (seen.has(l) ? true : (seen.add(l), false)));
  const missing = want.filter((l) => !seen.has(l));
  assert.deepEqual({ missing: missing.length, twice: twice.length }, { missing: 0, twice: 0 }, `first missing: ${missing[0]}; first twice: ${twice[0]}`);
  assert.equal(got.length, want.length);
}

test("rename+create rotation every 300 ms with glob_interval 5s: the new files are found at once, every line arrives once", async () => {
  await withEnv(async (env) => {
    const logs = join(env.dir, "logs");
    const app = join(logs, "app.log");
    await mkdir(logs);
    await writeFile(app, "");
    // Only the first listing happens during the test: each new app.log must be found through
    // its predecessor, before it too is renamed out of the glob 300 ms later.
    env.start({ paths: [join(logs, "app*.log")], glob_interval: "5s", poll_interval: "250ms" });
    const want = await writeWhileRotating(app, 300, 8, async (r) => {
      await rename(app, `${app}.${r}`);
      await appendFile(app, ""); // logrotate's "create" (without truncating what the writer may have put there already)
    });
    await env.waitForCount(want.length, 10_000);
    await pause(300);
    assertEachOnce(texts(env), want);
    assert.equal((await readdir(logs)).filter((f) => /^app\.log\.\d+$/.test(f)).length, 8);
  });
});

test("rename rotation with a glob matching the rotated names (app.log*): renamed files are not read again, every line arrives once", async () => {
  await withEnv(async (env) => {
    const logs = join(env.dir, "logs");
    const app = join(logs, "app.log");
    await mkdir(logs);
    await writeFile(app, "");
    env.start({ paths: [join(logs, "app.log*")], glob_interval: "1s", poll_interval: "250ms" });
    // logrotate's numbering: every rotation renames every rotated file again (app.log.1 ->
    // app.log.2, ...), faster than poll_interval, so files also appear under names not yet listed.
    const want = await writeWhileRotating(app, 100, 12, async (r) => {
      for (let n = r - 1; n >= 1; n--) await rename(`${app}.${n}`, `${app}.${n + 1}`);
      await rename(app, `${app}.1`);
      await appendFile(app, "");
    });
    await env.waitForCount(want.length, 10_000);
    await pause(1200); // a regular listing sees every file under its latest name
    assertEachOnce(texts(env), want);
  });
});

// ---- multiline events ----------------------------------------------------------------------

const STACK_START = "^\\d{4}-\\d{2}-\\d{2} ";

interface SavedState {
  files: Record<string, { path: string; offset: number }>;
}

/** Multiline text events arrive as JSON {"message": ...}: their messages. */
const messages = (env: Env) =>
  env.collect().map((e) => {
    assert.equal(e.kind, "json");
    const ev = JSON.parse(e.event);
    assert.deepEqual(Object.keys(ev), ["message"]);
    return ev.message as string;
  });

async function savedOffset(env: Env, path: string): Promise<number | undefined> {
  const saved = await env.state.load<SavedState>("logs");
  return Object.values(saved?.files ?? {}).find((f) => f.path === path)?.offset;
}

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await pause(5);
  }
}

test("multiline: Java and Python stack traces become exactly the expected events; the quiet period flushes the last one", async () => {
  await withEnv(async (env) => {
    const expected = JSON.parse(await readFile(join(FIXTURES, "multiline/expected.json"), "utf8")) as Record<string, string[]>;
    for (const name of ["java.log", "python.log"]) await copyFile(join(FIXTURES, "multiline", name), join(env.dir, name));
    // Small reads, so events straddle read boundaries.
    env.start({ paths: [join(env.dir, "*.log")], multiline: { start_pattern: STACK_START, timeout: "200ms" }, read_bytes: "1KiB" });
    const want = expected["java.log"]!.length + expected["python.log"]!.length;
    // The python file ends with a traceback: only the quiet period sends it.
    await settlesAt(env, want);
    const got = messages(env);
    assert.deepEqual(got.filter((e) => e.startsWith("2024-05-14 09:")), expected["java.log"]);
    assert.deepEqual(got.filter((e) => e.startsWith("2024-05-14 10:")), expected["python.log"]);
    assert.ok(expected["python.log"]!.at(-1)!.endsWith("Connection refused"));
  });
});

test("multiline: a restart while an event is being built loses nothing and repeats nothing", async () => {
  await withEnv(async (env) => {
    const path = join(env.dir, "app.log");
    const first = "2024-05-14 09:00:00,001 INFO started";
    const head = "2024-05-14 09:00:01,002 ERROR request failed\njava.lang.IllegalStateException: closed\n\tat a.B.c(B.java:1)\n";
    const tail = "\tat a.B.d(B.java:2)\n\tat a.B.e(B.java:3)\n";
    const third = "2024-05-14 09:00:02,003 INFO next";
    await writeFile(path, `${first}\n${head}`);
    // A quiet period longer than the test: only a start line or the end of the file completes an event.
    let input = env.start({ paths: [path], multiline: { start_pattern: STACK_START, timeout: "1h" } });
    await env.waitForCount(1);
    // The checkpoint stops where the event being built starts (what a crash would resume from).
    await waitFor(async () => (await savedOffset(env, path)) === enc(first + "\n").length, "the checkpoint at the held-back event");
    await input.stop();
    assert.deepEqual(messages(env), [first]);
    assert.equal(await savedOffset(env, path), enc(first + "\n").length);
    await appendFile(path, `${tail}${third}\n`);
    input = env.start({ paths: [path], multiline: { start_pattern: STACK_START, timeout: "1h" } });
    await settlesAt(env, 2);
    await input.stop();
    await appendFile(path, "2024-05-14 09:00:03,004 INFO last\n");
    env.start({ paths: [path], multiline: { start_pattern: STACK_START, timeout: "100ms" } });
    await settlesAt(env, 4);
    assert.deepEqual(messages(env), [first, (head + tail).trimEnd(), third, "2024-05-14 09:00:03,004 INFO last"]);
  });
});

test("multiline: the event being built is sent when its file is deleted; an oversized event is split and counted", async () => {
  await withEnv(async (env) => {
    const path = join(env.dir, "trace.log");
    const frames = Array.from({ length: 40 }, (_, i) => `\tat com.example.Frame${i}.call(Frame${i}.java:${i + 1})`);
    await writeFile(path, ["2024-05-14 09:00:00,000 ERROR boom", ...frames].join("\n") + "\n");
    const input = env.start({ paths: [path], multiline: { start_pattern: STACK_START, timeout: "1h" }, max_line_bytes: "1KiB" });
    await waitFor(() => env.collect().length >= 1, "the first part of the oversized event");
    await pause(50);
    await unlink(path);
    await waitFor(() => input.counters.detail.files === 0, "the deleted file to be closed");
    const got = messages(env);
    assert.ok(got.length >= 2, `split into ${got.length} events`);
    assert.ok(got.every((e) => enc(e).length <= 1024));
    assert.deepEqual(got.join("\n").split("\n"), ["2024-05-14 09:00:00,000 ERROR boom", ...frames]);
    assert.equal(input.counters.detail.split_events, 1);
  });
});

test("multiline with format = json: pretty-printed objects become one-line JSON events", async () => {
  await withEnv(async (env) => {
    const path = join(env.dir, "events.json");
    const objs = [{ eventid: "cowrie.login.failed", username: "root", password: "123456" }, { eventid: "cowrie.command.input", input: "uname -a" }];
    await writeFile(path, objs.map((o) => JSON.stringify(o, null, 2)).join("\n") + "\n{\n  \"broken\": \n");
    env.start({ paths: [path], format: "json", multiline: { start_pattern: "^\\{", timeout: "100ms" } });
    await settlesAt(env, 3);
    const got = env.collect();
    assert.ok(got.every((e) => e.kind === "json" && !e.event.includes("\n")));
    assert.deepEqual(got.slice(0, 2).map((e) => JSON.parse(e.event)), objs);
    const broken = JSON.parse(got[2]!.event);
    assert.equal(broken.message, '{\n  "broken": ');
    assert.equal(typeof broken.parse_error, "string");
  });
});

// ---- encodings -------------------------------------------------------------------------------

test("encoding: invalid UTF-8 becomes U+FFFD and no line is lost or split", async () => {
  await withEnv(async (env) => {
    const path = join(env.dir, "bad.log");
    const bytes = new Uint8Array([
      ...enc("ok one\n"),
      0x62, 0x61, 0x64, 0x20, 0xff, 0xfe, 0x20, 0xc3, 0x0a, // "bad ", two invalid bytes, " ", a cut 2-byte sequence
      0xe2, 0x82, 0x20, 0x80, 0x0a, // a cut 3-byte sequence, then a lone continuation byte
      ...enc("ok two\n"),
    ]);
    await writeFile(path, bytes);
    env.start({ paths: [path] });
    await settlesAt(env, 4);
    assert.deepEqual(texts(env), ["ok one", "bad \uFFFD\uFFFD \uFFFD", "\uFFFD \uFFFD", "ok two"]);
  });
});

test("encoding: 3- and 4-byte characters straddling read boundaries arrive intact", async () => {
  await withEnv(async (env) => {
    const path = join(env.dir, "wide.log");
    // read_bytes is 1 KiB: put a 4-byte character across byte 1024 and a 3-byte one across byte 2048.
    const line1 = "a".repeat(1022) + "😀" + "b".repeat(1021) + "€" + "tail";
    assert.equal(enc(line1.slice(0, line1.indexOf("😀"))).length, 1022);
    assert.equal(enc(line1.slice(0, line1.indexOf("€"))).length, 2047);
    const all = [line1, "€".repeat(700), "中文日志 😀 ok"];
    await writeFile(path, text(all));
    env.start({ paths: [path], read_bytes: "1KiB" });
    await settlesAt(env, 3);
    assert.deepEqual(texts(env), all);
  });
});

test("encoding: latin1 and utf-16le files", async () => {
  await withEnv(async (env) => {
    const latin = join(env.dir, "latin.log");
    await writeFile(latin, new Uint8Array([...enc("caf"), 0xe9, 0x20, 0x80, 0x0a, ...enc("na"), 0xef, 0x76, 0x65, 0x0a]));
    const utf16 = join(env.dir, "wide.log");
    const lines16 = ["première ligne 😀", "x".repeat(700), "Ċ last"];
    const body = "\uFEFF" + lines16.map((l) => l + "\r\n").join("");
    const bytes = new Uint8Array(body.length * 2);
    for (let i = 0; i < body.length; i++) {
      bytes[2 * i] = body.charCodeAt(i) & 0xff;
      bytes[2 * i + 1] = body.charCodeAt(i) >> 8;
    }
    await writeFile(utf16, bytes.subarray(0, 1500)); // ends inside a line, at an odd byte
    const a = env.start({ paths: [latin], encoding: "latin1" });
    await settlesAt(env, 2);
    await a.stop();
    assert.deepEqual(texts(env), ["café €", "naïve"]);
    let b = env.start({ paths: [utf16], encoding: "utf-16le", read_bytes: "1KiB" });
    await env.waitForCount(3);
    await b.stop();
    const offset = await savedOffset(env, utf16);
    assert.ok(offset !== undefined && offset % 2 === 0 && offset < 1500, `offset ${offset}`);
    await writeFile(utf16, bytes);
    b = env.start({ paths: [utf16], encoding: "utf-16le", read_bytes: "1KiB" });
    await settlesAt(env, 5);
    assert.deepEqual(texts(env).slice(2), lines16);
  });
});

// ---- deleted files, many files, descriptors, state size --------------------------------------

/**
 * Descriptors of this process open for reading only (as the input opens files; the test's own
 * writes open them otherwise) whose target starts with `prefix`. Synchronous, so the input
 * cannot open and close files while the list is taken (which would count some twice).
 */
function readFds(prefix: string): string[] {
  const out: string[] = [];
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (!target.startsWith(prefix)) continue;
      const flags = /^flags:\s*([0-7]+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"));
      if (flags && (parseInt(flags[1]!, 8) & 3) === 0) out.push(target);
    } catch {
      // closed while listing
    }
  }
  return out;
}

const HAS_PROC_FD = existsSync("/proc/self/fd");

test("close_removed_after: a deleted file that is still written to is closed in time; every line written before the delete arrives", { skip: HAS_PROC_FD ? false : "needs /proc/self/fd" }, async () => {
  await withEnv(async (env) => {
    const path = join(env.dir, "deleted.log");
    const writer = await open(path, "a");
    try {
      await writer.write(text(lines("d", 0, 300)));
      // Small reads: the writer below appends faster than the input reads, so the input never
      // catches up with the deleted file and only close_removed_after closes it.
      const input = env.start({ paths: [path], close_removed_after: "300ms", read_bytes: "1KiB" });
      await env.waitForCount(300);
      assert.equal(new Set(readFds(path)).size, 1);
      let n = 300;
      await writer.write(text(lines("d", n, n + 50)));
      n += 50;
      await unlink(path);
      const unlinkedAt = Date.now();
      let closedAfter = -1;
      while (Date.now() - unlinkedAt < 3000) {
        await writer.write(text(lines("d", n, n + 4000))); // about 500 KB
        n += 4000;
        if (readFds(path).length === 0) {
          closedAfter = Date.now() - unlinkedAt;
          break;
        }
        await pause(5);
      }
      // 300 ms after the delete is seen (the glob listing sees it within 20 ms), with room for a busy machine.
      assert.ok(closedAfter >= 0 && closedAfter < 2000, `closed ${closedAfter} ms after the delete`);
      await waitFor(() => input.counters.detail.files === 0, "the file to be forgotten");
      const got = texts(env);
      assert.ok(got.length >= 350 && got.length < n, `${got.length} of ${n} lines read`);
      assert.deepEqual(got.slice(0, 350), lines("d", 0, 350));
      // What was read is what was written, in order; the last line may be cut where the read stopped.
      const want = lines("d", 0, got.length);
      for (let i = 0; i < got.length - 1; i++) if (got[i] !== want[i]) assert.fail(`event ${i}: ${got[i]}`);
      assert.ok(want.at(-1)!.startsWith(got.at(-1)!), `last event: ${got.at(-1)}`);
      await pause(100);
      assert.equal(env.collect().length, got.length, "nothing is read after the file was closed");
    } finally {
      await writer.close();
    }
  });
});

test("1,000 files and a 50 MB file: every line arrives, small files first; idle, the input uses little CPU", async () => {
  await withEnv(async (env) => {
    const logs = join(env.dir, "logs");
    await mkdir(logs);
    const small: string[] = [];
    for (let i = 0; i < 1000; i++) {
      const ls = lines(`s${i}`, 0, 5);
      small.push(...ls);
      await writeFile(join(logs, `host-${String(i).padStart(4, "0")}.log`), text(ls));
    }
    const huge: string[] = [];
    for (let i = 0, bytes = 0; bytes < 50 << 20; i++) {
      const l = `huge line ${i} Failed password for invalid user admin from 192.0.2.${i % 256} port ${1024 + (i % 60000)} ssh2`;
      huge.push(l);
      bytes += l.length + 1;
    }
    await writeFile(join(logs, "huge.log"), text(huge));
    // The default intervals: the CPU measured below is what an idle agent would use.
    env.start({ paths: [join(logs, "*.log")], glob_interval: "1s", poll_interval: "250ms" });
    await env.waitForCount(small.length + huge.length, 60_000);
    const got = texts(env);
    assert.equal(got.length, small.length + huge.length);
    const gotHuge = got.filter((l) => l.startsWith("huge "));
    for (let i = 0; i < huge.length; i++) if (gotHuge[i] !== huge[i]) assert.fail(`huge line ${i}: ${gotHuge[i]}`);
    assert.deepEqual(got.filter((l) => l.startsWith("s")).sort(), small.sort());
    // Round-robin: the small files are read while the huge one has had a few turns only.
    let lastSmall = -1;
    for (let i = 0; i < got.length; i++) if (!got[i]!.startsWith("huge ")) lastSmall = i;
    const hugeBefore = lastSmall + 1 - small.length;
    assert.ok(hugeBefore < huge.length / 4, `${hugeBefore} of ${huge.length} huge lines came before the last small line`);

    // Idle: no timer per file, and idle files are checked less and less often.
    env.events.length = 0;
    await pause(500);
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await pause(3000);
    const cpu = process.cpuUsage(cpu0);
    const share = (cpu.user + cpu.system) / 1000 / (performance.now() - t0);
    assert.ok(share < 0.3, `idle CPU ${(share * 100).toFixed(1)}% of one core with 1,001 files`);
    assert.equal(env.collect().length, 0);
  });
});

test("max_open_files: 300 files with 40 descriptors: every line arrives, later lines too, never more than 40 open", { skip: HAS_PROC_FD ? false : "needs /proc/self/fd" }, async () => {
  await withEnv(async (env) => {
    const logs = join(env.dir, "logs");
    await mkdir(logs);
    const want: string[] = [];
    for (let i = 0; i < 300; i++) {
      const ls = lines(`f${i}`, 0, 5); // under the 1 KiB fingerprint: only the checkpoint tells where to resume
      want.push(...ls);
      await writeFile(join(logs, `app-${i}.log`), text(ls));
    }
    let maxOpen = 0;
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        // Files, not descriptors: Deno's node:fs briefly duplicates a FileHandle's descriptor
        // while an operation on it runs. Not the directory itself either, which the glob lists.
        maxOpen = Math.max(maxOpen, new Set(readFds(logs + "/")).size);
        await pause(2);
      }
    })();
    try {
      let input = env.start({ paths: [join(logs, "*.log")], max_open_files: 40 });
      await env.waitForCount(want.length, 20_000);
      for (let i = 0; i < 300; i += 3) {
        const ls = lines(`f${i}`, 5, 7);
        want.push(...ls);
        await appendFile(join(logs, `app-${i}.log`), text(ls));
      }
      await settlesAt(env, want.length);
      assert.deepEqual([...texts(env)].sort(), [...want].sort());
      // A restart with more checkpointed files than descriptors resumes every one of them.
      await input.stop();
      for (let i = 1; i < 300; i += 3) {
        const ls = lines(`f${i}`, 7, 8);
        want.push(...ls);
        await appendFile(join(logs, `app-${i}.log`), text(ls));
      }
      input = env.start({ paths: [join(logs, "*.log")], max_open_files: 40 });
      await settlesAt(env, want.length);
      assert.deepEqual([...texts(env)].sort(), [...want].sort());
    } finally {
      watching = false;
      await watcher;
    }
    assert.ok(maxOpen > 0 && maxOpen <= 40, `at most ${maxOpen} files open`);
  });
});

test("checkpoints of rotated-away and deleted files are pruned from the state", async () => {
  await withEnv(async (env) => {
    const logs = join(env.dir, "logs");
    const old = join(env.dir, "old");
    await mkdir(logs);
    await mkdir(old);
    for (let i = 0; i < 50; i++) await writeFile(join(logs, `app-${i}.log`), text(lines(`a${i}`, 0, 3)));
    const count = async () => Object.keys((await env.state.load<SavedState>("logs"))?.files ?? {}).length;
    env.start({ paths: [join(logs, "*.log")], close_inactive: "200ms" });
    await env.waitForCount(150);
    await waitFor(async () => (await count()) === 50, "50 checkpoints");
    // Daily rotation: half renamed out of the glob with a new file in its place, half deleted.
    for (let i = 0; i < 50; i++) {
      const path = join(logs, `app-${i}.log`);
      if (i % 2 === 0) {
        await rename(path, join(old, `app-${i}.log.1`));
        await writeFile(path, text(lines(`b${i}`, 0, 1)));
      } else await unlink(path);
    }
    await env.waitForCount(175);
    await waitFor(async () => (await count()) === 25, "the checkpoints of the 25 new files only", 5000);
    const saved = await env.state.load<SavedState>("logs");
    assert.ok(Object.values(saved!.files).every((f) => f.path.startsWith(logs)));
  });
});
