// The reference receiver answers POST /raw like the real Cybex-P API: 201 for a complete
// upload, 400/401 with the API's messages otherwise. Also: the upload body builder agrees
// with the runtime's own multipart parser.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { startReceiver, type Receiver } from "../scripts/receiver.ts";
import { buildUploadBody, indexOfBytes, type RouteMeta } from "../agent/upload.ts";
import { isBun as underBun } from "../agent/runtime/detect.ts";

const TOKEN = "t0ken-for-tests";
const enc = new TextEncoder();
const dec = new TextDecoder();
const meta: RouteMeta = { input: "auth", name: "UNR Cowrie Honeypot", orgid: "org1", typetag: "cowrie", timezone: "US/Pacific" };

interface RawPart {
  name: string;
  filename?: string;
  contentType?: string;
  value: string;
}

/** A multipart body written out by hand, so tests can send what no well-behaved client would. */
function multipart(parts: RawPart[], boundary = "XyZzY-boundary"): { body: Uint8Array<ArrayBuffer>; contentType: string } {
  let s = "";
  for (const p of parts) {
    s += `--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"`;
    if (p.filename !== undefined) s += `; filename="${p.filename}"`;
    s += "\r\n";
    if (p.contentType) s += `Content-Type: ${p.contentType}\r\n`;
    s += `\r\n${p.value}\r\n`;
  }
  s += `--${boundary}--\r\n`;
  return { body: enc.encode(s), contentType: `multipart/form-data; boundary=${boundary}` };
}

function goodParts(): RawPart[] {
  return [
    { name: "file", filename: "auth.txt", contentType: "text/plain", value: "line one\nline two\n" },
    { name: "name", value: meta.name },
    { name: "orgid", value: meta.orgid },
    { name: "typetag", value: meta.typetag },
    { name: "timezone", value: meta.timezone },
  ];
}

async function post(r: Receiver, body: BodyInit, headers: Record<string, string>) {
  const res = await fetch(`${r.url}/raw`, { method: "POST", body, headers });
  return { status: res.status, json: (await res.json()) as { message: string }, headers: res.headers };
}

function postParts(r: Receiver, parts: RawPart[], auth = `Bearer ${TOKEN}`) {
  const { body, contentType } = multipart(parts);
  return post(r, body, { authorization: auth, "content-type": contentType });
}

