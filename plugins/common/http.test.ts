import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync, zipSync } from "fflate";
import {
  DEFAULT_USER_AGENT,
  HttpClient,
  HttpError,
} from "./http.ts";
import { parseRetryAfter } from "../../agent/backoff.ts";
import { redactText, redactUrl } from "../../agent/redact.ts";
import { jsonArrayBatches } from "./jsonstream.ts";
import { createLogger } from "../../agent/log.ts";
import { VERSION } from "../../agent/version.ts";
import { isBun } from "../../agent/runtime/detect.ts";

const enc = new TextEncoder();
const KEY = "s3cr3t-api-key-0123456789";

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: string;
}

interface TestServer {
  base: string;
  requests: Seen[];
  close(): Promise<void>;
}

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

/** A real server on 127.0.0.1 (https with `tls`), recording what each request carried. */
async function serve(handler: Handler, tls?: { key: Buffer; cert: Buffer }): Promise<TestServer> {
  const requests: Seen[] = [];
  const sockets = new Set<Socket>();
  const listener = (req: IncomingMessage, res: ServerResponse) => {
    let body = "";
    req.on("data", (d: Buffer) => (body += d.toString()));
    req.on("end", () => {
      requests.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      handler(req, res, body);
    });
  };
  const server: Server = tls ? createHttpsServer(tls, listener) : createServer(listener);
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.on("secureConnection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    base: `${tls ? "https" : "http"}://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

async function withServers(handlers: Handler[], fn: (servers: TestServer[]) => Promise<void>): Promise<void> {
  const servers: TestServer[] = [];
  try {
    for (const h of handlers) servers.push(await serve(h));
    await fn(servers);
  } finally {
    await Promise.all(servers.map((s) => s.close()));
  }
}

function bzip2(data: Uint8Array): Uint8Array {
  return new Uint8Array(execFileSync("/usr/bin/bzip2", ["-c"], { input: data }));
}

async function rejection(p: Promise<unknown>): Promise<HttpError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof HttpError, `expected HttpError, got ${err}`);
    return err;
  }
  assert.fail("no error");
}

const FEED = "https://phish-1.example/login\nhttp://phish-2.example/a?b=c\n";

test("GET: body, default User-Agent cybexp-agent/<version>, overridable (PhishTank wants phishtank/<user>)", async () => {
  await withServers([(_req, res) => res.end(FEED)], async ([s]) => {
    const res = await new HttpClient().request(`${s!.base}/feed.txt`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), FEED);
    assert.equal(DEFAULT_USER_AGENT, `cybexp-agent/${VERSION}`);
    assert.equal(s!.requests[0]!.headers["user-agent"], DEFAULT_USER_AGENT);
    await (await new HttpClient({ userAgent: "phishtank/alice" }).request(`${s!.base}/x`)).cancel();
    assert.equal(s!.requests[1]!.headers["user-agent"], "phishtank/alice");
  });
});

test("conditional GET: validators from the last answer are sent back; 304 is 'not modified'", async () => {
  const etag = '"dump-2024-05-01T10"';
  const lastModified = "Wed, 01 May 2024 10:00:00 GMT";
  await withServers([(req, res) => {
    if (req.headers["if-none-match"] === etag) {
      res.writeHead(304, { etag });
      return res.end();
    }
    res.writeHead(200, { etag, "last-modified": lastModified, "content-type": "application/json" });
    res.end('[{"phish_id":"1"}]');
  }], async ([s]) => {
    const http = new HttpClient();
    const first = await http.request(`${s!.base}/online-valid.json`);
    assert.equal(first.notModified, false);
    assert.equal(await first.text(), '[{"phish_id":"1"}]');
    assert.deepEqual(first.validators, { etag, lastModified });
    const second = await http.request(`${s!.base}/online-valid.json`, { validators: first.validators });
    assert.equal(second.status, 304);
    assert.equal(second.notModified, true);
    assert.deepEqual(second.validators, { etag, lastModified });
    assert.equal((await second.bytes()).length, 0);
    assert.equal(s!.requests[0]!.headers["if-none-match"], undefined);
    assert.equal(s!.requests[1]!.headers["if-none-match"], etag);
    assert.equal(s!.requests[1]!.headers["if-modified-since"], lastModified);
  });
});

