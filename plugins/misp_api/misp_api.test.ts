import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { IncomingHttpHeaders } from "node:http";
import plugin from "./index.ts";
import { FatalInputError } from "../../agent/plugin.ts";
import { drainSpool, serveHttp, withInputEnv, type InputTestEnv, type TestHttpServer } from "../../test/testing/plugin-harness.ts";
import { until } from "../../test/testing/until.ts";
import { hashString, SeenSet } from "../common/seen.ts";

const FIXTURES = new URL("testdata/", import.meta.url);
const TEMPLATE = JSON.parse(readFileSync(new URL("events-restSearch.json", FIXTURES), "utf8")).response[0];
const ERROR_403 = readFileSync(new URL("error-403.json", FIXTURES), "utf8");
const KEY = "Xk9QmZ2vT7rLw4sNcY8bHd1fGj6pAe3uKo5iRt0x";

type MispEvent = { Event: Record<string, any> };

/** The fixture event as event number `n`, last changed at `ts`. */
function makeEvent(n: number, ts: number, change: (e: Record<string, any>) => void = () => {}): MispEvent {
  const e = structuredClone(TEMPLATE) as MispEvent;
  e.Event.id = String(n);
  e.Event.uuid = `5f8a3c1e-8d4c-4b7a-9a51-${String(n).padStart(12, "0")}`;
  e.Event.info = `event ${n}`;
  e.Event.timestamp = String(ts);
  change(e.Event);
  return e;
}

interface SeenRequest {
  headers: IncomingHttpHeaders;
  body: Record<string, any>;
  at: number;
}

/** A MISP stand-in: restSearch over its events (timestamp >=, published, tags, limit/page), key checked. */
class MispServer {
  events: MispEvent[] = [];
  requests: SeenRequest[] = [];
  /** Answer the next request with 429 and this X-Rate-Limit-Reset. */
  rateLimitOnce: number | null = null;
  /** Called before each search is answered (to change the events between pages); a number it returns is the answer's status. */
  beforeAnswer: (body: Record<string, any>) => number | void = () => {};
  private server!: TestHttpServer;
  url = "";

  constructor(readonly key: string) {}

  /** Polls started so far (each poll asks for page 1 first). */
  get polls(): number {
    return this.requests.filter((r) => r.body.page === 1).length;
  }

  async start(): Promise<this> {
    this.server = await serveHttp((req, res, seen) => {
      let body: Record<string, any> = {};
      try {
        body = JSON.parse(seen.body);
      } catch {
        res.writeHead(400).end('{"message":"bad JSON"}');
        return;
      }
      this.requests.push({ headers: req.headers, body, at: seen.at });
      if (req.method !== "POST" || req.url !== "/events/restSearch") return void res.writeHead(404).end();
      if (req.headers.authorization !== this.key) {
        return void res.writeHead(403, { "content-type": "application/json" }).end(ERROR_403);
      }
      if (this.rateLimitOnce !== null) {
        const reset = this.rateLimitOnce;
        this.rateLimitOnce = null;
        return void res.writeHead(429, { "content-type": "application/json", "x-rate-limit-reset": String(reset) })
          .end('{"name":"Rate limit exceeded.","message":"Rate limit exceeded."}');
      }
      if (body.returnFormat !== "json") return void res.writeHead(400).end('{"message":"returnFormat"}');
      const status = this.beforeAnswer(body);
      if (typeof status === "number") return void res.writeHead(status, { "content-type": "application/json" }).end('{"message":"failed"}');
      const matches = this.events
        .filter((e) => body.timestamp === undefined || Number(e.Event.timestamp) >= Number(body.timestamp))
        .filter((e) => body.published === undefined || e.Event.published === body.published)
        .filter((e) => !Array.isArray(body.tags) || e.Event.Tag.some((t: { name: string }) => body.tags.includes(t.name)))
        .sort((a, b) => Number(a.Event.id) - Number(b.Event.id));
      const limit = Number(body.limit ?? matches.length);
      const page = Number(body.page ?? 1);
      const answer = matches.slice((page - 1) * limit, page * limit);
      res.writeHead(200, { "content-type": "application/json", "x-result-count": String(matches.length) });
      // MISP pretty-prints its answers.
      res.end(JSON.stringify({ response: answer }, null, 1));
    });
    this.url = this.server.base;
    return this;
  }

  close(): Promise<void> {
    return this.server.close();
  }
}

