import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { gzipSync } from "fflate";
import plugin from "./index.ts";
import { defaultDumpUrl } from "./input.ts";
import { afterPoll, answerFile, serveHttp, withInputEnv, type InputTestEnv, type TestHttpServer } from "../../test/testing/plugin-harness.ts";
import { until } from "../../test/testing/until.ts";
import { hashString, SeenSet } from "../common/seen.ts";

/** Answers a request (a server's whole handler, or part of one). */
type Handler = (req: IncomingMessage, res: ServerResponse) => void;

const FIXTURES = new URL("./testdata/", import.meta.url);
const KEY = "0123456789abcdef0123456789abcdef-phishtank-key";
const USER = "alice";
const enc = (s: string) => new TextEncoder().encode(s);

/** Answers like PhishTank's server: 403 without the User-Agent it asks for, ETag / 304. */
function dump(body: Uint8Array, etag: string | null): Handler {
  return (req, res) => {
    if (req.headers["user-agent"] !== `phishtank/${USER}`) {
      res.writeHead(403).end("set your User-Agent to phishtank/<username>");
      return;
    }
    answerFile(req, res, body, etag, "application/octet-stream");
  };
}

const withEnv = (fn: (env: InputTestEnv) => Promise<void>) => withInputEnv(plugin, { name: "pt" }, fn);

