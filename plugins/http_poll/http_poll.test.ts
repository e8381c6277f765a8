import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import plugin from "./index.ts";
import { serveHttp, withInputEnv, type InputTestEnv, type RecordedRequest, type RunningInput, type SpooledEvent } from "../../test/testing/plugin-harness.ts";
import { until } from "../../test/testing/until.ts";
import { FatalInputError } from "../../agent/plugin.ts";
import { errorMessage } from "../../agent/errortext.ts";
import { hashString, SeenSet } from "../common/seen.ts";

const FIXTURES = new URL("testdata/", import.meta.url);
// Feeds in the format of an input of their own keep their one copy in that input's testdata/.
const OPENPHISH = new URL("../openphish/testdata/", import.meta.url);
const PHISHTANK = new URL("../phishtank/testdata/", import.meta.url);
const MISP = new URL("../misp_api/testdata/", import.meta.url);
const fixture = (name: string, dir = FIXTURES) => readFile(new URL(name, dir));

// ---- a local API server ----------------------------------------------------------------------

interface Answer {
  status?: number;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
}

type Handler = (req: RecordedRequest, api: Api) => Answer;

interface Api {
  /** http://127.0.0.1:PORT */
  base: string;
  requests: RecordedRequest[];
  handle: Handler;
  close(): Promise<void>;
}

async function startApi(handle: Handler): Promise<Api> {
  const srv = await serveHttp((_req, res, seen) => {
    let a: Answer;
    try {
      a = api.handle(seen, api);
    } catch (err) {
      // A failed check in a handler is an answer the input reports, and the test sees.
      a = { status: 418, body: `test server: ${errorMessage(err)}` };
    }
    res.writeHead(a.status ?? 200, a.headers ?? {});
    res.end(a.body ?? "");
  });
  const api: Api = { base: srv.base, requests: srv.requests, handle, close: srv.close };
  return api;
}

// ---- running the input on a real spool and state store ---------------------------------------

const withEnv = (fn: (env: InputTestEnv) => Promise<void>) => withInputEnv(plugin, { name: "api", fsyncMs: 5 }, fn);

async function withApi(handle: Handler, fn: (api: Api) => Promise<void>): Promise<void> {
  const api = await startApi(handle);
  try {
    await fn(api);
  } finally {
    await api.close();
  }
}

const json = (v: unknown, headers: Record<string, string> = {}): Answer => ({
  headers: { "content-type": "application/json", ...headers },
  body: typeof v === "string" ? v : JSON.stringify(v),
});

const texts = (events: SpooledEvent[]) => events.map((e) => e.event);
const FAST = { interval: "100ms" };

/** Wait for `n` more finished polls of `r`. */
async function polls(r: RunningInput, n: number, what = `${n} more polls`): Promise<void> {
  const target = r.finished() + n;
  await until(() => r.finished() >= target, what);
}

// ---- options ---------------------------------------------------------------------------------

test("options: defaults, and contradictions refused with the key named", () => {
  const o = plugin.options.parse({ url: "https://api.example/x" });
  assert.equal(plugin.type, "http_poll");
  assert.equal(o.method, "GET");
  assert.equal(o.format, "json");
  assert.equal(o.interval, 300_000);
  assert.equal(o.timeout, 30_000);
  assert.equal(o.dedup, true);
  assert.equal(o.dedup_ttl, 30 * 86_400_000);
  assert.equal(o.max_pages, 100);
  assert.equal(o.page_start, 1);
  assert.equal(o.csv_header, true);
  assert.deepEqual(o.headers, {});

  const refused = (raw: Record<string, unknown>, key: string) => {
    const r = plugin.options.safeParse({ url: "https://api.example/x", ...raw });
    assert.equal(r.success, false, JSON.stringify(raw));
    const named = (i: { path: PropertyKey[]; code: string }) => (key === "" ? i.code === "unrecognized_keys" : i.path[0] === key);
    assert.ok(r.error!.issues.some(named), `${JSON.stringify(raw)}: ${JSON.stringify(r.error!.issues)}`);
  };
  refused({ url: "ftp://x/y" }, "url");
  refused({ body: "{}" }, "body");
  refused({ format: "text", records: "data" }, "records");
  refused({ format: "ndjson", next_field: "next" }, "next_field");
  refused({ next_field: "next", page_param: "page" }, "page_param");
  refused({ dedup: false, dedup_key: "id" }, "dedup_key");
  refused({ format: "text", dedup_key: "id" }, "dedup_key");
  refused({ format: "csv", csv_header: false }, "csv_columns");
  refused({ csv_columns: ["a"] }, "csv_columns");
  refused({ records: "data..items" }, "records");
  refused({ interval: "0ms" }, "interval");
  refused({ paths: ["x"] }, "");
  assert.equal(plugin.options.safeParse({ url: "https://api.example/x", format: "text", dedup_key: "line" }).success, true);
});