const withEnv = (fn: (env: InputTestEnv) => Promise<void>) => withInputEnv(plugin, { name: "misp" }, fn);

/** Events spooled since the last call, as [uuid, timestamp] pairs (the lines checked to be MISP events). */
function posted(env: InputTestEnv): Array<[string, string]> {
  return env.jsonLines().map((event) => {
    const e = JSON.parse(event).Event;
    return [e.uuid, e.timestamp] as [string, string];
  });
}

const version = (e: MispEvent): [string, string] => [e.Event.uuid, e.Event.timestamp];
const sorted = (list: Array<[string, string]>) => [...list].sort((a, b) => (a.join() < b.join() ? -1 : 1));

/** Waits until `n` more polls have started, so the ones before them have finished. */
async function polls(server: MispServer, n: number): Promise<void> {
  const target = server.polls + n;
  await until(() => server.polls >= target, `${n} more polls`);
}

test("options: defaults, and filters may not set what the input sets", () => {
  const o = plugin.options.parse({ url: "https://misp.example.org", key: "k" });
  assert.equal(o.interval, 300_000);
  assert.equal(o.page_size, 100);
  assert.equal(o.since, 7 * 86_400_000);
  assert.deepEqual(o.filters, {});
  assert.equal(o.tls_verify, true);
  assert.equal(plugin.options.safeParse({ url: "https://m", key: "k", filters: { published: true, tags: ["tlp:white", "!tlp:red"] } }).success, true);
  const bad = plugin.options.safeParse({ url: "https://m", key: "k", filters: { timestamp: 5 } });
  assert.equal(bad.success, false);
  assert.match(bad.error!.issues[0]!.message, /timestamp/);
  assert.equal(plugin.options.safeParse({ url: "ftp://m", key: "k" }).success, false);
  assert.equal(plugin.options.safeParse({ url: "https://m" }).success, false);
});

test("incremental restSearch: all once across pages, then only new and edited event versions, nothing after a restart", async () => {
  const server = await new MispServer(KEY).start();
  try {
    await withEnv(async (env) => {
      const now = Math.floor(Date.now() / 1000);
      const top = now - 600;
      server.events = [
        makeEvent(1, now - 30 * 86_400), // before `since`
        makeEvent(2, now - 3600),
        makeEvent(3, now - 3000),
        makeEvent(4, now - 2400),
        // three events on the same second, split over pages by page_size 2
        makeEvent(5, top),
        makeEvent(6, top),
        makeEvent(7, top),
        makeEvent(8, now - 1200, (e) => (e.published = false)), // filtered out: published = true
        makeEvent(9, now - 1200, (e) => (e.Tag = [{ name: "tlp:red" }])), // filtered out: tags
      ];
      const options = {
        url: `${server.url}/`, key: KEY, interval: "100ms", page_size: 2, since: "7d",
        filters: { published: true, tags: ["tlp:white"] },
      };
      const first = env.start(options);
      await polls(server, 2);
      assert.deepEqual(sorted(posted(env)), sorted(server.events.slice(1, 7).map(version)));

      // What the first poll asked: the raw key, JSON both ways, the filters merged in.
      const firstPoll = server.requests.slice(0, 4);
      assert.deepEqual(firstPoll.map((r) => r.body.page), [1, 2, 3, 4]);
      for (const r of firstPoll) {
        assert.equal(r.headers.authorization, KEY);
        assert.match(String(r.headers["content-type"]), /^application\/json/);
        assert.equal(r.headers.accept, "application/json");
        assert.equal(r.body.returnFormat, "json");
        assert.equal(r.body.limit, 2);
        assert.equal(r.body.published, true);
        assert.deepEqual(r.body.tags, ["tlp:white"]);
        assert.ok(Math.abs(r.body.timestamp - (now - 7 * 86_400)) <= 5, `first poll from now - since, got ${r.body.timestamp}`);
      }

      // A re-poll asks from the cursor (inclusive) and posts nothing.
      await polls(server, 2);
      assert.deepEqual(posted(env), []);
      assert.equal(server.requests.at(-1)!.body.timestamp, top);

      // An event arriving on the cursor's own second is still posted.
      const late = makeEvent(10, top);
      server.events.push(late);
      await polls(server, 2);
      assert.deepEqual(posted(env), [version(late)]);

      // An edited event (MISP stamps it with its clock) is posted again, once; a new event once.
      const edited = makeEvent(3, Math.floor(Date.now() / 1000), (e) => (e.info = "event 3, edited"));
      server.events[2] = edited;
      const fresh = makeEvent(11, Math.floor(Date.now() / 1000));
      server.events.push(fresh);
      await polls(server, 2);
      assert.deepEqual(sorted(posted(env)), sorted([version(edited), version(fresh)]));
      await polls(server, 2);
      assert.deepEqual(posted(env), []);

      await first.stop();
      await first.ctx.settled();
      const before = server.requests.length;
      // The saved cursor: the last poll may have moved it after its request went out.
      const cursor = (await first.ctx.loadState() as { cursor: number }).cursor;
      assert.ok(cursor > top && cursor <= Math.floor(Date.now() / 1000) - 60, `the cursor moved on, a minute behind MISP's clock: ${cursor}`);
      const second = env.start(options);
      await polls(server, 3);
      assert.deepEqual(posted(env), []);
      assert.equal(server.requests[before]!.body.timestamp, cursor, "a restart goes on from the saved cursor");
      assert.equal(second.ctx.counters.errors, 0);
    });
  } finally {
    await server.close();
  }
});

