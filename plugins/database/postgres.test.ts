// The database input against a real PostgreSQL server: a throwaway cluster from
// test/testing/postgres.ts (skipped, with the reason, where the server binaries are missing).
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import postgres from "postgres";
import { collect, createDatabaseTestEnv, polls, spooledRows, type DatabaseTestEnv } from "./input.testutil.ts";
import { dsnSecrets, pgTimestampToIso } from "./postgres.ts";
import plugin from "./index.ts";
import { postgresUnavailable, startPostgres, type PostgresServer } from "../../test/testing/postgres.ts";
import { until } from "../../test/testing/until.ts";

const unavailable = postgresUnavailable();
const T = { timeout: 90_000, skip: unavailable ?? false };

const PASSWORD = "hunter2#Q/x=pw";
const PASSWORD_IN_URL = encodeURIComponent(PASSWORD);

let started: Promise<{ pg: PostgresServer; admin: postgres.Sql }> | undefined;
let tables = 0;

/** The shared server (started by the first test that needs it) with a role `reader` that logs in with PASSWORD. */
function server(): Promise<{ pg: PostgresServer; admin: postgres.Sql }> {
  started ??= (async () => {
    const pg = await startPostgres();
    const admin = postgres(pg.url(), { max: 1, onnotice: () => {} });
    await admin.unsafe(`CREATE ROLE reader LOGIN PASSWORD '${PASSWORD}'`);
    await admin.unsafe("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO reader");
    return { pg, admin };
  })();
  return started;
}

/** A fresh table name per test, so tests share the server but not their rows. */
function table(): string {
  return `t${++tables}`;
}

function readerDsn(pg: PostgresServer, password = PASSWORD): string {
  return pg.url({ user: "reader", password });
}

async function withEnv(fn: (env: DatabaseTestEnv, s: { pg: PostgresServer; admin: postgres.Sql }) => Promise<void>): Promise<void> {
  const s = await server();
  const env = await createDatabaseTestEnv();
  try {
    await fn(env, s);
  } finally {
    await env.close();
  }
}

