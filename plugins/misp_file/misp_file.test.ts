import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, open, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import plugin from "./index.ts";
import type { CoreInputContext } from "../../agent/context.ts";
import { withInputEnv, type InputTestEnv } from "../../test/testing/plugin-harness.ts";
import { until } from "../../test/testing/until.ts";
import { SeenSet } from "../common/seen.ts";

const FIXTURES = new URL("testdata/", import.meta.url);
/** A restSearch answer: its one copy is with the misp_api input, which reads that format from MISP. */
const TEMPLATE = JSON.parse(readFileSync(new URL("../misp_api/testdata/events-restSearch.json", import.meta.url), "utf8")).response[0];
const MANIFEST_ENTRY = Object.values(JSON.parse(readFileSync(new URL("feed-manifest.json", FIXTURES), "utf8")))[0] as Record<string, unknown>;

type MispEvent = { Event: Record<string, any> };

function makeEvent(n: number, ts: number): MispEvent {
  const e = structuredClone(TEMPLATE) as MispEvent;
  e.Event.id = String(n);
  e.Event.uuid = `5f8a3c1e-8d4c-4b7a-9a51-${String(n).padStart(12, "0")}`;
  e.Event.info = `event ${n}`;
  e.Event.timestamp = String(ts);
  return e;
}

const version = (e: MispEvent): string => `${e.Event.uuid}@${e.Event.timestamp}`;
const pretty = (v: unknown) => JSON.stringify(v, null, 1);

/** A MISP feed folder: manifest.json and one <uuid>.json per event. */
async function writeFeed(dir: string, events: MispEvent[]): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const e of events) await writeFile(join(dir, `${e.Event.uuid}.json`), pretty(e));
  const manifest = Object.fromEntries(events.map((e) => [e.Event.uuid, { ...MANIFEST_ENTRY, info: e.Event.info, timestamp: e.Event.timestamp }]));
  await writeFile(join(dir, "manifest.json"), pretty(manifest));
}

const withEnv = (fn: (env: InputTestEnv) => Promise<void>) => withInputEnv(plugin, { name: "mispfiles" }, fn);

/** Versions (uuid@timestamp) of the events spooled since the last call. */
function posted(env: InputTestEnv): string[] {
  return env.jsonLines().map((event) => {
    const e = JSON.parse(event).Event;
    return `${e.uuid}@${e.timestamp}`;
  });
}

/** Waits until `n` more scans have finished. */
async function scans(ctx: CoreInputContext, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const last = ctx.counters.detail.last_success;
    await until(() => ctx.counters.detail.last_success !== last, "a scan");
  }
}

/** Collects posted versions until `n` have come. */
async function collect(env: InputTestEnv, n: number, what: string): Promise<string[]> {
  const got: string[] = [];
  await until(() => {
    got.push(...posted(env));
    return got.length >= n;
  }, what);
  return got;
}

const now = Math.floor(Date.now() / 1000);

test("options: defaults and checks", () => {
  const o = plugin.options.parse({ path: "/srv/misp-drop" });
  assert.equal(o.interval, 10_000);
  assert.equal(o.after, "keep");
  assert.equal(o.settle, 2000);
  assert.equal(o.max_file_bytes, 256 * 1024 * 1024);
  assert.equal(plugin.options.safeParse({ path: "/x", after: "move" }).success, false);
  assert.equal(plugin.options.safeParse({}).success, false);
});