// ---- formats, records, dedup -----------------------------------------------------------------

test("json with a records path: first poll posts all as written, a re-poll nothing, a change only the difference, a restart nothing", async () => {
  let items = [
    '{"id": 1, "ioc": "198.51.100.1"}',
    '{"id": 2, "ioc": "evil.example", "tags": ["a", "b"]}',
  ];
  await withApi(() => json(`{"data": {"total": 2, "items": [${items.join(", ")}]}, "meta": {}}`), async (api) => {
    await withEnv(async (env) => {
      const raw = { url: `${api.base}/iocs`, records: "data.items", ...FAST };
      const r = env.start(raw);
      await polls(r, 1, "the first poll");
      assert.deepEqual(env.events(), items.map((event) => ({ kind: "json", event })));
      await polls(r, 2, "re-polls");
      assert.deepEqual(env.events(), []);

      items = [items[0]!, '{"id": 2, "ioc": "evil.example", "tags": ["a", "b", "c"]}', '{"id": 3, "ioc": "203.0.113.5"}'];
      await polls(r, 3, "polls of the changed source");
      assert.deepEqual(texts(env.events()), items.slice(1));
      assert.match(String(r.ctx.counters.detail.last_status), /^1 page, 3 records, 0 new$/);
      await r.stop();

      const before = api.requests.length;
      const again = env.start(raw);
      await polls(again, 2, "polls after the restart");
      assert.ok(api.requests.length > before);
      assert.deepEqual(env.events(), []);
    });
  });
});

test("a restart waits out the interval from the last poll; a changed URL is asked at once", async () => {
  await withApi(() => json([{ id: 1 }]), async (api) => {
    await withEnv(async (env) => {
      const r = env.start({ url: `${api.base}/a`, interval: "1h" });
      await polls(r, 1);
      await r.stop();
      const again = env.start({ url: `${api.base}/a`, interval: "1h" });
      await until(() => typeof again.ctx.counters.detail.next_poll === "string", "the next poll time");
      assert.ok(Date.parse(String(again.ctx.counters.detail.next_poll)) > Date.now() + 50 * 60_000, String(again.ctx.counters.detail.next_poll));
      await again.stop();
      assert.equal(api.requests.length, 1);

      const moved = env.start({ url: `${api.base}/b`, interval: "1h" });
      await polls(moved, 1);
      assert.deepEqual(api.requests.map((q) => q.url), ["/a", "/b"]);
      assert.ok(moved.logs.some((l) => l.includes("records changed: asking at once and in full")));
      // The record was posted from /a; the seen-set is kept across the change.
      assert.deepEqual(texts(env.events()), ['{"id":1}']);
    });
  });
});

test("dedup_key: a known key with changed content is posted again, an unchanged one is not (PhishTank records)", async () => {
  const dump = JSON.parse((await fixture("online-valid.json", PHISHTANK)).toString()) as Array<Record<string, unknown>>;
  let body = JSON.stringify(dump);
  await withApi(() => json(body), async (api) => {
    await withEnv(async (env) => {
      const r = env.start({ url: `${api.base}/data/online-valid.json`, dedup_key: "phish_id", ...FAST });
      await polls(r, 1);
      const first = env.events();
      assert.deepEqual(first.map((e) => JSON.parse(e.event).phish_id), ["7946016", "7946017"]);
      assert.deepEqual(first.map((e) => JSON.parse(e.event)), dump);

      // Same ids, one record changed (now offline), the other only moved in the array.
      const changed = { ...dump[1], online: "no" };
      body = JSON.stringify([changed, dump[0]]);
      await polls(r, 2);
      assert.deepEqual(env.events().map((e) => JSON.parse(e.event)), [changed]);
    });
  });
});