describe("database input, PostgreSQL", () => {
  after(async () => {
    if (!started) return;
    const { pg, admin } = await started;
    await admin.end({ timeout: 0 });
    await pg.destroy();
  });

  test("helpers: server timestamps become ISO 8601 with their microseconds; the dsn's password is a secret", () => {
    assert.equal(pgTimestampToIso("2024-05-01 10:00:00.123456+00"), "2024-05-01T10:00:00.123456Z");
    assert.equal(pgTimestampToIso("2024-05-01 10:00:00+05:30"), "2024-05-01T10:00:00+05:30");
    assert.equal(pgTimestampToIso("2024-05-01 10:00:00-07"), "2024-05-01T10:00:00-07:00");
    assert.equal(pgTimestampToIso("2024-05-01 10:00:00"), "2024-05-01T10:00:00");
    assert.equal(pgTimestampToIso("2024-05-01"), "2024-05-01");
    assert.equal(pgTimestampToIso("infinity"), "infinity");
    const secrets = dsnSecrets(`postgres://reader:${PASSWORD_IN_URL}@db:5432/logs`);
    assert.ok(secrets.includes(PASSWORD) && secrets.includes(PASSWORD_IN_URL));
    assert.equal(plugin.options.safeParse({ driver: "postgres", dsn: "postgres://db/x", query: "SELECT 1", cursor_column: "id" }).success, false);
  });

  test("bigserial id cursor: the first poll posts every row, a re-poll nothing, then only new rows; a restart nothing", T, async () => {
    await withEnv(async (env, { pg, admin }) => {
      const t = table();
      await admin.unsafe(`CREATE TABLE ${t} (
        id bigserial PRIMARY KEY, at timestamptz NOT NULL, msg text, ok boolean, tags text[],
        payload bytea, extra jsonb, amount numeric, ratio float8, note text)`);
      await admin.unsafe(`INSERT INTO ${t} (at, msg, ok, tags, payload, extra, amount, ratio, note) VALUES
        ('2024-05-01 10:00:00.123456+00', 'login failed', false, '{ssh,auth}', '\\x00ff', '{"src": "1.2.3.4"}', 12.50, 0.5, NULL),
        ('2024-05-01 10:00:01+00', 'login ok', true, '{}', NULL, NULL, NULL, NULL, 'x')`);
      const options = { driver: "postgres", dsn: readerDsn(pg), query: `SELECT * FROM ${t} WHERE id > $1 ORDER BY id`, cursor_column: "id", interval: "100ms" };
      const first = env.start(options);
      const got: Array<Record<string, unknown>> = [];
      await collect(env, got, 2);
      assert.deepEqual(got, [
        {
          id: 1, at: "2024-05-01T10:00:00.123456Z", msg: "login failed", ok: false, tags: ["ssh", "auth"],
          payload: "AP8=", extra: { src: "1.2.3.4" }, amount: "12.50", ratio: 0.5, note: null,
        },
        { id: 2, at: "2024-05-01T10:00:01Z", msg: "login ok", ok: true, tags: [], payload: null, extra: null, amount: null, ratio: null, note: "x" },
      ]);
      await polls(env);
      assert.deepEqual(spooledRows(env), []);

      await admin.unsafe(`INSERT INTO ${t} (at, msg) VALUES (now(), 'three'), (now(), 'four')`);
      const more: Array<Record<string, unknown>> = [];
      await collect(env, more, 2);
      await polls(env);
      more.push(...spooledRows(env));
      assert.deepEqual(more.map((e) => e.msg), ["three", "four"]);

      await first.stop();
      env.start(options);
      await polls(env);
      assert.deepEqual(spooledRows(env), []);
      await admin.unsafe(`INSERT INTO ${t} (at, msg) VALUES (now(), 'five')`);
      const last: Array<Record<string, unknown>> = [];
      await collect(env, last, 1);
      assert.deepEqual(last.map((e) => [e.id, e.msg]), [[5, "five"]]);
    });
  });

  test("timestamptz cursor keeps microseconds: rows within one millisecond are each posted once", T, async () => {
    await withEnv(async (env, { pg, admin }) => {
      const t = table();
      await admin.unsafe(`CREATE TABLE ${t} (ts timestamptz NOT NULL, msg text)`);
      await admin.unsafe(`INSERT INTO ${t} VALUES ('2024-05-01 10:00:00.000001+00', 'a'), ('2024-05-01 10:00:00.000002+00', 'b')`);
      const input = env.start({
        driver: "postgres", dsn: readerDsn(pg), query: `SELECT ts, msg FROM ${t} WHERE ts > $1 ORDER BY ts`,
        cursor_column: "ts", cursor_start: "2024-01-01T00:00:00Z", interval: "100ms",
      });
      const got: Array<Record<string, unknown>> = [];
      await collect(env, got, 2);
      await polls(env);
      got.push(...spooledRows(env));
      assert.deepEqual(got.map((e) => e.msg), ["a", "b"]);
      assert.equal(input.ctx.counters.detail.cursor, "2024-05-01T10:00:00.000002Z");
      await admin.unsafe(`INSERT INTO ${t} VALUES ('2024-05-01 10:00:00.000003+00', 'c')`);
      const more: Array<Record<string, unknown>> = [];
      await collect(env, more, 1);
      await polls(env);
      more.push(...spooledRows(env));
      assert.deepEqual(more.map((e) => e.msg), ["c"]);
    });
  });

  test("bigint cursor past 2^53 and ISO text cursor with >=: exact, each row once, also after a restart", T, async () => {
    await withEnv(async (env, { pg, admin }) => {
      const big = table();
      await admin.unsafe(`CREATE TABLE ${big} (id bigint PRIMARY KEY, msg text)`);
      await admin.unsafe(`INSERT INTO ${big} VALUES (9007199254740993, 'a'), (9007199254740994, 'b')`);
      const bigOptions = { driver: "postgres", dsn: readerDsn(pg), query: `SELECT * FROM ${big} WHERE id > $1 ORDER BY id`, cursor_column: "id", interval: "100ms" };
      const first = env.start(bigOptions);
      const got: Array<Record<string, unknown>> = [];
      await collect(env, got, 2);
      await polls(env);
      got.push(...spooledRows(env));
      assert.deepEqual(got, [{ id: "9007199254740993", msg: "a" }, { id: "9007199254740994", msg: "b" }]);
      await first.stop();
      const second = env.start(bigOptions);
      await polls(env);
      assert.deepEqual(spooledRows(env), []);
      await second.stop();

      const text = table();
      await admin.unsafe(`CREATE TABLE ${text} (ts text NOT NULL, host text)`);
      await admin.unsafe(`INSERT INTO ${text} VALUES ('2024-05-01T10:00:00Z', 'a'), ('2024-05-01T10:00:01Z', 'a'), ('2024-05-01T10:00:01Z', 'b')`);
      const textEnv = await createDatabaseTestEnv();
      try {
        const options = {
          driver: "postgres", dsn: readerDsn(pg), query: `SELECT ts, host FROM ${text} WHERE ts >= $1 ORDER BY ts`,
          cursor_column: "ts", cursor_start: "2024-01-01", interval: "100ms",
        };
        const a = textEnv.start(options);
        const rows: Array<Record<string, unknown>> = [];
        await collect(textEnv, rows, 3);
        await polls(textEnv);
        rows.push(...spooledRows(textEnv));
        assert.deepEqual(rows.map((e) => `${e.ts} ${e.host}`), ["2024-05-01T10:00:00Z a", "2024-05-01T10:00:01Z a", "2024-05-01T10:00:01Z b"]);
        await a.stop();
        textEnv.start(options);
        await polls(textEnv);
        assert.deepEqual(spooledRows(textEnv), []);
      } finally {
        await textEnv.close();
      }
    });
  });

  test("max_rows pages through a large result with polls that follow at once", T, async () => {
    await withEnv(async (env, { pg, admin }) => {
      const t = table();
      await admin.unsafe(`CREATE TABLE ${t} AS SELECT g::bigint AS id, 'row ' || g AS msg FROM generate_series(1, 2500) g`);
      await admin.unsafe(`GRANT SELECT ON ${t} TO reader`);
      env.start({ driver: "postgres", dsn: readerDsn(pg), query: `SELECT * FROM ${t} WHERE id > $1 ORDER BY id`, cursor_column: "id", max_rows: 1000, interval: "1h" });
      const got: Array<Record<string, unknown>> = [];
      await collect(env, got, 2500);
      assert.deepEqual(got.map((e) => e.id), Array.from({ length: 2500 }, (_, i) => i + 1));
    });
  });

  test("a locked table (a query past query_timeout) is reported and retried; the input keeps running", T, async () => {
    await withEnv(async (env, { pg, admin }) => {
      const t = table();
      await admin.unsafe(`CREATE TABLE ${t} (id serial PRIMARY KEY, msg text)`);
      await admin.unsafe(`INSERT INTO ${t} (msg) VALUES ('one')`);
      const locker = postgres(pg.url(), { max: 1, onnotice: () => {} });
      let release!: () => void;
      const released = new Promise<void>((r) => { release = r; });
      let locked!: () => void;
      const isLocked = new Promise<void>((r) => { locked = r; });
      const holding = locker.begin(async (tx) => {
        await tx.unsafe(`LOCK TABLE ${t} IN ACCESS EXCLUSIVE MODE`);
        locked();
        await released;
      });
      try {
        await isLocked;
        const input = env.start({
          driver: "postgres", dsn: readerDsn(pg), query: `SELECT * FROM ${t} WHERE id > $1 ORDER BY id`,
          cursor_column: "id", interval: "100ms", query_timeout: "300ms",
        });
        let failed: unknown;
        input.done.catch((err) => { failed = err; });
        await until(() => input.ctx.counters.errors > 0, "a reported error");
        assert.match(input.ctx.counters.last_error ?? "", /statement timeout/);
        assert.equal(failed, undefined);
        release();
        await holding;
        const got: Array<Record<string, unknown>> = [];
        await collect(env, got, 1);
        assert.deepEqual(got, [{ id: 1, msg: "one" }]);
        assert.equal(failed, undefined);
      } finally {
        release();
        await holding.catch(() => {});
        await locker.end({ timeout: 0 });
      }
    });
  });

  test("password DSN: with the server down or a wrong password, the password is in no status, error or log", T, async () => {
    await withEnv(async (env, { pg, admin }) => {
      const t = table();
      await admin.unsafe(`CREATE TABLE ${t} (id serial PRIMARY KEY, msg text)`);
      await admin.unsafe(`INSERT INTO ${t} (msg) VALUES ('before')`);
      const query = `SELECT * FROM ${t} WHERE id > $1 ORDER BY id`;
      const input = env.start({ driver: "postgres", dsn: readerDsn(pg), query, cursor_column: "id", interval: "100ms" });
      const got: Array<Record<string, unknown>> = [];
      await collect(env, got, 1);

      const leaks = () => {
        const seen = JSON.stringify(input.ctx.counters) + env.logs.join("\n");
        return [PASSWORD, PASSWORD_IN_URL, "hunter2"].filter((s) => seen.includes(s));
      };
      await pg.stop();
      try {
        await until(() => input.ctx.counters.errors >= 2, "errors while the server is down");
        assert.ok(input.ctx.counters.last_error, "a last_error");
        assert.match(String(input.ctx.counters.detail.last_status), /^error: /);
        assert.deepEqual(leaks(), []);
      } finally {
        await pg.start();
      }
      // Back up: the input connects again by itself.
      await admin.unsafe(`INSERT INTO ${t} (msg) VALUES ('after')`);
      await collect(env, got, 2);
      assert.deepEqual(got.map((e) => e.msg), ["before", "after"]);

      const wrong = "wr0ng-hunter2-pw";
      const bad = await createDatabaseTestEnv();
      try {
        const b = bad.start({ driver: "postgres", dsn: readerDsn(pg, wrong), query, cursor_column: "id", interval: "100ms" });
        await until(() => b.ctx.counters.errors > 0, "an authentication error");
        assert.match(b.ctx.counters.last_error ?? "", /password authentication failed/);
        const seen = JSON.stringify(b.ctx.counters) + bad.logs.join("\n");
        assert.ok(!seen.includes(wrong), "the wrong password shows");
      } finally {
        await bad.close();
      }
      assert.deepEqual(leaks(), []);
    });
  });
});