test("an event edited while a poll pages through the results is posted by the next poll", async () => {
  const server = await new MispServer(KEY).start();
  try {
    await withEnv(async (env) => {
      const now = Math.floor(Date.now() / 1000);
      const old = makeEvent(1, now - 30 * 86_400);
      server.events = [old, ...[2, 3, 4, 5, 6].map((n) => makeEvent(n, now - 3000 + n * 10))];
      let edited: MispEvent | undefined;
      server.beforeAnswer = (body) => {
        // Between pages 1 and 2 of the first poll, the old event is edited: it enters the
        // result set at a position already read. An event created a second later is read
        // by this poll, on its last page.
        if (edited || body.page !== 2) return;
        const at = Math.floor(Date.now() / 1000);
        edited = makeEvent(1, at, (e) => (e.info = "event 1, edited"));
        server.events[0] = edited;
        server.events.push(makeEvent(7, at + 1));
      };
      env.start({ url: server.url, key: KEY, interval: "100ms", page_size: 2 });
      await polls(server, 3);
      assert.deepEqual(sorted(posted(env)), sorted(server.events.map(version)));
    });
  } finally {
    await server.close();
  }
});

test("an event leaving the result set while a poll pages does not make the poll miss another", async () => {
  const server = await new MispServer(KEY).start();
  try {
    await withEnv(async (env) => {
      const now = Math.floor(Date.now() / 1000);
      const events = [1, 2, 3, 4, 5, 6].map((n) => makeEvent(n, now - 3000 + n * 10));
      server.events = [...events];
      let removed = false;
      server.beforeAnswer = (body) => {
        // Event 1, already read on page 1, is deleted: event 3 moves back onto page 1.
        if (removed || body.page !== 2) return;
        removed = true;
        server.events.shift();
      };
      const { ctx } = env.start({ url: server.url, key: KEY, interval: "100ms", page_size: 2 });
      await polls(server, 3);
      assert.deepEqual(sorted(posted(env)), sorted(events.map(version)));
      assert.equal(ctx.counters.errors, 0);
    });
  } finally {
    await server.close();
  }
});

test("a poll failing on a later page is repeated without posting its first pages again", async () => {
  const server = await new MispServer(KEY).start();
  try {
    await withEnv(async (env) => {
      const now = Math.floor(Date.now() / 1000);
      const events = [1, 2, 3, 4, 5].map((n) => makeEvent(n, now - 3000 + n));
      server.events = events;
      let failed = false;
      server.beforeAnswer = (body) => {
        if (failed || body.page !== 2) return;
        failed = true;
        return 500;
      };
      const { ctx } = env.start({ url: server.url, key: KEY, interval: "100ms", page_size: 2 });
      await polls(server, 3);
      assert.deepEqual(sorted(posted(env)), sorted(events.map(version)));
      assert.equal(ctx.counters.errors, 1);
      assert.match(String(ctx.counters.last_error), /HTTP 500/);
      // The repeated poll started from the old cursor: with none saved yet, from now - since
      // again (a second later at most), not from the events the failed poll saw.
      const firstPages = server.requests.filter((r) => r.body.page === 1);
      const moved = firstPages[1]!.body.timestamp - firstPages[0]!.body.timestamp;
      assert.ok(moved >= 0 && moved <= 1, `the repeated poll asked from ${moved} s later`);
    });
  } finally {
    await server.close();
  }
});