test("a drop folder: every shape and a feed posted once, a broken file reported by name, feed changes re-read only their entry, nothing after a restart", async () => {
  await withEnv(async (env) => {
    const drop = join(env.dir, "drop");
    const feed = join(drop, "circl-feed");
    const ev = [1, 2, 3, 4, 5, 6, 7].map((n) => makeEvent(n, now - 1000 + n));
    await mkdir(drop);
    await writeFile(join(drop, "a-restsearch.json"), pretty({ response: [ev[0], ev[1]] }));
    await writeFile(join(drop, "b-single.json"), pretty(ev[2]));
    await writeFile(join(drop, "c-list.json"), JSON.stringify([ev[3], ev[4]]));
    await writeFile(join(drop, "d-broken.json"), '{"response": [{"Event": {"uuid": "x", "timestamp": "1"');
    await writeFile(join(drop, "notes.txt"), "not MISP");
    await writeFeed(feed, [ev[5]!, ev[6]!]);

    const options = { path: drop, interval: "50ms", settle: "100ms" };
    const first = env.start(options);
    const got = await collect(env, 7, "the seven events");
    await scans(first.ctx, 3);
    got.push(...posted(env));
    assert.deepEqual(got.sort(), ev.map(version).sort());
    assert.equal(first.ctx.counters.errors, 1, "the broken file is reported once");
    assert.match(String(first.ctx.counters.last_error), /d-broken\.json: not valid JSON/);
    assert.ok(existsSync(join(drop, "d-broken.json")), "the broken file is left in place");
    assert.doesNotMatch(String(first.ctx.counters.detail.last_status), /^failed/);

    // One manifest entry changes. Event 7's file is garbage now, but its entry did not
    // change: it is not opened again.
    await writeFile(join(feed, `${ev[6]!.Event.uuid}.json`), "garbage");
    const edited = makeEvent(6, now);
    await writeFeed(feed, [edited]);
    const manifest = JSON.parse(await readFile(join(feed, "manifest.json"), "utf8"));
    manifest[ev[6]!.Event.uuid] = { ...MANIFEST_ENTRY, timestamp: ev[6]!.Event.timestamp };
    await writeFile(join(feed, "manifest.json"), pretty(manifest));
    assert.deepEqual(await collect(env, 1, "the edited feed event"), [version(edited)]);
    await scans(first.ctx, 3);
    assert.deepEqual(posted(env), []);
    assert.equal(first.ctx.counters.errors, 1);

    await first.stop();
    await first.ctx.settled();
    const second = env.start(options);
    await scans(second.ctx, 4);
    assert.deepEqual(posted(env), []);
    assert.equal(second.ctx.counters.errors, 0, "a broken file already reported is not reported again");
  });
});

test("after = rename: a done file becomes <name>.done once its events are spooled; a broken one stays", async () => {
  await withEnv(async (env) => {
    const drop = join(env.dir, "drop");
    await mkdir(drop);
    const e1 = makeEvent(1, now - 10);
    const text = pretty(e1);
    await writeFile(join(drop, "x.json"), text);
    await writeFile(join(drop, "y.json"), "{");
    const { ctx } = env.start({ path: drop, interval: "50ms", settle: "50ms", after: "rename" });
    assert.deepEqual(await collect(env, 1, "the event"), [version(e1)]);
    await until(() => existsSync(join(drop, "x.json.done")) && !existsSync(join(drop, "x.json")), "the rename");
    assert.equal(await readFile(join(drop, "x.json.done"), "utf8"), text);
    assert.ok(existsSync(join(drop, "y.json")));
    assert.match(String(ctx.counters.last_error), /y\.json/);

    // The same name dropped again: read again, and its .done name is not overwritten.
    const e2 = makeEvent(2, now - 10);
    await writeFile(join(drop, "x.json"), pretty(e2));
    assert.deepEqual(await collect(env, 1, "the second event"), [version(e2)]);
    await until(() => existsSync(join(drop, "x.json.1.done")) && !existsSync(join(drop, "x.json")), "the second rename");
    assert.equal(await readFile(join(drop, "x.json.done"), "utf8"), text);
  });
});

