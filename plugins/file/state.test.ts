// The file input's saved state: checked against its schema when loaded (a state file of the
// wrong shape fails the input, naming the file, and nothing is sent again), and an offset
// inside a line resumes at the next line, so no fragment of a line is ever sent.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, stat, writeFile, appendFile, readFile } from "node:fs/promises";
import { join } from "node:path";
import plugin from "./index.ts";
import { checkpointKey, FINGERPRINT_BYTES, fingerprintOf } from "./identity.ts";
import { FatalInputError } from "../../agent/plugin.ts";
import { withInputEnv, type InputTestEnv } from "../../test/testing/plugin-harness.ts";
import { until } from "../../test/testing/until.ts";

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
const lines = (n: number, tag = "l") => Array.from({ length: n }, (_, i) => `${tag} ${i} sshd[4242]: Failed password for invalid user admin from 192.0.2.${i % 250} port ${40000 + i} ssh2`);
const text = (ls: string[]) => ls.map((l) => l + "\n").join("");
const enc = (s: string) => new TextEncoder().encode(s);

/** The state file of the input named "logs" in `env`. */
const stateFile = (env: InputTestEnv) => join(env.dir, "state", "logs.json");

async function writeState(env: InputTestEnv, body: string): Promise<void> {
  await mkdir(join(env.dir, "state"), { recursive: true });
  await writeFile(stateFile(env), body);
}

/** A checkpoint entry for `path` at `offset`, keyed as the input keys it. */
async function entryFor(path: string, offset: unknown, extra: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  const head = (await readFile(path)).subarray(0, FINGERPRINT_BYTES);
  const st = await stat(path);
  const key = checkpointKey(fingerprintOf(head), st.dev, st.ino, () => false);
  return { [key]: { path, offset, dev: st.dev, ino: st.ino, size: st.size, ...extra } };
}

const texts = (env: InputTestEnv) => env.events().map((e) => e.event);

test("state of the wrong shape ({files: []}, null, an offset of -5, a string offset): the input fails naming the state file, and sends nothing", async () => {
  const cases: Array<[string, (path: string) => Promise<string>]> = [
    ["files is an array", async () => '{"files":[]}'],
    ["null", async () => "null"],
    ["negative offset", async (path) => JSON.stringify({ files: await entryFor(path, -5) })],
    ["string offset", async (path) => JSON.stringify({ files: await entryFor(path, "120") })],
    ["fractional offset", async (path) => JSON.stringify({ files: await entryFor(path, 10.5) })],
    ["unknown key", async (path) => JSON.stringify({ files: await entryFor(path, 0, { extra: 1 }) })],
  ];
  for (const [what, body] of cases) {
    await withInputEnv(plugin, { name: "logs" }, async (env) => {
      const path = join(env.dir, "app.log");
      await writeFile(path, text(lines(50)));
      await writeState(env, await body(path));
      const input = env.start({ paths: [path], glob_interval: "20ms", poll_interval: "5ms" });
      const err = await input.done.then(() => undefined, (e: unknown) => e);
      assert.ok(err instanceof FatalInputError, `${what}: the input fails (${String(err)})`);
      assert.ok(err.message.includes(stateFile(env)), `${what}: the error names the state file: ${err.message}`);
      assert.ok(!err.message.includes("\n"), `${what}: one line`);
      await pause(50);
      assert.deepEqual(texts(env), [], `${what}: nothing sent`);
      assert.equal(await readFile(stateFile(env), "utf8"), await body(path), `${what}: the state file is left as it was`);
    });
  }
});

test("an offset inside a line resumes at the start of the next line; one at a line start resumes there", async () => {
  await withInputEnv(plugin, { name: "logs" }, async (env) => {
    const path = join(env.dir, "app.log");
    const all = lines(60);
    await writeFile(path, text(all));
    const line10 = enc(text(all.slice(0, 10))).length;
    await writeState(env, JSON.stringify({ files: await entryFor(path, line10 + 7) }));
    let input = env.start({ paths: [path], glob_interval: "20ms", poll_interval: "5ms" });
    await until(() => (input.ctx.counters.events ?? 0) >= 49, "49 lines");
    await pause(100);
    assert.deepEqual(texts(env), all.slice(11));
    await input.stop();

    await writeState(env, JSON.stringify({ files: await entryFor(path, line10) }));
    input = env.start({ paths: [path], glob_interval: "20ms", poll_interval: "5ms" });
    await until(() => (input.ctx.counters.events ?? 0) >= 50, "50 lines");
    await pause(100);
    assert.deepEqual(texts(env), all.slice(10));
  });
});

test("an offset inside the last, unfinished line: that line is never sent, not even once it is finished; the next one is", async () => {
  await withInputEnv(plugin, { name: "logs" }, async (env) => {
    const path = join(env.dir, "app.log");
    const all = lines(30);
    await writeFile(path, text(all) + "half of a li");
    await writeState(env, JSON.stringify({ files: await entryFor(path, enc(text(all)).length + 5) }));
    const input = env.start({ paths: [path], glob_interval: "20ms", poll_interval: "5ms" });
    await pause(100);
    await appendFile(path, "ne\nnext line\n");
    await until(() => (input.ctx.counters.events ?? 0) >= 1, "the next line");
    await pause(100);
    assert.deepEqual(texts(env), ["next line"]);
  });
});

test("a line cut for max_line_bytes and stopped in the middle: the checkpoint says so and the restart goes on inside the line, losing nothing", async () => {
  await withInputEnv(plugin, { name: "logs" }, async (env) => {
    const path = join(env.dir, "app.log");
    const head = lines(20);
    const long = "L".repeat(10_000);
    await writeFile(path, text(head) + long);
    const opts = { paths: [path], glob_interval: "20ms", poll_interval: "5ms", max_line_bytes: "4KiB" };
    let input = env.start(opts);
    // 20 lines and two 4 KiB pieces of the long line; the rest waits for its line break.
    await until(() => (input.ctx.counters.events ?? 0) >= 22, "the first pieces");
    await pause(100);
    await input.stop();
    const saved = JSON.parse(await readFile(stateFile(env), "utf8")) as { files: Record<string, { offset: number; cut?: boolean }> };
    const entry = Object.values(saved.files)[0]!;
    assert.equal(entry.offset, enc(text(head)).length + 8192);
    assert.equal(entry.cut, true);
    await appendFile(path, "\nafter\n");
    input = env.start(opts);
    await until(() => (input.ctx.counters.events ?? 0) >= 2, "the rest of the long line and the next one");
    await pause(100);
    const got = texts(env);
    assert.deepEqual(got.slice(0, 20), head);
    assert.equal(got.slice(20, -1).join(""), long);
    assert.ok(got.slice(20, -1).every((p) => p.length <= 4096));
    assert.equal(got.at(-1), "after");
  });
});