/** The fixture's records, each as its exact source text. */
async function fixture(): Promise<{ text: string; records: string[] }> {
  const text = (await readFile(new URL("online-valid.json", FIXTURES), "utf8")).trim();
  const records = text.slice(1, -1).split(/, (?=\{"phish_id")/);
  assert.equal(records.length, (JSON.parse(text) as unknown[]).length);
  return { text, records };
}

const opts = (srv: TestHttpServer, path = `/data/${KEY}/online-valid.json.bz2`, extra: Record<string, unknown> = {}) => ({
  url: `${srv.base}${path}`, app_key: KEY, username: USER, interval: "100ms", ...extra,
});

test("options: username is required, defaults, and the URL built from app_key", () => {
  assert.equal(plugin.type, "phishtank");
  assert.deepEqual(plugin.options.parse({ username: "bob" }), {
    username: "bob", interval: 3_600_000, timeout: 60_000, dedup_ttl: 30 * 86_400_000, max_seen: 1_000_000, tls_verify: true,
  });
  assert.equal(plugin.options.safeParse({}).success, false);
  assert.equal(plugin.options.safeParse({ username: "bob smith" }).success, false);
  assert.equal(plugin.options.safeParse({ username: "bob", url: "ftp://x/y" }).success, false);
  assert.equal(plugin.options.safeParse({ username: "bob", interval: "soon" }).success, false);
  assert.equal(plugin.options.safeParse({ username: "bob", ftp: true }).success, false);
  assert.equal(defaultDumpUrl("k3y"), "http://data.phishtank.com/data/k3y/online-valid.json.bz2");
  assert.equal(defaultDumpUrl(), "http://data.phishtank.com/data/online-valid.json.bz2");
});

test("first poll posts every record unchanged; 304, 200-same, a changed dump and a restart post only the difference", async () => {
  const { text, records } = await fixture();
  const bz2 = await readFile(new URL("online-valid.json.bz2", FIXTURES));
  const srv = await serveHttp(dump(bz2, '"v1"'));
  try {
    await withEnv(async (env) => {
      let input = env.start(opts(srv));
      await afterPoll(srv, 1);
      assert.deepEqual(env.jsonLines(), records);
      assert.equal(srv.requests[0]!.headers["user-agent"], `phishtank/${USER}`);
      assert.equal(srv.requests[0]!.headers["if-none-match"], undefined);

      // Not modified: the saved ETag is sent and nothing is posted.
      await afterPoll(srv, 2);
      assert.equal(srv.requests[1]!.headers["if-none-match"], '"v1"');
      assert.match(String(input.ctx.counters.detail.last_status), /not modified/);
      assert.deepEqual(env.jsonLines(), []);

      // A server that ignores validators: the same dump again posts nothing.
      srv.handler = dump(enc(text), null);
      let n = srv.requests.length;
      await afterPoll(srv, n + 1);
      assert.deepEqual(env.jsonLines(), []);

      // The next dump: the first record went offline, a new one arrived, the second is as it was.
      const [first, second] = records as [string, string];
      const flipped = first.replace('"online": "yes"', '"online": "no"');
      const added = second.replace(/7946017/g, "7946099").replace("198.51.100.23", "203.0.113.7");
      srv.handler = dump(enc(`[${flipped}, ${second}, ${added}]`), '"v2"');
      n = srv.requests.length;
      await afterPoll(srv, n + 1);
      assert.deepEqual(env.jsonLines(), [flipped, added]);
      const { records: total, posted_new, posted_changed } = input.ctx.counters.detail;
      assert.deepEqual({ total, posted_new, posted_changed }, { total: 3, posted_new: 1, posted_changed: 1 });

      // A restart: the saved state (ETag and phish_ids) makes the next poll post nothing.
      await input.stop();
      n = srv.requests.length;
      input = env.start(opts(srv));
      await afterPoll(srv, n + 1);
      assert.equal(srv.requests[n]!.headers["if-none-match"], '"v2"');
      assert.equal(input.ctx.counters.detail.last_status, "not modified");
      // ... and so does the same dump without an ETag.
      await input.stop();
      srv.handler = dump(enc(`[${flipped}, ${second}, ${added}]`), null);
      n = srv.requests.length;
      input = env.start(opts(srv));
      await afterPoll(srv, n + 1);
      assert.deepEqual(env.jsonLines(), []);
      assert.equal(input.ctx.counters.errors, 0);
    });
  } finally {
    await srv.close();
  }
});

test(".json.gz and plain .json dumps are read by their content", async () => {
  const { text, records } = await fixture();
  const srv = await serveHttp((req, res) => {
    if (req.url === "/data/online-valid.json.gz") dump(gzipSync(enc(text)), null)(req, res);
    else if (req.url === "/data/online-valid.json") dump(enc(text), null)(req, res);
    else res.writeHead(404).end();
  });
  try {
    for (const path of ["/data/online-valid.json.gz", "/data/online-valid.json"]) {
      await withEnv(async (env) => {
        const n = srv.requests.length;
        const input = env.start(opts(srv, path));
        await afterPoll(srv, n + 1);
        assert.deepEqual(env.jsonLines(), records, path);
        assert.equal(input.ctx.counters.errors, 0);
      });
    }
  } finally {
    await srv.close();
  }
});

test("509 makes the input wait (one request, no error storm); Retry-After is honoured; the app key is never shown", async () => {
  const { records } = await fixture();
  const bz2 = await readFile(new URL("online-valid.json.bz2", FIXTURES));
  const over = (req: IncomingMessage, res: ServerResponse) => res.writeHead(509).end(`Bandwidth limit exceeded for ${req.url}`);
  const srv = await serveHttp(over);
  try {
    await withEnv(async (env) => {
      const input = env.start(opts(srv));
      await until(() => String(input.ctx.counters.detail.last_status).startsWith("waiting:"), "the input waiting");
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(srv.requests.length, 1, "no retry while waiting");
      assert.equal(input.ctx.counters.errors, 1);
      assert.equal(env.logs.filter((l) => l.includes("the source asks to wait")).length, 1);
      const shown = JSON.stringify([input.ctx.counters, env.logs]);
      assert.ok(shown.includes("HTTP 509"), "the 509 is reported");
      assert.ok(!shown.includes(KEY), "the app key is not in status or logs");
    });

    // With Retry-After the input comes back after that long.
    let answered509At = 0;
    srv.handler = (req, res) => {
      if (answered509At === 0) {
        answered509At = Date.now();
        res.writeHead(509, { "retry-after": "1" }).end();
      } else {
        dump(bz2, null)(req, res);
      }
    };
    await withEnv(async (env) => {
      const n = srv.requests.length;
      const input = env.start(opts(srv));
      await afterPoll(srv, n + 2);
      assert.ok(srv.requests[n + 1]!.at - answered509At >= 900, "the retry waited for Retry-After");
      assert.deepEqual(env.jsonLines(), records);
      assert.equal(input.ctx.counters.errors, 1);
    });

    // Other failures (a 404 quoting the URL) are reported without the key too.
    srv.handler = (req, res) => res.writeHead(404).end(`no such file: ${req.url}`);
    await withEnv(async (env) => {
      const n = srv.requests.length;
      const input = env.start(opts(srv));
      await until(() => input.ctx.counters.errors >= 1 && srv.requests.length > n, "the 404 reported");
      await input.stop();
      const shown = JSON.stringify([input.ctx.counters, env.logs]);
      assert.match(String(input.ctx.counters.last_error), /HTTP 404/);
      assert.ok(shown.includes("/data/***/online-valid.json.bz2"), "the URL is shown with the key replaced");
      assert.ok(!shown.includes(KEY), "the app key is not in status or logs");
    });
  } finally {
    await srv.close();
  }
});

test("a redirect to another origin is followed; records lacking phish_id or invalid are counted and skipped", async () => {
  const { records } = await fixture();
  const withoutId = '{"url": "http://no-id.example/", "online": "yes"}';
  const invalid = '{"phish_id": "7946200", "online": yes}';
  const numericId = '{"phish_id": 7946201, "url": "http://numeric.example/"}';
  const idLater = '{"url": "http://later.example/", "phish_id": "7946202"}';
  const body = `[${records[0]}, ${withoutId}, 42, ${invalid}, ${numericId}, ${idLater}, ${records[1]}]`;
  const mirror = await serveHttp(dump(enc(body), '"m1"'));
  // A different port is a different origin.
  const origin = await serveHttp((req, res) => res.writeHead(302, { location: `${mirror.base}/dump.json` }).end());
  try {
    await withEnv(async (env) => {
      const input = env.start(opts(origin));
      await afterPoll(mirror, 1);
      assert.deepEqual(env.jsonLines(), [records[0], numericId, idLater, records[1]]);
      assert.equal(mirror.requests[0]!.headers["user-agent"], `phishtank/${USER}`);
      assert.equal(input.ctx.counters.errors, 3);
      assert.match(String(input.ctx.counters.last_error), /at byte \d+ of the dump is not valid JSON/);
      const { records: total, posted_new, skipped } = input.ctx.counters.detail;
      assert.deepEqual({ total, posted_new, skipped }, { total: 7, posted_new: 4, skipped: 3 });
      // The validators of the answer (the mirror's ETag) make the next request conditional.
      await afterPoll(mirror, 2);
      assert.equal(mirror.requests[1]!.headers["if-none-match"], '"m1"');
      assert.deepEqual(env.jsonLines(), []);
      // The same dump in full again: the valid records are known, the bad ones counted again.
      mirror.handler = dump(enc(body), null);
      const n = mirror.requests.length;
      await afterPoll(mirror, n + 1);
      assert.deepEqual(env.jsonLines(), []);
      const errors = input.ctx.counters.errors;
      assert.ok(errors >= 6 && errors % 3 === 0, `3 errors per full read, got ${errors}`);
    });
  } finally {
    await origin.close();
    await mirror.close();
  }
});

test("a truncated dump fails the poll without saving its validators; the next full one posts once", async () => {
  const { text, records } = await fixture();
  let truncated = true;
  const srv = await serveHttp((req, res) => dump(enc(truncated ? text.slice(0, -30) : text), '"t1"')(req, res));
  try {
    await withEnv(async (env) => {
      const input = env.start(opts(srv));
      await until(() => input.ctx.counters.errors >= 1, "the truncated dump reported");
      assert.match(String(input.ctx.counters.last_error), /ends early/);
      truncated = false;
      const n = srv.requests.length;
      await afterPoll(srv, n + 1);
      assert.equal(srv.requests[n]!.headers["if-none-match"], undefined, "no validators from the failed poll");
      assert.deepEqual(env.jsonLines(), records);
    });
  } finally {
    await srv.close();
  }
});

test("stop ends run() within a second even in the middle of a download", async () => {
  const { text } = await fixture();
  const srv = await serveHttp((req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.write(text.slice(0, 40)); // and never the rest
  });
  try {
    await withEnv(async (env) => {
      const input = env.start(opts(srv));
      await until(() => srv.requests.length === 1, "the download started");
      await new Promise((r) => setTimeout(r, 100));
      const t0 = Date.now();
      await input.stop();
      assert.ok(Date.now() - t0 < 1000, `stopped in ${Date.now() - t0} ms`);
      assert.deepEqual(env.jsonLines(), []);
    });
  } finally {
    await srv.close();
  }
});

test("a saved state of the wrong shape fails the input with an error naming the file and the key; nothing is fetched or posted", async () => {
  const { text } = await fixture();
  const srv = await serveHttp(dump(enc(text), null));
  try {
    await withEnv(async (env) => {
      const source = hashString(opts(srv).url);
      const seen = new SeenSet().toJSON();
      const bads: Array<[unknown, string]> = [
        [null, ""], ["{}", ""], [{ files: [] }, "v"], [{ v: 1, source: null }, "source"], [{ v: 1, source, full_at: -1 }, "full_at"],
        [{ v: 1, source, validators: { etag: '"e"', date: "today" } }, "validators"], [{ v: 1, source, seen: { ...seen, keys: "AAAAAAAAAAA=" } }, "seen.keys"],
        [{ v: 1, source, seen: { ...seen, v: "1" } }, "seen.v"],
      ];
      await env.expectStateRefused(bads, opts(srv));
      assert.equal(srv.requests.length, 0);
      assert.deepEqual(env.events(), []);
    });
  } finally {
    await srv.close();
  }
});