test("compressed bodies: gzip by Content-Encoding, Content-Type and extension; bz2 and zip by extension", async () => {
  const data = enc.encode(JSON.stringify(Array.from({ length: 2000 }, (_, i) => ({ phish_id: String(i), url: `http://x${i}.example/` }))));
  const gz = gzipSync(data);
  await withServers([(req, res) => {
    const path = req.url!.split("?")[0];
    if (path === "/encoded.json") res.writeHead(200, { "content-encoding": "gzip", "content-type": "application/json" }).end(gz);
    else if (path === "/typed") res.writeHead(200, { "content-type": "application/gzip" }).end(gz);
    else if (path === "/online-valid.json.gz") res.writeHead(200, { "content-type": "application/octet-stream" }).end(gz);
    else if (path === "/online-valid.json.bz2") res.writeHead(200, { "content-type": "application/octet-stream" }).end(bzip2(data));
    else if (path === "/export.zip") res.writeHead(200).end(zipSync({ "README.txt": enc.encode("x"), "online-valid.json": data }));
    else res.writeHead(404).end();
  }], async ([s]) => {
    const http = new HttpClient();
    const cases: Array<[string, string, string, string?]> = [
      ["/encoded.json", "gzip", "none"], // fetch undoes Content-Encoding itself
      ["/typed", "gzip", "gzip"],
      ["/online-valid.json.gz", "gzip", "gzip"],
      ["/online-valid.json.bz2", "bzip2", "bzip2"],
      ["/export.zip", "zip", "zip", "online-valid.json"],
    ];
    for (const [path, announced, compression, zipEntry] of cases) {
      const res = await http.request(`${s!.base}${path}`, { zipEntry });
      assert.equal(res.announced, announced, path);
      assert.equal(res.compression, compression, path);
      assert.deepEqual(await res.bytes(), data, path);
    }
    const raw = await http.request(`${s!.base}/online-valid.json.gz`, { decompress: false });
    assert.deepEqual(await raw.bytes(), gz);
  });
});

test("PhishTank's flow: a .json.bz2 dump, written slowly in pieces, read record by record", async () => {
  const records = Array.from({ length: 3000 }, (_, i) => ({ phish_id: String(7_900_000 + i), url: `http://phish${i}.example/`, verified: "yes", details: [] }));
  const dump = bzip2(enc.encode(JSON.stringify(records)));
  await withServers([(req, res) => {
    res.writeHead(200, { "content-type": "application/x-bzip2", etag: '"v1"' });
    let at = 0;
    const step = () => {
      if (at >= dump.length) return res.end();
      res.write(dump.subarray(at, at + 8192));
      at += 8192;
      setTimeout(step, 1);
    };
    step();
    void req;
  }], async ([s]) => {
    const res = await new HttpClient({ userAgent: "phishtank/alice", secrets: ["app-key-123"] }).request(`${s!.base}/data/app-key-123/online-valid.json.bz2`);
    assert.equal(res.compression, "bzip2");
    let n = 0;
    for await (const batch of jsonArrayBatches(res.body, { batchSize: 500 })) {
      for (const e of batch) assert.equal(e.text, JSON.stringify(records[n++]));
    }
    assert.equal(n, records.length);
    assert.deepEqual(res.validators, { etag: '"v1"' });
    assert.equal(res.redact(res.url), `${s!.base}/data/***/online-valid.json.bz2`);
  });
});

