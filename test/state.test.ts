import { describe, it, afterEach } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { StateStore, keyToFileName, fileNameToKey } from "../agent/state.ts";

const dirs: string[] = [];

function tmpStateDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "state-test-"));
  dirs.push(d);
  return path.join(d, "state"); // not created yet: the store makes it on first save
}

afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

describe("StateStore", () => {
  it("saves and loads values; a missing key loads as undefined", async () => {
    const store = new StateStore(tmpStateDir());
    assert.equal(await store.load("auth"), undefined);
    assert.deepEqual(await store.keys(), []);
    const value = { offset: 12345, fingerprint: "abc", seen: ["a", "b"], nested: { etag: null } };
    await store.save("auth", value);
    assert.deepEqual(await store.load("auth"), value);
    await store.save("auth", { offset: 1 });
    assert.deepEqual(await store.load("auth"), { offset: 1 });
    // A second store on the same directory (the next run) sees the same state.
    assert.deepEqual(await new StateStore(store.dir).load("auth"), { offset: 1 });
  });

  it("encodes any key into a safe file name inside the directory and lists keys back", async () => {
    const dir = tmpStateDir();
    const store = new StateStore(dir);
    const keys = ["cowrie.json", "my-input_2", "..", ".", ".hidden", "../escape", "a/b\\c", "ünï code ✓", "100%"];
    for (const [i, k] of keys.entries()) await store.save(k, { i });
    for (const [i, k] of keys.entries()) assert.deepEqual(await store.load(k), { i });
    assert.deepEqual(await store.keys(), [...keys].sort());
    const files = fs.readdirSync(dir);
    assert.equal(files.length, keys.length, "one file per key, all inside the state directory");
    assert.ok(files.every((f) => !f.startsWith(".") && !f.includes("/")));
    assert.ok(fs.readdirSync(path.dirname(dir)).every((f) => f === "state"), "nothing escaped the directory");
    assert.equal(keyToFileName("cowrie.json"), "cowrie.json.json");
    for (const k of keys) assert.equal(fileNameToKey(keyToFileName(k)), k);
  });

  it("a corrupt state file makes load() throw an error naming the file", async () => {
    const dir = tmpStateDir();
    const store = new StateStore(dir);
    await store.save("feed", { cursor: 5 });
    const file = path.join(dir, keyToFileName("feed"));
    fs.writeFileSync(file, '{"cursor": 5');
    await assert.rejects(store.load("feed"), (err: Error) => {
      assert.ok(err.message.includes(file), err.message);
      assert.match(err.message, /corrupt/);
      return true;
    });
  });

  it("serialises concurrent saves of one key; the latest value wins", async () => {
    const dir = tmpStateDir();
    const store = new StateStore(dir);
    const saves = [];
    for (let i = 0; i < 50; i++) saves.push(store.save("busy", { i, pad: "x".repeat(i * 100) }));
    saves.push(store.save("other", { other: true }));
    await Promise.all(saves);
    assert.deepEqual(await store.load("busy"), { i: 49, pad: "x".repeat(4900) });
    assert.deepEqual(await store.load("other"), { other: true });
    assert.deepEqual(fs.readdirSync(dir).sort(), ["busy.json", "other.json"], "no temp files left behind");

    // Later calls always land after earlier ones, also once the first has finished.
    await store.save("busy", { v: 1 });
    const a = store.save("busy", { v: 2 });
    const b = store.save("busy", { v: 3 });
    await Promise.all([a, b]);
    assert.deepEqual(await store.load("busy"), { v: 3 });
  });

  it("delete removes the key, is ordered with saves, and ignores missing keys", async () => {
    const store = new StateStore(tmpStateDir());
    await store.delete("never-saved");
    await store.save("x", 1);
    await store.save("y", 2);
    const saved = store.save("x", 3);
    const deleted = store.delete("x");
    await Promise.all([saved, deleted]);
    assert.equal(await store.load("x"), undefined);
    assert.deepEqual(await store.keys(), ["y"]);
    const del = store.delete("y");
    const again = store.save("y", 4);
    await Promise.all([del, again]);
    assert.equal(await store.load("y"), 4);
  });

  it("rejects values that cannot be stored as JSON", async () => {
    const store = new StateStore(tmpStateDir());
    await assert.rejects(store.save("x", undefined), /JSON/);
    await assert.rejects(store.save("x", () => 1), /JSON/);
    assert.throws(() => store.fileFor(""), /empty/);
  });
});