test("after = delete: a done file is removed once its events are spooled; an event version already posted is not posted again", async () => {
  await withEnv(async (env) => {
    const drop = join(env.dir, "drop");
    await mkdir(drop);
    const events = [makeEvent(1, now - 10), makeEvent(2, now - 10)];
    await writeFile(join(drop, "z.json"), pretty({ response: events }));
    const { ctx } = env.start({ path: drop, interval: "50ms", settle: "50ms", after: "delete" });
    assert.deepEqual((await collect(env, 2, "the events")).sort(), events.map(version).sort());
    await until(() => !existsSync(join(drop, "z.json")), "the delete");

    // The same events in another file: deleted, nothing posted.
    await writeFile(join(drop, "again.json"), JSON.stringify(events));
    await until(() => !existsSync(join(drop, "again.json")), "the second delete");
    await scans(ctx, 2);
    assert.deepEqual(posted(env), []);
    assert.equal(ctx.counters.errors, 0);
  });
});

test("a file being written slowly is read only once complete", async () => {
  await withEnv(async (env) => {
    const drop = join(env.dir, "drop");
    await mkdir(drop);
    const events = [1, 2, 3, 4].map((n) => makeEvent(n, now - 10));
    const text = pretty(events);
    const { ctx } = env.start({ path: drop, interval: "30ms", settle: "1s" });
    const fh = await open(join(drop, "slow.json"), "w");
    const step = Math.ceil(text.length / 8);
    for (let at = 0; at < text.length; at += step) {
      await fh.write(text.slice(at, at + step));
      await new Promise((r) => setTimeout(r, 80));
    }
    await fh.close();
    assert.deepEqual(posted(env), [], "nothing read while the file was being written");
    assert.equal(ctx.counters.errors, 0);
    assert.deepEqual((await collect(env, 4, "the events")).sort(), events.map(version).sort());
    await scans(ctx, 2);
    assert.deepEqual(posted(env), []);
    assert.equal(ctx.counters.errors, 0, "the half-written file was never read as broken");
  });
});

test("a single file path: waits for it to appear; a file over max_file_bytes is an error", async () => {
  await withEnv(async (env) => {
    const file = join(env.dir, "events.json");
    const { ctx } = env.start({ path: file, interval: "50ms", settle: "50ms", max_file_bytes: "64KiB" });
    await scans(ctx, 2);
    assert.equal(ctx.counters.errors, 1, "a missing path is reported once");
    assert.match(String(ctx.counters.last_error), /events\.json: not found/);

    const e = makeEvent(1, now - 10);
    await writeFile(file, pretty(e));
    assert.deepEqual(await collect(env, 1, "the event"), [version(e)]);

    await writeFile(file, JSON.stringify(Array.from({ length: 200 }, (_, i) => makeEvent(100 + i, now))));
    await until(() => ctx.counters.errors === 2, "the size error");
    assert.match(String(ctx.counters.last_error), /events\.json: larger than max_file_bytes/);
    assert.deepEqual(posted(env), []);
  });
});

test("a saved state of the wrong shape fails the input with an error naming the file and the key; nothing is posted", async () => {
  await withEnv(async (env) => {
    const drop = join(env.dir, "drop");
    await mkdir(drop);
    await writeFile(join(drop, "one.json"), pretty(makeEvent(1, 1_700_000_000)));
    const mark = { size: 10, mtime: 1_700_000_000_000.5, status: "done" };
    const bads: Array<[unknown, string]> = [
      [null, ""], [{ files: [] }, "v"], [{ v: 1, files: [] }, "files"], [{ v: 1, files: { [drop]: { ...mark, size: -5 } } }, "size"],
      [{ v: 1, files: { [drop]: { ...mark, mtime: "yesterday" } } }, "mtime"], [{ v: 1, files: { [drop]: { ...mark, status: "gone" } } }, "status"],
      [{ v: 1, seen: { ...new SeenSet().toJSON(), n: 3 } }, "seen.keys"], [{ v: 1, offsets: {} }, "offsets"],
    ];
    await env.expectStateRefused(bads, { path: drop, interval: "50ms", settle: "0ms" });
    assert.deepEqual(env.events(), []);
  });
});
