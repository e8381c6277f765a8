import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { Buffer } from "node:buffer";
import plugin from "./index.ts";
import { lineBatches, type Line } from "./lines.ts";
import { afterPoll, answerFile, serveHttp, withInputEnv, type InputTestEnv } from "../../test/testing/plugin-harness.ts";
import { until } from "../../test/testing/until.ts";
import { hashString, SeenSet } from "../common/seen.ts";

/** Answers a request (a server's whole handler, or part of one). */
type Handler = (req: IncomingMessage, res: ServerResponse) => void;

const FIXTURES = new URL("./testdata/", import.meta.url);
const USER = "premium-user";
const PASSWORD = "correct-horse-battery-staple";
const enc = (s: string) => new TextEncoder().encode(s);

const BASIC = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString("base64")}`;

/** Serves `body` with ETag / 304 like a static file server; with `auth`, only to basic auth. */
function feed(body: string, etag: string | null, auth = false): Handler {
  return (req, res) => {
    if (auth && req.headers.authorization !== BASIC) {
      res.writeHead(401, { "www-authenticate": 'Basic realm="feed"' }).end("authentication required");
      return;
    }
    answerFile(req, res, body, etag, "text/plain");
  };
}

const withEnv = (fn: (env: InputTestEnv) => Promise<void>) => withInputEnv(plugin, { name: "op" }, fn);

const text = (...urls: string[]) => urls.map((event) => ({ kind: "text", event }));
const json = (...lines: string[]) => lines.map((event) => ({ kind: "json", event }));

test("options: defaults; username and password go together", () => {
  assert.equal(plugin.type, "openphish");
  assert.deepEqual(plugin.options.parse({}), {
    url: "https://openphish.com/feed.txt", interval: 3_600_000, format: "text", timeout: 60_000,
    dedup_ttl: 30 * 86_400_000, max_seen: 1_000_000, tls_verify: true,
  });
  assert.equal(plugin.options.safeParse({ format: "csv" }).success, false);
  assert.equal(plugin.options.safeParse({ url: "file:///etc/passwd" }).success, false);
  assert.equal(plugin.options.safeParse({ interval: "1 hour" }).success, false);
  assert.equal(plugin.options.safeParse({ urls: [] }).success, false);
  const lone = plugin.options.safeParse({ username: USER });
  assert.equal(lone.success, false);
  assert.deepEqual(lone.error!.issues.map((i) => [i.path, i.message]), [
    [["password"], "required together with username (premium feed basic authentication)"],
  ]);
  assert.equal(plugin.options.safeParse({ password: PASSWORD }).error!.issues[0]!.path[0], "username");
  assert.equal(plugin.options.safeParse({ username: USER, password: PASSWORD, format: "jsonl" }).success, true);
});

test("lines: split anywhere, CRLF, blank lines dropped, overlong lines reported, bounded batches", async () => {
  const body = "a\r\n\r\nbb\n" + "x".repeat(50) + "\nc\u00e9\n  d  \nlast";
  const bytes = enc(body);
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      // One byte at a time: splits CRLF and the two-byte UTF-8 character.
      for (const b of bytes) c.enqueue(Uint8Array.of(b));
      c.close();
    },
  });
  const batches: Line[][] = [];
  for await (const b of lineBatches(stream, 2, 20)) batches.push(b);
  assert.deepEqual(batches.map((b) => b.length), [2, 2, 2]);
  assert.deepEqual(batches.flat(), [
    { no: 1, text: "a" }, { no: 3, text: "bb" }, { no: 4, text: null }, { no: 5, text: "c\u00e9" }, { no: 6, text: "d" }, { no: 7, text: "last" },
  ]);
});

test("text feed: first poll posts each URL; 304, 200-same, a changed feed and a restart post only new URLs", async () => {
  const body = await readFile(new URL("feed.txt", FIXTURES), "utf8");
  const urls = body.split("\n").filter((l) => l !== "");
  assert.equal(urls.length, 2);
  assert.ok(body.endsWith("\n\n"), "the fixture has a blank last line");
  const srv = await serveHttp(feed(body, '"f1"'));
  try {
    await withEnv(async (env) => {
      const opts = { url: `${srv.base}/feed.txt`, interval: "100ms" };
      let input = env.start(opts);
      await afterPoll(srv, 1);
      assert.deepEqual(env.events(), text(...urls));
      await afterPoll(srv, 2);
      assert.equal(srv.requests[1]!.headers["if-none-match"], '"f1"');
      assert.deepEqual(env.events(), []);

      srv.handler = feed(body, null);
      let n = srv.requests.length;
      await afterPoll(srv, n + 1);
      assert.deepEqual(env.events(), []);

      // One URL left, one arrived, one listed twice.
      const fresh = "https://new-phish.example/login";
      srv.handler = feed(`${urls[1]}\n${fresh}\n${fresh}\n`, '"f2"');
      n = srv.requests.length;
      await afterPoll(srv, n + 1);
      assert.deepEqual(env.events(), text(fresh));
      // The URL that left comes back within dedup_ttl: still not posted again.
      srv.handler = feed(`${urls[0]}\n${urls[1]}\n${fresh}\n`, '"f3"');
      n = srv.requests.length;
      await afterPoll(srv, n + 1);
      assert.deepEqual(env.events(), []);

      await input.stop();
      n = srv.requests.length;
      input = env.start(opts);
      await afterPoll(srv, n + 1);
      assert.equal(srv.requests[n]!.headers["if-none-match"], '"f3"');
      assert.equal(input.ctx.counters.detail.last_status, "not modified");
      assert.deepEqual(env.events(), []);
      assert.equal(input.ctx.counters.errors, 0);
    });
  } finally {
    await srv.close();
  }
});

test("a URL gone from the feed for longer than dedup_ttl is posted again when it returns", async () => {
  const [a, b] = ["https://a.example/", "https://b.example/"];
  const srv = await serveHttp(feed(`${a}\n${b}\n`, null));
  try {
    await withEnv(async (env) => {
      env.start({ url: `${srv.base}/feed.txt`, interval: "100ms", dedup_ttl: "1s" });
      await afterPoll(srv, 1);
      assert.deepEqual(env.events(), text(a, b));
      srv.handler = feed(`${a}\n`, null);
      const leftAt = Date.now();
      // The seen-set counts whole seconds: gone for over 2 s is surely past a 1 s TTL.
      await until(() => Date.now() - leftAt > 2200, "b to expire", 5000);
      srv.handler = feed(`${a}\n${b}\n`, null);
      const n = srv.requests.length;
      await afterPoll(srv, n + 1);
      assert.deepEqual(env.events(), text(b));
    });
  } finally {
    await srv.close();
  }
});

test("premium JSON lines with basic auth: objects posted unchanged, dedup by url, bad lines counted and skipped", async () => {
  const fixture = (await readFile(new URL("premium.jsonl", FIXTURES), "utf8")).trim();
  const other = '{"url": "https://other.example/x", "host": "other.example", "brand": "PayPal", "emails": []}';
  const sameUrl = fixture.replace('"brand": "Webmail Providers"', '"brand": "Someone Else"');
  assert.notEqual(sameUrl, fixture);
  const body = `${fixture}\n{"url": "http://broken.example/", \n${other}\r\n[1, 2]\n${sameUrl}\n{"host": "no-url.example"}\n\n`;
  const srv = await serveHttp(feed(body, '"p1"', true));
  try {
    await withEnv(async (env) => {
      const input = env.start({ url: `${srv.base}/feed.jsonl`, format: "jsonl", username: USER, password: PASSWORD, interval: "100ms" });
      await afterPoll(srv, 1);
      assert.equal(srv.requests[0]!.headers.authorization, BASIC);
      assert.deepEqual(env.events(), json(fixture, other));
      assert.equal(input.ctx.counters.errors, 3);
      assert.deepEqual(input.ctx.counters.detail.skipped, 3);
      assert.match(String(input.ctx.counters.last_error), /line 6 of the feed has no "url"/);
      assert.equal(env.logs.filter((l) => l.includes("feed line skipped")).length, 3);
      await afterPoll(srv, 2);
      assert.deepEqual(env.events(), []);
      assert.equal(input.ctx.counters.errors, 3, "a 304 re-reads nothing");
      const shown = JSON.stringify([input.ctx.counters, env.logs]);
      assert.ok(!shown.includes(PASSWORD) && !shown.includes(BASIC.slice(6)), "no credentials in status or logs");
    });
  } finally {
    await srv.close();
  }
});

test("a redirect to another origin carries no credentials; a rejected password is reported without it", async () => {
  const fixture = (await readFile(new URL("premium.jsonl", FIXTURES), "utf8")).trim();
  const mirror = await serveHttp(feed(`${fixture}\n`, null));
  // A different port is a different origin.
  const origin = await serveHttp((req, res) => {
    if (req.headers.authorization !== BASIC) res.writeHead(401).end();
    else res.writeHead(302, { location: `${mirror.base}/feed.jsonl` }).end();
  });
  try {
    await withEnv(async (env) => {
      env.start({ url: `${origin.base}/feed.jsonl`, format: "jsonl", username: USER, password: PASSWORD, interval: "100ms" });
      await afterPoll(mirror, 1);
      assert.equal(origin.requests[0]!.headers.authorization, BASIC);
      assert.equal(mirror.requests[0]!.headers.authorization, undefined);
      assert.deepEqual(env.events(), json(fixture));
    });
    await withEnv(async (env) => {
      const input = env.start({ url: `${origin.base}/feed.jsonl`, format: "jsonl", username: USER, password: "wrong-password-123", interval: "100ms" });
      await until(() => input.ctx.counters.errors >= 1, "the 401 reported");
      await input.stop();
      assert.match(String(input.ctx.counters.last_error), /HTTP 401/);
      assert.ok(!JSON.stringify([input.ctx.counters, env.logs]).includes("wrong-password-123"));
    });
  } finally {
    await origin.close();
    await mirror.close();
  }
});

test("an HTML page answered with 200 is not the feed; lines that are not URLs are skipped and counted", async () => {
  const page = "<!DOCTYPE html>\n<html><body>\nPlease log in\n</body></html>\n";
  const srv = await serveHttp((req, res) => res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(page));
  try {
    await withEnv(async (env) => {
      const input = env.start({ url: `${srv.base}/feed.txt`, interval: "100ms" });
      await until(() => input.ctx.counters.errors >= 1, "the HTML answer reported");
      assert.match(String(input.ctx.counters.last_error), /answered with an HTML page, not the feed/);
      srv.handler = feed(`https://a.example/\n<html>\nnot a url\nhttps://b.example/\n`, null);
      const n = srv.requests.length;
      await afterPoll(srv, n + 1);
      assert.deepEqual(env.events(), text("https://a.example/", "https://b.example/"));
      assert.match(String(input.ctx.counters.last_error), /line 3 of the feed is not a URL/);
    });
  } finally {
    await srv.close();
  }
});