test("redirect to another origin: Authorization, API key, Cookie and basic auth stay behind", async () => {
  const other = await serve((_req, res) => res.end("feed from the other host"));
  const first = await serve((req, res) => {
    if (req.url === "/start") res.writeHead(302, { location: `${other.base}/landing?from=first` }).end();
    else res.writeHead(404).end();
  });
  try {
    const http = new HttpClient({ headers: { "X-Api-Key": KEY }, secretHeaders: ["X-Org-Secret"] });
    const url = `http://alice:${encodeURIComponent("pa:ss")}@${new URL(first.base).host}/start`;
    const res = await http.request(url, { headers: { Cookie: `session=${KEY}`, "X-Org-Secret": "org-only", Accept: "text/plain" } });
    assert.equal(await res.text(), "feed from the other host");
    assert.equal(res.url, `${other.base}/landing?from=first`);
    const sent = first.requests[0]!.headers;
    assert.equal(sent.authorization, `Basic ${btoa("alice:pa:ss")}`);
    assert.equal(sent["x-api-key"], KEY);
    assert.equal(sent.cookie, `session=${KEY}`);
    assert.equal(sent["x-org-secret"], "org-only");
    const got = other.requests[0]!.headers;
    assert.equal(got.authorization, undefined);
    assert.equal(got["x-api-key"], undefined);
    assert.equal(got.cookie, undefined);
    assert.equal(got["x-org-secret"], undefined);
    assert.equal(got.accept, "text/plain");
    assert.equal(got["user-agent"], DEFAULT_USER_AGENT);
    assert.ok(!JSON.stringify(other.requests).includes(KEY));
  } finally {
    await Promise.all([first.close(), other.close()]);
  }
});

test("redirect within the origin keeps credentials; a redirect back after leaving does not", async () => {
  {
    let otherBase = "";
    const home = await serve((req, res) => {
      if (req.url === "/a") res.writeHead(301, { location: "/b" }).end();
      else if (req.url === "/b") res.writeHead(307, { location: `${otherBase}/bounce` }).end();
      else res.end(`final ${req.url}`);
    });
    const other = await serve((_req, res) => res.writeHead(302, { location: `${home.base}/c` }).end());
    otherBase = other.base;
    try {
      const res = await new HttpClient().request(`${home.base}/a`, { headers: { Authorization: `Bearer ${KEY}` } });
      assert.equal(await res.text(), "final /c");
      assert.deepEqual(home.requests.map((r) => [r.url, r.headers.authorization]), [
        ["/a", `Bearer ${KEY}`],
        ["/b", `Bearer ${KEY}`],
        ["/c", undefined],
      ]);
      assert.equal(other.requests[0]!.headers.authorization, undefined);
    } finally {
      await Promise.all([home.close(), other.close()]);
    }
  }
});

test("redirects: more than 5 is an error; 303 after a POST continues as GET without the body", async () => {
  await withServers([(req, res, body) => {
    const n = Number(/\/loop\/(\d+)/.exec(req.url!)?.[1] ?? -1);
    if (n >= 0) return res.writeHead(302, { location: `/loop/${n + 1}` }).end();
    if (req.url === "/search") return res.writeHead(303, { location: "/result" }).end();
    res.end(`${req.method} ${req.url} body=${body} type=${req.headers["content-type"] ?? "-"}`);
  }], async ([s]) => {
    const http = new HttpClient();
    const err = await rejection(http.request(`${s!.base}/loop/0`));
    assert.equal(err.kind, "rejected");
    assert.match(err.message, /too many redirects \(more than 5\)/);
    assert.equal(s!.requests.length, 6);
    const res = await http.request(`${s!.base}/search`, { method: "POST", json: { returnFormat: "json", limit: 10 } });
    assert.equal(await res.text(), "GET /result body= type=-");
    assert.equal(s!.requests[6]!.body, '{"returnFormat":"json","limit":10}');
    assert.equal(s!.requests[6]!.headers["content-type"], "application/json");
  });
});