test("the posted event is MISP's own JSON for it, on one line", async () => {
  const server = await new MispServer(KEY).start();
  try {
    await withEnv(async (env) => {
      const event = makeEvent(1, Math.floor(Date.now() / 1000) - 60);
      server.events = [event];
      env.start({ url: server.url, key: KEY, interval: "100ms" });
      await polls(server, 2);
      const lines = drainSpool(env.spool, []);
      assert.equal(lines.length, 1);
      assert.equal(lines[0]!.event, JSON.stringify(event));
    });
  } finally {
    await server.close();
  }
});

test("403 (key refused): the input fails with a message naming the key problem, never the key", async () => {
  const server = await new MispServer("the-right-key-0123456789").start();
  try {
    await withEnv(async (env) => {
      const { ctx, done } = env.start({ url: server.url, key: KEY, interval: "100ms" });
      const err = await done.then(() => assert.fail("run() resolved"), (e: unknown) => e);
      assert.ok(err instanceof FatalInputError, String(err));
      assert.match(err.message, /inputs\.misp\.key/);
      assert.match(err.message, /refused the API key/);
      assert.match(err.message, /403/);
      assert.match(err.message, /Authentication failed/);
      assert.ok(!err.message.includes(KEY));
      assert.ok(!JSON.stringify(ctx.counters).includes(KEY));
      assert.match(String(ctx.counters.detail.last_status), /^failed: /);
      assert.equal(server.requests.length, 1, "no retry loop on a refused key");
    });
  } finally {
    await server.close();
  }
});

test("429 with X-Rate-Limit-Reset: waits that long, then polls and posts", async () => {
  const server = await new MispServer(KEY).start();
  try {
    await withEnv(async (env) => {
      const event = makeEvent(1, Math.floor(Date.now() / 1000) - 60);
      server.events = [event];
      server.rateLimitOnce = 1;
      const { ctx } = env.start({ url: server.url, key: KEY, interval: "100ms" });
      await until(() => server.requests.length >= 2, "the retry after the rate limit");
      const waited = server.requests[1]!.at - server.requests[0]!.at;
      assert.ok(waited >= 900, `retried after ${waited} ms, before the 1 s reset`);
      await polls(server, 1);
      assert.deepEqual(posted(env), [version(event)]);
      assert.equal(ctx.counters.errors, 1);
      assert.match(String(ctx.counters.last_error), /rate limit/);
    });
  } finally {
    await server.close();
  }
});

test("elements that are not MISP events are skipped and counted, the others posted", async () => {
  const server = await new MispServer(KEY).start();
  try {
    await withEnv(async (env) => {
      const good = makeEvent(1, Math.floor(Date.now() / 1000) - 60);
      const noUuid = makeEvent(2, Math.floor(Date.now() / 1000) - 60, (e) => delete e.uuid);
      server.events = [good, noUuid];
      const { ctx } = env.start({ url: server.url, key: KEY, interval: "100ms" });
      await polls(server, 2);
      assert.deepEqual(posted(env), [version(good)]);
      assert.ok(ctx.counters.errors >= 1);
      assert.match(String(ctx.counters.last_error), /no "uuid"/);
    });
  } finally {
    await server.close();
  }
});

test("a saved state of the wrong shape fails the input with an error naming the file and the key; nothing is searched or posted", async () => {
  const server = await new MispServer(KEY).start();
  try {
    server.events = [makeEvent(1, Math.floor(Date.now() / 1000) - 3600)];
    await withEnv(async (env) => {
      const source = hashString(JSON.stringify([server.url, {}]));
      const seen = new SeenSet().toJSON();
      const bads: Array<[unknown, string]> = [
        [null, ""], [{ files: [] }, "v"], [{ v: 1, source }, "cursor"], [{ v: 1, source, cursor: -5 }, "cursor"],
        [{ v: 1, source, cursor: "1700000000" }, "cursor"], [{ v: 1, source, cursor: 1.5 }, "cursor"],
        [{ v: 1, source: "", cursor: null }, "source"], [{ v: 1, source, cursor: null, seen: { ...seen, values: ["x"] } }, "seen.values"],
      ];
      await env.expectStateRefused(bads, { url: server.url, key: KEY, interval: "100ms" });
      assert.equal(server.requests.length, 0);
      assert.deepEqual(env.events(), []);
    });
  } finally {
    await server.close();
  }
});
