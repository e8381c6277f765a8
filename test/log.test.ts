import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { createLogger, RotatingFileSink, textLine } from "../agent/log.ts";

const dir = mkdtempSync(join(tmpdir(), "log-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const fresh = () => join(mkdtempSync(join(dir, `${++n}-`)), "agent.log");
const lines = (p: string) => (existsSync(p) ? readFileSync(p, "utf8").split("\n").filter(Boolean) : []);

describe("RotatingFileSink", () => {
  test("rotates before a line would pass max_bytes, keeping log_keep files, newest .1", () => {
    const path = fresh();
    const sink = new RotatingFileSink(path, { maxBytes: 100, keep: 2 });
    const line = (i: number) => `line ${String(i).padStart(3, "0")} ${"x".repeat(30)}\n`; // 40 bytes
    for (let i = 0; i < 12; i++) sink.write(line(i));
    sink.end();
    // 2 lines (80 bytes) a file: 0-1, 2-3, ... 10-11; the two before the current one are kept
    assert.deepEqual(lines(path), [line(10), line(11)].map((l) => l.trimEnd()));
    assert.deepEqual(lines(`${path}.1`), [line(8), line(9)].map((l) => l.trimEnd()));
    assert.deepEqual(lines(`${path}.2`), [line(6), line(7)].map((l) => l.trimEnd()));
    assert.equal(existsSync(`${path}.3`), false, "no more than log_keep rotated files");
    for (const p of [path, `${path}.1`, `${path}.2`]) assert.ok(statSync(p).size <= 100, `${p} within max_bytes`);
  });

  test("keep = 0 keeps no rotated file; a line longer than max_bytes is still written whole", () => {
    const path = fresh();
    const sink = new RotatingFileSink(path, { maxBytes: 10, keep: 0 });
    sink.write("first line that is long\n");
    sink.write("second\n");
    sink.end();
    assert.deepEqual(lines(path), ["second"]);
    assert.equal(existsSync(`${path}.1`), false);
  });

  test("an existing file's size counts: appending continues, rotation comes when it would pass the bound", () => {
    const path = fresh();
    const a = new RotatingFileSink(path, { maxBytes: 30, keep: 1 });
    a.write("0123456789012345678\n"); // 20 bytes
    a.end();
    const b = new RotatingFileSink(path, { maxBytes: 30, keep: 1 });
    b.write("second run\n"); // 20 + 11 > 30
    b.end();
    assert.deepEqual(lines(`${path}.1`), ["0123456789012345678"]);
    assert.deepEqual(lines(path), ["second run"]);
  });

  test("reopen() after the file was moved away (logrotate) writes a new file", () => {
    const path = fresh();
    const sink = new RotatingFileSink(path, { maxBytes: 1 << 20, keep: 3 });
    sink.write("before\n");
    renameSync(path, `${path}.rotated`);
    sink.write("still into the moved file\n");
    sink.reopen();
    sink.write("after\n");
    sink.end();
    assert.deepEqual(lines(`${path}.rotated`), ["before", "still into the moved file"]);
    assert.deepEqual(lines(path), ["after"]);
  });

  test("a file that cannot be written loses the line and does not throw", () => {
    const path = join(dir, "no-such-folder", "agent.log");
    const sink = new RotatingFileSink(path, { maxBytes: 100, keep: 1 });
    assert.doesNotThrow(() => sink.write("lost\n"));
    assert.doesNotThrow(() => sink.reopen());
    assert.doesNotThrow(() => sink.rotate());
    assert.equal(existsSync(path), false);
  });
});

describe("log formats", () => {
  test("json: one object per line with ts, level, msg and the fields", () => {
    const out: string[] = [];
    const log = createLogger("info", { write: (l) => out.push(l) }, "json");
    log.child({ input: "auth" }).warn("read failed", { error: new Error("EACCES"), n: 2 });
    log.debug("not shown");
    assert.equal(out.length, 1);
    assert.ok(out[0]!.endsWith("\n"));
    const rec = JSON.parse(out[0]!);
    assert.match(rec.ts, /^\d{4}-\d\d-\d\dT/);
    assert.deepEqual({ ...rec, ts: undefined }, { ts: undefined, level: "warn", msg: "read failed", input: "auth", error: "EACCES", n: 2 });
  });

  test("text: time level msg key=value, quoted where needed, one line per record", () => {
    const out: string[] = [];
    const log = createLogger("debug", { write: (l) => out.push(l) }, "text");
    log.info("agent started", { pid: 42, control: "http://127.0.0.1:8765", inputs: ["a", "b"] });
    log.error("two\nlines", { error: 'say "no"', empty: "", absent: undefined });
    assert.equal(out.length, 2);
    assert.match(out[0]!, /^\d{4}-\d\d-\d\dT\S+Z INFO  agent started pid=42 control=http:\/\/127\.0\.0\.1:8765 inputs=\["a","b"\]\n$/);
    assert.match(out[1]!, /^\S+ ERROR two\\nlines error="say \\"no\\"" empty=""\n$/);
    assert.equal(out[1]!.split("\n").length, 2, "one line");
    assert.equal(textLine({ ts: "T", level: "warn", msg: "m", k: "a b" }), 'T WARN  m k="a b"\n');
  });

  test("a field that cannot be serialised keeps the record", () => {
    const out: string[] = [];
    const log = createLogger("info", { write: (l) => out.push(l) });
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    log.info("odd", { cyclic, big: 1n });
    assert.equal(JSON.parse(out[0]!).msg, "odd");
  });
});