test("dedup by content within one answer: a repeated record is posted once; dedup = false posts everything every poll", async () => {
  await withApi(() => json('[{"a":1},{"a":1},{"a":2}]'), async (api) => {
    await withEnv(async (env) => {
      const r = env.start({ url: `${api.base}/x`, ...FAST });
      await polls(r, 2);
      assert.deepEqual(texts(env.events()), ['{"a":1}', '{"a":2}']);
      await r.stop();

      const all = env.start({ url: `${api.base}/x`, dedup: false, ...FAST });
      await polls(all, 2);
      const got = texts(env.events());
      assert.ok(got.length >= 6 && got.length % 3 === 0, `${got.length} events`);
      assert.deepEqual(got.slice(0, 3), ['{"a":1}', '{"a":1}', '{"a":2}']);
    });
  });
});

test("json: an object answer is one record, a pretty-printed one is put on one line; strings are text events, other values wrapped", async () => {
  let body = '{\n  "indicator": "198.51.100.9",\n  "type": "ip"\n}\n';
  await withApi(() => json(body), async (api) => {
    await withEnv(async (env) => {
      const r = env.start({ url: `${api.base}/one`, ...FAST });
      await polls(r, 1);
      assert.deepEqual(env.events(), [{ kind: "json", event: '{"indicator":"198.51.100.9","type":"ip"}' }]);
      body = '["evil.example", "", "two\\nlines", 42, null, {"k": "v"}]';
      await polls(r, 2);
      assert.deepEqual(env.events(), [
        { kind: "json", event: '{"value":""}' },
        { kind: "json", event: '{"value":"two\\nlines"}' },
        { kind: "json", event: '{"value":42}' },
        { kind: "json", event: '{"value":null}' },
        { kind: "json", event: '{"k": "v"}' },
        { kind: "text", event: "evil.example" },
      ]);
    });
  });
});

test("ndjson: each line an object event; a broken line is posted as message + parse_error (OpenPhish premium feed)", async () => {
  const premium = (await fixture("premium.jsonl", OPENPHISH)).toString().trim();
  const body = `${premium}\r\n\n{"broken": \n[1,2]\n`;
  await withApi(() => ({ headers: { "content-type": "application/x-ndjson" }, body }), async (api) => {
    await withEnv(async (env) => {
      const r = env.start({ url: `${api.base}/feed.jsonl`, format: "ndjson", ...FAST });
      await polls(r, 2);
      const got = env.events();
      assert.equal(got.length, 3);
      assert.deepEqual(got[0], { kind: "json", event: premium });
      assert.equal(JSON.parse(got[1]!.event).message, '{"broken":');
      assert.equal(typeof JSON.parse(got[1]!.event).parse_error, "string");
      assert.match(JSON.parse(got[2]!.event).parse_error, /not a JSON object \(an array\)/);
    });
  });
});

test("text: each non-empty line a text event, CRLF handled; a new line later is the only one posted (OpenPhish feed)", async () => {
  let feed = (await fixture("feed.txt", OPENPHISH)).toString().replaceAll("\n", "\r\n");
  await withApi(() => ({ headers: { "content-type": "text/plain" }, body: feed }), async (api) => {
    await withEnv(async (env) => {
      const r = env.start({ url: `${api.base}/feed.txt`, format: "text", dedup_key: "line", ...FAST });
      await polls(r, 1);
      assert.deepEqual(env.events(), [
        { kind: "text", event: "https://secure-login.example-bank.com.verify-acct.example/signin/" },
        { kind: "text", event: "http://198.51.100.23/office365/index.php?email=a@b.c" },
      ]);
      feed = `http://new.example/login\n${feed}`;
      await polls(r, 2);
      assert.deepEqual(env.events(), [{ kind: "text", event: "http://new.example/login" }]);
    });
  });
});

test("csv: header row names the columns; quoted fields, escaped quotes, CRLF and line breaks in quotes", async () => {
  const csv = await fixture("urls.csv");
  await withApi(() => ({ headers: { "content-type": "text/csv" }, body: csv }), async (api) => {
    await withEnv(async (env) => {
      const r = env.start({ url: `${api.base}/urls.csv`, format: "csv", dedup_key: "url", ...FAST });
      await polls(r, 1);
      const got = env.events().map((e) => JSON.parse(e.event));
      assert.deepEqual(got, [
        { first_seen_utc: "2024-05-01 10:00:00", url: "http://198.51.100.7/bins/mozi.m", url_status: "online", threat: "malware_download", tags: "elf,mozi", reporter: "abuse_ch" },
        { first_seen_utc: "2024-05-01 10:05:00", url: 'http://evil.example/a?x=1&y="2"', url_status: "offline", threat: "malware_download", tags: "exe\r\nzip", reporter: "anonymous" },
        { first_seen_utc: "2024-05-01 10:07:00", url: "http://203.0.113.9/x.sh", url_status: "online", threat: "malware_download", tags: "", reporter: "" },
      ]);
      await polls(r, 1);
      assert.deepEqual(env.events(), []);
    });
  });
});