describe("reference receiver", () => {
  let dir: string;
  let r: Receiver;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "receiver-test-"));
    r = await startReceiver({ token: TOKEN, dir });
  });
  after(async () => {
    await r.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("a complete upload: 201, metadata recorded, file stored with the received extension", async () => {
    const res = await postParts(r, goodParts());
    assert.equal(res.status, 201);
    assert.deepEqual(res.json, { message: "File uploaded successfully!" });
    const u = r.uploads.at(-1)!;
    assert.equal(u.name, meta.name);
    assert.equal(u.orgid, "org1");
    assert.equal(u.typetag, "cowrie");
    assert.equal(u.timezone, "US/Pacific");
    assert.equal(u.filename, "auth.txt");
    assert.equal(u.contentType, "text/plain");
    assert.equal(u.lines, 2);
    assert.equal(u.bytes, 18);
    assert.equal(dec.decode(await r.file(u.seq)), "line one\nline two\n");
    const files = (await readdir(dir)).filter((f) => f.startsWith(`${u.seq}-`)).sort();
    assert.deepEqual(files, [`${u.seq}-UNR_Cowrie_Honeypot.json`, `${u.seq}-UNR_Cowrie_Honeypot.txt`]);
    const stored = JSON.parse(await readFile(join(dir, files[0]!), "utf8"));
    assert.equal(stored.typetag, "cowrie");
  });

  test("no Authorization header or a wrong token: 401", async () => {
    const { body, contentType } = multipart(goodParts());
    for (const auth of [undefined, "Bearer wrong", `Basic ${TOKEN}`, TOKEN]) {
      const headers: Record<string, string> = { "content-type": contentType };
      if (auth) headers.authorization = auth;
      const res = await post(r, body, headers);
      assert.equal(res.status, 401, String(auth));
      assert.deepEqual(res.json, { message: "Invalid/missing token in auth header!" });
    }
  });

  test("a missing or empty text part: 400 naming it", async () => {
    for (const key of ["name", "orgid", "typetag", "timezone"]) {
      const missing = await postParts(r, goodParts().filter((p) => p.name !== key));
      assert.equal(missing.status, 400);
      assert.deepEqual(missing.json, { message: `Invalid input: ${key}` });
      const empty = await postParts(r, goodParts().map((p) => (p.name === key ? { ...p, value: "" } : p)));
      assert.equal(empty.status, 400);
      assert.deepEqual(empty.json, { message: `Invalid input: ${key}` });
    }
  });

  test("an extra or repeated part: 400 naming it", async () => {
    const extra = await postParts(r, [...goodParts(), { name: "source", value: "x" }]);
    assert.equal(extra.status, 400);
    assert.deepEqual(extra.json, { message: "Invalid input: source" });
    const twice = await postParts(r, [...goodParts(), { name: "typetag", value: "again" }]);
    assert.equal(twice.status, 400);
    assert.deepEqual(twice.json, { message: "Invalid input: typetag" });
  });

  test("no file, an empty file or a file part that is not a file: 400 Invalid or missing file!", async () => {
    const variants: RawPart[][] = [
      goodParts().filter((p) => p.name !== "file"),
      goodParts().map((p) => (p.name === "file" ? { ...p, value: "" } : p)),
      goodParts().map((p) => (p.name === "file" ? { name: "file", value: "not a file\n" } : p)),
      goodParts().map((p) => (p.name === "file" ? { ...p, filename: "" } : p)),
    ];
    for (const parts of variants) {
      const res = await postParts(r, parts);
      assert.equal(res.status, 400);
      assert.deepEqual(res.json, { message: "Invalid or missing file!" });
    }
  });

  test("a body that is not multipart: 400", async () => {
    const res = await post(r, "{}", { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" });
    assert.equal(res.status, 400);
    assert.match(res.json.message, /^Invalid input: /);
  });

  test("a FormData body encoded by the runtime's fetch is accepted", async () => {
    const fd = new FormData();
    fd.append("file", new Blob(['{"a":1}\n{"b":2}\n'], { type: "application/x-ndjson" }), "feed.ndjson");
    for (const k of ["name", "orgid", "typetag", "timezone"] as const) fd.append(k, meta[k]);
    const res = await fetch(`${r.url}/raw`, { method: "POST", body: fd, headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(res.status, 201, await res.text());
    const u = r.uploads.at(-1)!;
    assert.equal(u.filename, "feed.ndjson");
    assert.equal(u.contentType, "application/x-ndjson");
    assert.equal(u.lines, 2);
    assert.equal(dec.decode(await r.file(u.seq)), '{"a":1}\n{"b":2}\n');
  });

  test("GET /_stats counts accepted uploads, lines and bytes", async () => {
    const res = await fetch(`${r.url}/_stats`);
    const stats = await res.json();
    assert.equal(stats.uploads, r.uploads.length);
    assert.equal(stats.lines, r.totalLines());
    assert.equal(stats.bytes, r.uploads.reduce((n, u) => n + u.bytes, 0));
    assert.ok(stats.uploads >= 2);
  });
});

describe("reference receiver failure injection", () => {
  let r: Receiver;
  before(async () => {
    r = await startReceiver({ keepFiles: true, maxBodyBytes: 2000 });
  });
  after(() => r.close());

  test("without a token any request is authorised; failNext answers the next n requests", async () => {
    assert.equal((await postParts(r, goodParts(), "")).status, 201);
    r.failNext(2, 429, '{"message":"slow down"}', { retryAfterS: 7 });
    const first = await postParts(r, goodParts());
    assert.equal(first.status, 429);
    assert.equal(first.headers.get("retry-after"), "7");
    assert.deepEqual(first.json, { message: "slow down" });
    assert.equal((await postParts(r, goodParts())).status, 429);
    assert.equal((await postParts(r, goodParts())).status, 201);
  });

  test("failFor answers 503 for a while, then accepts again", async () => {
    r.failFor(150);
    assert.equal((await postParts(r, goodParts())).status, 503);
    await new Promise((res) => setTimeout(res, 200));
    assert.equal((await postParts(r, goodParts())).status, 201);
  });

  test("bodies over maxBodyBytes: 413", async () => {
    const parts = goodParts().map((p) => (p.name === "file" ? { ...p, value: "x".repeat(3000) + "\n" } : p));
    const res = await postParts(r, parts);
    assert.equal(res.status, 413);
  });
});

describe("receiver CLI", () => {
  test("prints where it listens, stores uploads in --dir, answers --fail-status for --fail-for, exits on SIGTERM", async () => {
    const dir = await mkdtemp(join(tmpdir(), "receiver-cli-"));
    const script = new URL("../scripts/receiver.ts", import.meta.url).pathname;
    const args = ["--port", "0", "--dir", dir, "--token", TOKEN, "--fail-status", "502", "--fail-for", "300ms"];
    const isBun = underBun();
    const child = spawn(process.execPath, isBun ? [script, ...args] : ["run", "-A", "--no-check", script, ...args], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const exited = new Promise<string>((res) => child.on("exit", (code, signal) => res(`${code}/${signal}`)));
    try {
      const first = await new Promise<string>((res, rej) => {
        let out = "";
        child.stdout!.on("data", (d) => {
          out += String(d);
          if (out.includes("\n")) res(out.split("\n")[0]!);
        });
        child.on("exit", () => rej(new Error("receiver exited before listening")));
      });
      const { listening } = JSON.parse(first) as { listening: string };
      assert.match(listening, /^http:\/\/127\.0\.0\.1:\d+$/);
      const r = { url: listening } as Receiver;
      assert.equal((await postParts(r, goodParts())).status, 502);
      await new Promise((res) => setTimeout(res, 350));
      assert.equal((await postParts(r, goodParts())).status, 201);
      const stats = await (await fetch(`${listening}/_stats`)).json();
      assert.deepEqual([stats.uploads, stats.lines, stats.bytes], [1, 2, 18]);
      assert.deepEqual((await readdir(dir)).sort(), ["1-UNR_Cowrie_Honeypot.json", "1-UNR_Cowrie_Honeypot.txt"]);
      child.kill("SIGTERM");
      // Deno's child_process reports a signalled child as killed even when it exited cleanly.
      assert.match(await exited, isBun ? /^0\/null$/ : /^(0\/null|null\/SIGTERM)$/);
    } finally {
      child.kill("SIGKILL");
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("upload body", () => {
  test("the runtime's own multipart parser reads exactly the parts and the payload", async () => {
    const chunks = [enc.encode('{"a":1}\n'), enc.encode('{"b":"two"}\n{"c":3}\n')];
    const { body, contentType, filename } = buildUploadBody({ ...meta, input: "cowrie" }, "json", chunks);
    assert.equal(filename, "cowrie.ndjson");
    const fd = await new Request("http://x/", { method: "POST", body, headers: { "content-type": contentType } }).formData();
    assert.deepEqual([...fd.keys()].sort(), ["file", "name", "orgid", "timezone", "typetag"]);
    assert.equal(fd.get("name"), meta.name);
    assert.equal(fd.get("orgid"), meta.orgid);
    assert.equal(fd.get("typetag"), meta.typetag);
    assert.equal(fd.get("timezone"), meta.timezone);
    const file = fd.get("file") as File;
    assert.equal(file.name, "cowrie.ndjson");
    // Bun's parser drops MIME types it does not know, so look at the header itself.
    assert.notEqual(indexOfBytes(body, enc.encode('filename="cowrie.ndjson"\r\nContent-Type: application/x-ndjson\r\n\r\n')), -1);
    assert.equal(await file.text(), '{"a":1}\n{"b":"two"}\n{"c":3}\n');
  });

  test("text events go as <input>.txt, text/plain", async () => {
    const { body, contentType } = buildUploadBody(meta, "text", [enc.encode("a\nb\n")]);
    const fd = await new Request("http://x/", { method: "POST", body, headers: { "content-type": contentType } }).formData();
    const file = fd.get("file") as File;
    assert.equal(file.name, "auth.txt");
    assert.match(file.type, /^text\/plain/);
    assert.equal(await file.text(), "a\nb\n");
  });

  test("a boundary that occurs in the payload is replaced by another", async () => {
    for (const payload of ["x\r\n--B1\r\n", "--B1\r\nx\n"]) {
      const offered = ["B1", "B2"];
      const { body, contentType } = buildUploadBody(meta, "text", [enc.encode(payload)], () => offered.shift()!);
      assert.equal(contentType, "multipart/form-data; boundary=B2");
      const fd = await new Request("http://x/", { method: "POST", body, headers: { "content-type": contentType } }).formData();
      assert.equal(await (fd.get("file") as File).text(), payload);
    }
    // "--B1" not after a line break is no delimiter, so B1 stays.
    const { contentType } = buildUploadBody(meta, "text", [enc.encode("x--B1\n")], () => "B1");
    assert.equal(contentType, "multipart/form-data; boundary=B1");
  });

  test("indexOfBytes finds needles at the edges and reports absence", () => {
    const hay = enc.encode("abcabcd");
    assert.equal(indexOfBytes(hay, enc.encode("abcd")), 3);
    assert.equal(indexOfBytes(hay, enc.encode("abc"), 1), 3);
    assert.equal(indexOfBytes(hay, enc.encode("cd")), 5);
    assert.equal(indexOfBytes(hay, enc.encode("cde")), -1);
    assert.equal(indexOfBytes(hay, enc.encode("a"), 7), -1);
  });
});