test("429 with Retry-After: the input waits that long, then polls", async () => {
  let limitedAt = 0;
  const srv = await serveHttp((req, res) => {
    if (limitedAt === 0) {
      limitedAt = Date.now();
      res.writeHead(429, { "retry-after": "1" }).end("slow down");
    } else {
      feed("https://a.example/\n", null)(req, res);
    }
  });
  try {
    await withEnv(async (env) => {
      const input = env.start({ url: `${srv.base}/feed.txt`, interval: "100ms" });
      await afterPoll(srv, 2);
      assert.ok(srv.requests[1]!.at - limitedAt >= 900, "the retry waited for Retry-After");
      assert.deepEqual(env.events(), text("https://a.example/"));
      assert.equal(input.ctx.counters.errors, 1);
    });
  } finally {
    await srv.close();
  }
});

test("stop ends run() within a second even in the middle of a download", async () => {
  const srv = await serveHttp((req, res) => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.write("https://a.example/\nhttps://b.exa"); // and never the rest
  });
  try {
    await withEnv(async (env) => {
      const input = env.start({ url: `${srv.base}/feed.txt`, interval: "100ms" });
      await until(() => srv.requests.length === 1, "the download started");
      await new Promise((r) => setTimeout(r, 100));
      const t0 = Date.now();
      await input.stop();
      assert.ok(Date.now() - t0 < 1000, `stopped in ${Date.now() - t0} ms`);
      assert.deepEqual(env.events(), []);
    });
  } finally {
    await srv.close();
  }
});

test("a saved state of the wrong shape fails the input with an error naming the file and the key; nothing is fetched or posted", async () => {
  const srv = await serveHttp(feed("https://a.example/\n", null));
  try {
    await withEnv(async (env) => {
      const source = hashString(`${srv.base}/feed.txt`);
      const seen = new SeenSet().toJSON();
      const bads: Array<[unknown, string]> = [
        [null, ""], [[], ""], [{ files: [] }, "v"], [{ v: 2, source }, "v"], [{ v: 1, source: "feed.txt" }, "source"],
        [{ v: 1, source, full_at: -5 }, "full_at"], [{ v: 1, source, full_at: "1700000000000" }, "full_at"],
        [{ v: 1, source, validators: { etag: 5 } }, "validators.etag"], [{ v: 1, source, seen: { ...seen, n: -1 } }, "seen.n"],
        [{ v: 1, source, seen, urls: [] }, "urls"],
      ];
      await env.expectStateRefused(bads, { url: `${srv.base}/feed.txt`, interval: "100ms" });
      assert.equal(srv.requests.length, 0);
      assert.deepEqual(env.events(), []);
    });
  } finally {
    await srv.close();
  }
});