test("csv without a header row: csv_columns name the fields; another delimiter", async () => {
  await withApi(() => ({ body: "198.51.100.1;scanner\n203.0.113.2;\"c2;panel\"\n" }), async (api) => {
    await withEnv(async (env) => {
      const r = env.start({ url: `${api.base}/list`, format: "csv", csv_header: false, csv_columns: ["ip", "kind"], csv_delimiter: ";", ...FAST });
      await polls(r, 1);
      assert.deepEqual(texts(env.events()), ['{"ip":"198.51.100.1","kind":"scanner"}', '{"ip":"203.0.113.2","kind":"c2;panel"}']);
    });
  });
});

// ---- pagination ------------------------------------------------------------------------------

test("next_field: relative and absolute next URLs are followed until the field is null, with the headers on every page", async () => {
  await withApi((req, api) => {
    assert.equal(req.headers["x-api-key"], "k-123456789");
    const page = new URL(req.url, "http://x").searchParams.get("page") ?? "1";
    if (page === "1") return json({ results: [{ n: 1 }, { n: 2 }], paging: { next: "/v1/items?page=2" } });
    if (page === "2") return json({ results: [{ n: 3 }], paging: { next: `${api.base}/v1/items?page=3` } });
    return json({ results: [{ n: 4 }], paging: { next: null } });
  }, async (api) => {
    await withEnv(async (env) => {
      const r = env.start({ url: `${api.base}/v1/items`, records: "results", next_field: "paging.next", headers: { "X-Api-Key": "k-123456789" }, interval: "1h" });
      await polls(r, 1);
      assert.deepEqual(texts(env.events()), ['{"n":1}', '{"n":2}', '{"n":3}', '{"n":4}']);
      assert.deepEqual(api.requests.slice(0, 3).map((q) => q.url), ["/v1/items", "/v1/items?page=2", "/v1/items?page=3"]);
      assert.equal(r.ctx.counters.detail.last_status, "3 pages, 4 records, 4 new");
      // Paged sources are never asked conditionally.
      assert.ok(api.requests.every((q) => q.headers["if-none-match"] === undefined));
    });
  });
});

test("next_field: a next page on another origin gets neither the headers nor the URL credentials", async () => {
  await withApi(() => json({ items: [{ n: 3 }], next: null }), async (other) => {
    await withApi((req) => {
      if (req.url.startsWith("/p2")) return json({ items: [{ n: 2 }], next: `${other.base}/p3` });
      return json({ items: [{ n: 1 }], next: "/p2" });
    }, async (api) => {
      await withEnv(async (env) => {
        const url = api.base.replace("http://", "http://user:pa55word@");
        const r = env.start({ url: `${url}/p1`, records: "items", next_field: "next", headers: { "X-Token": "t0p-secret-token" }, ...FAST });
        await polls(r, 1);
        assert.deepEqual(texts(env.events()), ['{"n":1}', '{"n":2}', '{"n":3}']);
        const basic = `Basic ${btoa("user:pa55word")}`;
        // The relative page on the same origin keeps the credentials...
        for (const q of api.requests.slice(0, 2)) {
          assert.equal(q.headers.authorization, basic);
          assert.equal(q.headers["x-token"], "t0p-secret-token");
        }
        // ...the page elsewhere gets none.
        assert.equal(other.requests[0]!.headers.authorization, undefined);
        assert.equal(other.requests[0]!.headers["x-token"], undefined);
      });
    });
  });
});