test("429 / 509 / 503: wait errors carry the delay the source asked for; 503 without it is retryable", async () => {
  const date = new Date(Date.now() + 120_000).toUTCString();
  await withServers([(req, res) => {
    if (req.url === "/429") res.writeHead(429, { "retry-after": "7" }).end("slow down");
    else if (req.url === "/429-date") res.writeHead(429, { "retry-after": date }).end();
    else if (req.url === "/509") res.writeHead(509).end("Bandwidth Limit Exceeded");
    else if (req.url === "/misp") res.writeHead(429, { "x-rate-limit-reset": "42" }).end('{"message":"Rate limit exceeded."}');
    else if (req.url === "/503-ra") res.writeHead(503, { "retry-after": "30" }).end();
    else if (req.url === "/503") res.writeHead(503).end("<html>maintenance</html>");
    else res.writeHead(500).end();
  }], async ([s]) => {
    const http = new HttpClient();
    let err = await rejection(http.request(`${s!.base}/429`));
    assert.deepEqual([err.kind, err.status, err.waitMs], ["wait", 429, 7000]);
    assert.match(err.message, /^HTTP 429 from http:\/\/127\.0\.0\.1:\d+\/429: slow down$/);
    err = await rejection(http.request(`${s!.base}/429-date`));
    assert.equal(err.kind, "wait");
    assert.ok(err.waitMs! > 100_000 && err.waitMs! <= 120_000, String(err.waitMs));
    err = await rejection(http.request(`${s!.base}/509`));
    assert.deepEqual([err.kind, err.status, err.waitMs], ["wait", 509, null]);
    // A source-specific wait header is there for the input to read (MISP: seconds until reset).
    err = await rejection(http.request(`${s!.base}/misp`));
    assert.deepEqual([err.kind, err.waitMs, err.headers?.get("x-rate-limit-reset")], ["wait", null, "42"]);
    err = await rejection(http.request(`${s!.base}/503-ra`));
    assert.deepEqual([err.kind, err.status, err.waitMs], ["wait", 503, 30_000]);
    err = await rejection(http.request(`${s!.base}/503`));
    assert.deepEqual([err.kind, err.status, err.waitMs], ["retryable", 503, null]);
    assert.equal(err.bodyExcerpt, "<html>maintenance</html>");
  });
});

