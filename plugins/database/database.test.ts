// The database input against real SQLite files (written by the test through node:sqlite).
// PostgreSQL has its own file: postgres.test.ts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import plugin from "./index.ts";
import { collect, createDatabaseTestEnv, polls, spooledRows, type DatabaseTestEnv } from "./input.testutil.ts";
import { API, configProblems } from "../../test/testing/config.ts";
import { FatalInputError } from "../../agent/plugin.ts";
import { until } from "../../test/testing/until.ts";

const T = { timeout: 60_000 };

async function withEnv(fn: (env: DatabaseTestEnv, file: string) => Promise<void>): Promise<void> {
  const env = await createDatabaseTestEnv();
  try {
    await fn(env, join(env.dir, "source.db"));
  } finally {
    await env.close();
  }
}

function databaseProblems(inputToml: string): string[] {
  return configProblems(`${API}[inputs.events]\ntype = "database"\ntypetag = "db"\n${inputToml}`, { database: plugin as never });
}

test("options: defaults; a query without $1 and a postgres dsn that is no URL are config errors", () => {
  const o = plugin.options.parse({ driver: "sqlite", dsn: "x.db", query: "SELECT * FROM t WHERE id > $1 ORDER BY id", cursor_column: "id" });
  assert.deepEqual(
    { cursor_start: o.cursor_start, interval: o.interval, max_rows: o.max_rows, query_timeout: o.query_timeout },
    { cursor_start: 0, interval: 60_000, max_rows: 10_000, query_timeout: 30_000 },
  );

  const noParam = databaseProblems(`driver = "sqlite"\ndsn = "x.db"\ncursor_column = "id"\nquery = "SELECT * FROM t WHERE id > ? ORDER BY id"\n`);
  assert.equal(noParam.length, 1);
  assert.match(noParam[0]!, /inputs\.events\.query/);
  assert.match(noParam[0]!, /\$1/);
  // $10 is not $1.
  assert.equal(databaseProblems(`driver = "sqlite"\ndsn = "x.db"\ncursor_column = "id"\nquery = "SELECT $10"\n`).length, 1);

  const badDsn = databaseProblems(`driver = "postgres"\ndsn = "host=db password=hunter22"\ncursor_column = "id"\nquery = "SELECT * FROM t WHERE id > $1"\n`);
  assert.equal(badDsn.length, 1);
  assert.match(badDsn[0]!, /inputs\.events\.dsn/);
  assert.doesNotMatch(badDsn[0]!, /hunter22/);
});

test("integer id cursor: the first poll posts every row, a re-poll nothing, then only new rows; a restart nothing", T, async () => {
  await withEnv(async (env, file) => {
    const w = new DatabaseSync(file);
    w.exec("CREATE TABLE events (id INTEGER PRIMARY KEY, msg TEXT, score REAL)");
    const insert = w.prepare("INSERT INTO events (msg, score) VALUES (?, ?)");
    insert.run("login failed", 0.5);
    insert.run("login ok", 1);
    insert.run("port scan", null);
    const options = { driver: "sqlite", dsn: file, query: "SELECT id, msg, score FROM events WHERE id > $1 ORDER BY id", cursor_column: "id", interval: "100ms" };

    const first = env.start(options);
    const got: Array<Record<string, unknown>> = [];
    await collect(env, got, 3);
    assert.deepEqual(got, [
      { id: 1, msg: "login failed", score: 0.5 },
      { id: 2, msg: "login ok", score: 1 },
      { id: 3, msg: "port scan", score: null },
    ]);
    await polls(env);
    assert.deepEqual(spooledRows(env), []);

    insert.run("new 4", 4);
    insert.run("new 5", 5);
    const more: Array<Record<string, unknown>> = [];
    await collect(env, more, 2);
    await polls(env);
    more.push(...spooledRows(env));
    assert.deepEqual(more.map((e) => e.id), [4, 5]);
    assert.equal(first.ctx.counters.detail.cursor, 5);

    await first.stop();
    env.start(options);
    await polls(env);
    assert.deepEqual(spooledRows(env), []);
    insert.run("after restart", 6);
    const last: Array<Record<string, unknown>> = [];
    await collect(env, last, 1);
    assert.deepEqual(last, [{ id: 6, msg: "after restart", score: 6 }]);
    w.close();
  });
});