test("page_param: pages counted from page_start until an empty page; max_pages bounds a poll", async () => {
  await withApi((req) => {
    const page = Number(new URL(req.url, "http://x").searchParams.get("p"));
    return json({ data: page <= 3 ? [{ page, i: 0 }, { page, i: 1 }] : [] });
  }, async (api) => {
    await withEnv(async (env) => {
      const r = env.start({ url: `${api.base}/list?limit=2`, records: "data", page_param: "p", page_start: 1, interval: "1h" });
      await polls(r, 1);
      assert.equal(env.events().length, 6);
      assert.deepEqual(api.requests.map((q) => q.url), ["/list?limit=2&p=1", "/list?limit=2&p=2", "/list?limit=2&p=3", "/list?limit=2&p=4"]);
      assert.equal(r.ctx.counters.detail.last_status, "4 pages, 6 records, 6 new");
      await r.stop();

      api.requests.length = 0;
      const bounded = env.start({ url: `${api.base}/list`, records: "data", page_param: "p", page_start: 0, max_pages: 2, dedup: false, interval: "1h" });
      await polls(bounded, 1);
      assert.deepEqual(api.requests.map((q) => q.url), ["/list?p=0", "/list?p=1"]);
      assert.equal(env.events().length, 4);
      assert.match(String(bounded.ctx.counters.detail.last_status), /stopped at max_pages \(2\)/);
    });
  });
});

test("next_link_header: RFC 8288 Link rel=next is followed (NDJSON pages)", async () => {
  await withApi((req, api) => {
    if (req.url === "/events") return { body: '{"e":1}\n', headers: { link: '</events?after=1>; rel="next", </events>; rel="first"' } };
    if (req.url === "/events?after=1") return { body: '{"e":2}\n', headers: { link: `<${api.base}/events?after=2>; rel="prev next"` } };
    return { body: '{"e":3}\n', headers: { link: '</events>; rel="first"' } };
  }, async (api) => {
    await withEnv(async (env) => {
      const r = env.start({ url: `${api.base}/events`, format: "ndjson", next_link_header: true, ...FAST });
      await polls(r, 1);
      assert.deepEqual(texts(env.events()), ['{"e":1}', '{"e":2}', '{"e":3}']);
    });
  });
});

// ---- HTTP behaviour --------------------------------------------------------------------------

test("conditional GET: the ETag is sent back, a 304 posts nothing, and the validators survive a restart", async () => {
  const body = JSON.stringify([{ id: 1 }]);
  await withApi((req) => (req.headers["if-none-match"] === '"v1"' ? { status: 304 } : json(body, { etag: '"v1"' })), async (api) => {
    await withEnv(async (env) => {
      // dedup off: only the 304 keeps the record from being posted again.
      const raw = { url: `${api.base}/dump.json`, dedup: false, ...FAST };
      const r = env.start(raw);
      await polls(r, 3);
      assert.deepEqual(texts(env.events()), ['{"id":1}']);
      assert.equal(api.requests[0]!.headers["if-none-match"], undefined);
      assert.equal(api.requests[1]!.headers["if-none-match"], '"v1"');
      assert.equal(r.ctx.counters.detail.last_status, "not modified");
      await r.stop();

      const n = api.requests.length;
      const again = env.start(raw);
      await polls(again, 1);
      assert.equal(api.requests[n]!.headers["if-none-match"], '"v1"');
      assert.deepEqual(env.events(), []);
    });
  });
});

test("compressed answers: a gzip body (by magic bytes, or Content-Encoding) and a bzip2 one are undone", async () => {
  const ndjson = await fixture("premium.jsonl", OPENPHISH);
  const bz2 = await fixture("openphish-premium.jsonl.bz2");
  await withApi((req): Answer => {
    if (req.url === "/feed.jsonl.gz") return { headers: { "content-type": "application/gzip" }, body: gzipSync(ndjson) };
    if (req.url === "/feed.jsonl") return { headers: { "content-encoding": "gzip" }, body: gzipSync(ndjson) };
    return { headers: { "content-type": "application/x-bzip2" }, body: bz2 };
  }, async (api) => {
    await withEnv(async (env) => {
      for (const path of ["/feed.jsonl.gz", "/feed.jsonl", "/feed.jsonl.bz2"]) {
        const r = env.start({ url: `${api.base}${path}`, format: "ndjson", dedup: false, interval: "1h" });
        await polls(r, 1, `a poll of ${path}`);
        await r.stop();
        assert.deepEqual(texts(env.events()), [ndjson.toString().trim()], path);
      }
    });
  });
});