test("403: an error with the status and a body excerpt, never the key (header, query, path or echoed)", async () => {
  await withServers([(req, res) => {
    res.writeHead(403, { "content-type": "application/json" });
    res.end(JSON.stringify({ name: "Authentication failed.", message: `bad key ${req.headers.authorization} for ${req.url}`, url: req.url }));
  }], async ([s]) => {
    const http = new HttpClient({ headers: { Authorization: KEY }, secrets: ["path-key-987654"] });
    const err = await rejection(http.request(`${s!.base}/data/path-key-987654/events?apikey=${KEY}&page=1`));
    assert.equal(err.kind, "rejected");
    assert.equal(err.status, 403);
    assert.match(err.message, /^HTTP 403 from http:\/\/127\.0\.0\.1:\d+\/data\/\*\*\*\/events\?apikey=\*\*\*&page=1: \{"name":"Authentication failed\./);
    assert.ok(!err.message.includes(KEY) && !err.message.includes("path-key-987654"), err.message);
    assert.ok(!err.bodyExcerpt.includes(KEY), err.bodyExcerpt);
    assert.ok(!err.message.includes("\n"));
  });
});

test("a server that never answers: a retryable timeout error within the timeout", async () => {
  await withServers([() => {}], async ([s]) => {
    const started = Date.now();
    const err = await rejection(new HttpClient({ timeoutMs: 300 }).request(`${s!.base}/slow`));
    assert.equal(err.kind, "retryable");
    assert.equal(err.status, null);
    assert.match(err.message, /timeout after 300 ms waiting for http:\/\/127\.0\.0\.1:\d+\/slow/);
    assert.ok(Date.now() - started < 3000);
  });
});

test("a body that stalls: the idle timeout ends the read with a retryable error", async () => {
  await withServers([(_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.write('[{"phish_id":"1"},');
  }], async ([s]) => {
    const res = await new HttpClient({ timeoutMs: 5000, idleTimeoutMs: 300 }).request(`${s!.base}/dump.json`);
    const err = await rejection(res.text());
    assert.equal(err.kind, "retryable");
    assert.match(err.message, /no data for 300 ms reading http:\/\/127\.0\.0\.1:\d+\/dump\.json/);
  });
});

test("stop (abort) during a request or a body read returns within a second", async () => {
  await withServers([(req, res) => {
    if (req.url === "/body") {
      res.writeHead(200);
      res.write("partial");
    }
  }], async ([s]) => {
    const http = new HttpClient({ timeoutMs: 30_000 });
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    let started = Date.now();
    await assert.rejects(http.request(`${s!.base}/headers`, { signal: ac.signal }), (err: unknown) => (err as Error).name === "AbortError");
    assert.ok(Date.now() - started < 1000, `took ${Date.now() - started} ms`);

    const ac2 = new AbortController();
    const res = await http.request(`${s!.base}/body`, { signal: ac2.signal });
    started = Date.now();
    setTimeout(() => ac2.abort(), 100);
    await assert.rejects(res.text(), (err: unknown) => (err as Error).name === "AbortError");
    assert.ok(Date.now() - started < 1000, `took ${Date.now() - started} ms`);

    const ac3 = new AbortController();
    ac3.abort();
    await assert.rejects(http.request(`${s!.base}/body`, { signal: ac3.signal }), (err: unknown) => (err as Error).name === "AbortError");
  });
});

test("nothing listening: a retryable network error", async () => {
  const s = await serve(() => {});
  const base = s.base;
  await s.close();
  const err = await rejection(new HttpClient().request(`${base}/feed.txt`));
  assert.equal(err.kind, "retryable");
  assert.equal(err.status, null);
  assert.match(err.message, /^cannot reach http:\/\/127\.0\.0\.1:\d+\/feed\.txt/);
});

test("TLS: a private CA through ca_file is trusted; without it the certificate is refused", async () => {
  const dir = await mkdtemp(join(tmpdir(), "http-tls-"));
  try {
    const ossl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=cybexp test CA");
    ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1");
    await writeFile(join(dir, "ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
    ossl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf");
    const key = await readFile(join(dir, "srv.key"));
    const cert = await readFile(join(dir, "srv.pem"));
    const s = await serve((_req, res) => res.end("over tls"), { key, cert });
    try {
      assert.ok(s.base.startsWith("https://"));
      const trusted = new HttpClient({ caFile: join(dir, "ca.pem") });
      assert.equal(await (await trusted.request(`${s.base}/feed`)).text(), "over tls");
      trusted.close();
      const err = await rejection(new HttpClient({ timeoutMs: 5000 }).request(`${s.base}/feed`));
      assert.equal(err.kind, "retryable");
      const missing = await rejection(new HttpClient({ caFile: join(dir, "nope.pem") }).request(`${s.base}/feed`));
      assert.match(missing.message, /ca_file: cannot read .*nope\.pem/);
      // tls_verify = false: Bun's fetch skips verification; Deno's cannot, and says so once.
      const warnings: string[] = [];
      const log = createLogger("warn", { write: (l) => warnings.push(JSON.parse(l).msg) });
      const unverified = new HttpClient({ tlsVerify: false, log, timeoutMs: 5000 });
      if (isBun()) {
        assert.equal(await (await unverified.request(`${s.base}/feed`)).text(), "over tls");
        assert.deepEqual(warnings, []);
      } else {
        assert.equal((await rejection(unverified.request(`${s.base}/feed`))).kind, "retryable");
        assert.deepEqual(warnings, [
          "tls_verify = false cannot be applied by this runtime's fetch; certificates are still verified unless the process runs with --unsafely-ignore-certificate-errors",
        ]);
      }
    } finally {
      await s.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("redaction: URL userinfo and secret query values, literal secrets (also URL-encoded), one line", () => {
  assert.equal(redactUrl("https://user:pw@misp.example/events?key=abc&page=2"), "https://***@misp.example/events?key=***&page=2");
  assert.equal(redactUrl("http://h.example/x?API_KEY=1&token=2&password=3&q=ok&client_secret=4"), "http://h.example/x?API_KEY=***&token=***&password=***&q=ok&client_secret=***");
  assert.equal(redactUrl("http://h.example/plain?q=1"), "http://h.example/plain?q=1");
  assert.equal(redactUrl("not a url //u:p@x"), "not a url //***@x");
  const secret = "a/b+c=d key";
  assert.equal(
    redactText(`failed GET https://u:p@h.example/data/${encodeURIComponent(secret)}/x?token=t\n  answer: ${secret}`, [secret, "", "ab"]),
    "failed GET https://***@h.example/data/***/x?token=*** answer: ***",
  );
  assert.equal(parseRetryAfter("120"), 120_000);
  assert.equal(parseRetryAfter("Wed, 01 May 2024 10:00:30 GMT", Date.parse("Wed, 01 May 2024 10:00:00 GMT")), 30_000);
  assert.equal(parseRetryAfter("soon"), undefined);
  assert.equal(parseRetryAfter(null), undefined);
  assert.equal(parseRetryAfter("86400"), 3_600_000, "capped at an hour");
});