test("ISO text timestamp cursor with >=: rows sharing the cursor value are posted once, later ones too", T, async () => {
  await withEnv(async (env, file) => {
    const w = new DatabaseSync(file);
    w.exec("CREATE TABLE logs (ts TEXT NOT NULL, host TEXT, msg TEXT)");
    const insert = w.prepare("INSERT INTO logs VALUES (?, ?, ?)");
    insert.run("2024-05-01T10:00:00.000Z", "a", "one");
    insert.run("2024-05-01T10:00:01.000Z", "a", "two");
    insert.run("2024-05-01T10:00:01.000Z", "b", "two too");
    const options = {
      driver: "sqlite", dsn: file, query: "SELECT ts, host, msg FROM logs WHERE ts >= $1 ORDER BY ts",
      cursor_column: "ts", cursor_start: "2024-01-01T00:00:00Z", interval: "100ms",
    };
    const first = env.start(options);
    const got: Array<Record<string, unknown>> = [];
    await collect(env, got, 3);
    await polls(env);
    got.push(...spooledRows(env));
    assert.deepEqual(got.map((e) => e.msg), ["one", "two", "two too"]);
    assert.equal(first.ctx.counters.detail.cursor, "2024-05-01T10:00:01.000Z");

    // A row arriving late with the cursor's own timestamp is still new.
    insert.run("2024-05-01T10:00:01.000Z", "c", "late");
    insert.run("2024-05-01T10:00:02.000Z", "a", "three");
    const more: Array<Record<string, unknown>> = [];
    await collect(env, more, 2);
    await polls(env);
    more.push(...spooledRows(env));
    assert.deepEqual(more.map((e) => e.msg), ["late", "three"]);

    await first.stop();
    env.start(options);
    await polls(env);
    assert.deepEqual(spooledRows(env), []);
    w.close();
  });
});

test("values: integers past 2^53 as strings, blobs as base64; a cursor past 2^53 stays exact across a restart", T, async () => {
  await withEnv(async (env, file) => {
    const w = new DatabaseSync(file);
    w.exec("CREATE TABLE big (id INTEGER PRIMARY KEY, payload BLOB, ratio REAL, note TEXT)");
    const insert = w.prepare("INSERT INTO big VALUES (?, ?, ?, ?)");
    const base = 2n ** 53n;
    insert.run(base + 1n, new Uint8Array([0, 1, 2, 255]), 0.25, null);
    insert.run(base + 2n, null, -1e300, "x");
    const options = { driver: "sqlite", dsn: file, query: "SELECT * FROM big WHERE id > $1 ORDER BY id", cursor_column: "id", interval: "100ms" };
    const first = env.start(options);
    const got: Array<Record<string, unknown>> = [];
    await collect(env, got, 2);
    assert.deepEqual(got, [
      { id: "9007199254740993", payload: "AAEC/w==", ratio: 0.25, note: null },
      { id: "9007199254740994", payload: null, ratio: -1e300, note: "x" },
    ]);
    await polls(env);
    assert.deepEqual(spooledRows(env), []);
    await first.stop();

    env.start(options);
    await polls(env);
    assert.deepEqual(spooledRows(env), []);
    insert.run(base + 3n, null, 1, "y");
    const more: Array<Record<string, unknown>> = [];
    await collect(env, more, 1);
    assert.deepEqual(more.map((e) => e.id), ["9007199254740995"]);
    w.close();
  });
});

test("max_rows splits a large result over polls that follow at once; rows sharing a cursor value are never split", T, async () => {
  await withEnv(async (env, file) => {
    const w = new DatabaseSync(file);
    w.exec("CREATE TABLE ev (id INTEGER PRIMARY KEY, grp INTEGER NOT NULL)");
    const insert = w.prepare("INSERT INTO ev (grp) VALUES (?)");
    for (let i = 0; i < 25; i++) insert.run(Math.floor(i / 3) + 1); // groups of three
    // A long interval: only the "full page, read on at once" rule can bring every row soon.
    const input = env.start({
      driver: "sqlite", dsn: file, query: "SELECT id, grp FROM ev WHERE grp > $1 ORDER BY grp, id",
      cursor_column: "grp", max_rows: 4, interval: "1h",
    });
    const got: Array<Record<string, unknown>> = [];
    await collect(env, got, 25);
    assert.deepEqual(got.map((e) => e.id), Array.from({ length: 25 }, (_, i) => i + 1));
    await until(() => input.ctx.counters.detail.cursor === 9, "the cursor at the last group");
    w.close();
  });
});

test("with >= a run of equal cursor values longer than a page still gets through, each row once", T, async () => {
  await withEnv(async (env, file) => {
    const w = new DatabaseSync(file);
    w.exec("CREATE TABLE ev (id INTEGER PRIMARY KEY, ts TEXT NOT NULL)");
    const insert = w.prepare("INSERT INTO ev (ts) VALUES (?)");
    for (let i = 0; i < 5; i++) insert.run("2024-05-01T00:00:00Z");
    insert.run("2024-05-02T00:00:00Z");
    insert.run("2024-05-03T00:00:00Z");
    const input = env.start({
      driver: "sqlite", dsn: file, query: "SELECT id, ts FROM ev WHERE ts >= $1 ORDER BY ts, id",
      cursor_column: "ts", cursor_start: "2024-01-01", max_rows: 2, interval: "100ms",
    });
    const got: Array<Record<string, unknown>> = [];
    await collect(env, got, 7);
    await until(() => input.ctx.counters.detail.cursor === "2024-05-03T00:00:00Z", "the last cursor");
    await polls(env);
    got.push(...spooledRows(env));
    assert.deepEqual(got.map((e) => e.id), [1, 2, 3, 4, 5, 6, 7]);
    w.close();
  });
});