test("POST with a JSON body and an auth header checked by the server (MISP restSearch answer)", async () => {
  const misp = await fixture("events-restSearch.json", MISP);
  const query = '{"returnFormat": "json", "published": true, "limit": 50}';
  await withApi((req) => {
    if (req.method !== "POST" || req.headers.authorization !== "MISPKEY0123456789" || req.body !== query || req.headers["content-type"] !== "application/json") {
      return { status: 403, body: '{"message":"Authentication failed."}' };
    }
    return json(misp.toString());
  }, async (api) => {
    await withEnv(async (env) => {
      const r = env.start({
        url: `${api.base}/events/restSearch`, method: "POST", body: query, records: "response",
        headers: { Authorization: "MISPKEY0123456789", Accept: "application/json" }, dedup_key: "Event.uuid", ...FAST,
      });
      await polls(r, 1);
      const got = env.events();
      const want = (JSON.parse(misp.toString()) as { response: unknown[] }).response;
      assert.equal(r.ctx.counters.errors, 0, String(r.ctx.counters.last_error));
      assert.deepEqual(got.map((e) => JSON.parse(e.event)), want);
      // The pretty-printed record is one line, and it is the source's {"Event": {...}} unchanged.
      assert.ok(got.every((e) => e.kind === "json" && !e.event.includes("\n")));
    });
  });
});

test("a 500 is retried and the poll then succeeds; the API key never shows in status or logs", async () => {
  let calls = 0;
  await withApi((req) => {
    calls++;
    if (calls === 1) return { status: 500, body: `internal error for key ${req.headers["x-api-key"]}` };
    return json([{ id: 1 }]);
  }, async (api) => {
    await withEnv(async (env) => {
      const r = env.start({ url: `${api.base}/x`, headers: { "X-Api-Key": "very-secret-key-42" }, interval: "300ms" });
      await until(() => r.ctx.counters.events > 0, "the record after the retry");
      assert.deepEqual(texts(env.events()), ['{"id":1}']);
      assert.equal(r.ctx.counters.errors, 1);
      assert.match(String(r.ctx.counters.last_error), /HTTP 500/);
      assert.ok(!String(r.ctx.counters.last_error).includes("very-secret-key-42"));
      assert.ok(r.logs.length > 0 && r.logs.every((l) => !l.includes("very-secret-key-42")));
    });
  });
});

test("a malformed JSON answer is one reported error; the input keeps polling and posts once the answer is good", async () => {
  let body = '{"data": [{"id": 1}, {"id": 2},, ]}';
  await withApi(() => json(body), async (api) => {
    await withEnv(async (env) => {
      const r = env.start({ url: `${api.base}/x`, records: "data", ...FAST });
      await until(() => r.ctx.counters.errors >= 1, "the error");
      const err = String(r.ctx.counters.last_error);
      assert.match(err, /^bad json answer from http:\/\/127\.0\.0\.1:\d+\/x: /);
      assert.ok(!err.includes("\n"));
      body = '{"data": [{"id": 1}, {"id": 2}, {"id": 3}]}';
      await until(() => r.ctx.counters.events >= 3, "the good answer's records");
      // Nothing of the bad answer was posted twice.
      assert.deepEqual(texts(env.events()), ['{"id": 1}', '{"id": 2}', '{"id": 3}']);
    });
  });
});

test("a 401 stops the input as failed: the credentials need fixing", async () => {
  await withApi(() => ({ status: 401, body: "bad key" }), async (api) => {
    await withEnv(async (env) => {
      const r = env.start({ url: `${api.base}/x`, headers: { Authorization: "Bearer wrong-token-123" }, ...FAST });
      await assert.rejects(r.done, (err: unknown) => err instanceof Error && err.name === "FatalInputError" && /HTTP 401/.test(err.message) && !err.message.includes("wrong-token-123"));
    });
  });
});

test("a saved state of the wrong shape fails the input with an error naming the file and the key; nothing is asked or posted", async () => {
  await withApi(() => json([{ id: 1 }]), async (api) => {
    await withEnv(async (env) => {
      const source = hashString("anything");
      const seen = new SeenSet().toJSON();
      const bads: Array<[unknown, string]> = [
        [null, ""], [[], ""], [{ files: [] }, "v"], [{ v: 1, source, last_poll: -5 }, "last_poll"], [{ v: 1, source, last_poll: "5" }, "last_poll"],
        [{ v: 1, source, validators: { etag: "" } }, "validators.etag"], [{ v: 1, source, seen: { ...seen, seen: "A" } }, "seen.seen"],
        [{ v: 1, source, seen, cursor: 5 }, "cursor"],
      ];
      await env.expectStateRefused(bads, { url: `${api.base}/a`, ...FAST });
      assert.equal(api.requests.length, 0);
      assert.deepEqual(env.events(), []);
    });
  });
});