test("a locked database does not crash the input: it retries and reads once the lock is gone", T, async () => {
  await withEnv(async (env, file) => {
    const w = new DatabaseSync(file);
    w.exec("CREATE TABLE events (id INTEGER PRIMARY KEY, msg TEXT)");
    w.exec("INSERT INTO events (msg) VALUES ('before the lock')");
    // An exclusive write transaction (rollback journal) keeps every reader out.
    w.exec("BEGIN EXCLUSIVE");
    w.exec("INSERT INTO events (msg) VALUES ('inside the lock')");
    const input = env.start({ driver: "sqlite", dsn: file, query: "SELECT * FROM events WHERE id > $1 ORDER BY id", cursor_column: "id", interval: "100ms" });
    let failed: unknown;
    input.done.catch((err) => { failed = err; });
    await until(() => input.ctx.counters.errors > 0, "a reported error");
    assert.match(input.ctx.counters.last_error ?? "", /locked/);
    assert.equal(failed, undefined);
    assert.deepEqual(spooledRows(env), []);

    w.exec("COMMIT");
    const got: Array<Record<string, unknown>> = [];
    await collect(env, got, 2);
    assert.deepEqual(got.map((e) => e.msg), ["before the lock", "inside the lock"]);
    assert.equal(failed, undefined);
    w.close();
  });
});

test("a missing database file is retried until it appears; the agent never creates it", T, async () => {
  await withEnv(async (env, file) => {
    const input = env.start({ driver: "sqlite", dsn: file, query: "SELECT * FROM events WHERE id > $1 ORDER BY id", cursor_column: "id", interval: "100ms" });
    await until(() => input.ctx.counters.errors >= 2, "reported errors");
    assert.match(input.ctx.counters.last_error ?? "", /cannot open/);
    const w = new DatabaseSync(file);
    w.exec("CREATE TABLE events (id INTEGER PRIMARY KEY, msg TEXT); INSERT INTO events (msg) VALUES ('finally')");
    const got: Array<Record<string, unknown>> = [];
    await collect(env, got, 1);
    assert.deepEqual(got, [{ id: 1, msg: "finally" }]);
    w.close();
  });
});

test("a result without cursor_column fails the input with a message naming the column", T, async () => {
  await withEnv(async (env, file) => {
    const w = new DatabaseSync(file);
    w.exec("CREATE TABLE events (id INTEGER PRIMARY KEY, msg TEXT); INSERT INTO events (msg) VALUES ('x')");
    const input = env.start({ driver: "sqlite", dsn: file, query: "SELECT msg FROM events WHERE id > $1", cursor_column: "id", interval: "100ms" });
    await assert.rejects(input.done, (err: unknown) => err instanceof FatalInputError && /no column "id".*msg/.test(err.message));
    assert.deepEqual(spooledRows(env), []);
    w.close();
  });
});

test("a saved state of the wrong shape fails the input with an error naming the file and the key; no row is posted", T, async () => {
  await withEnv(async (env, db) => {
    const w = new DatabaseSync(db);
    w.exec("CREATE TABLE events (id INTEGER PRIMARY KEY, msg TEXT); INSERT INTO events (msg) VALUES ('a'), ('b')");
    w.close();
    const bads: Array<[unknown, string]> = [
      [null, ""], [[], ""], [{ files: [] }, "v"], [{ v: 1, cursor: true, start: 0 }, "cursor"], [{ v: 1, cursor: 5 }, "start"],
      [{ v: 1, cursor: {}, start: 0 }, "cursor"], [{ v: 1, cursor: 5, start: 0, at_cursor: ["row 5"] }, "at_cursor"],
      [{ v: 1, cursor: "12", cursor_bigint: true, start: 0 }, "cursor"], [{ v: 1, cursor: 5, start: 0, cursor_bigint: false }, "cursor_bigint"],
      [{ v: 1, cursor: 5, start: 0, offset: 5 }, "offset"],
    ];
    await env.expectStateRefused(bads, { driver: "sqlite", dsn: db, query: "SELECT * FROM events WHERE id > $1 ORDER BY id", cursor_column: "id", interval: "50ms" });
    assert.deepEqual(spooledRows(env), []);
  });
});
