import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync, zipSync } from "fflate";
import { compressionFromHints, decompress, decompressFile, DecompressError, sniffCompression } from "./decompress.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Some JSON lines, long enough to span many chunks once compressed. */
function sample(lines = 5000): Uint8Array {
  const out: string[] = [];
  for (let i = 0; i < lines; i++) out.push(JSON.stringify({ phish_id: String(7_000_000 + i), url: `http://evil${i % 97}.example/login?u=${i}`, target: "Other" }));
  return enc.encode(out.join("\n") + "\n");
}

function chunked(bytes: Uint8Array, sizes: number[]): ReadableStream<Uint8Array> {
  let at = 0;
  let k = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (at >= bytes.length) return c.close();
      const n = sizes[Math.min(k++, sizes.length - 1)]!;
      c.enqueue(bytes.slice(at, at + n));
      at += n;
    },
  });
}

async function readAll(s: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(s).arrayBuffer());
}

function bzip2(data: Uint8Array): Uint8Array {
  return new Uint8Array(execFileSync("/usr/bin/bzip2", ["-c", "-9"], { input: data, maxBuffer: 64 << 20 }));
}

// Byte-at-a-time for the head (the format is recognised across chunks), then big chunks.
const SIZES = [1, 1, 1, 2, 3, 5, 8, 13, 4096, 65536];

test("gzip: single and multi-member, recognised across tiny first chunks", async () => {
  const data = sample();
  const one = gzipSync(data);
  const r = await decompress(chunked(one, SIZES));
  assert.equal(r.compression, "gzip");
  assert.deepEqual(await readAll(r.body), data);
  // pigz and `cat a.gz b.gz` write several members: all are read.
  const half = data.length >> 1;
  const multi = new Uint8Array([...gzipSync(data.subarray(0, half)), ...gzipSync(data.subarray(half))]);
  assert.deepEqual(await readAll((await decompress(chunked(multi, SIZES))).body), data);
});

test("bzip2 (made by /usr/bin/bzip2), several streams back to back too", async () => {
  const data = sample();
  const bz = bzip2(data);
  const r = await decompress(chunked(bz, SIZES));
  assert.equal(r.compression, "bzip2");
  assert.deepEqual(await readAll(r.body), data);
  const two = new Uint8Array([...bzip2(enc.encode("first\n")), ...bzip2(enc.encode("second\n"))]);
  assert.equal(dec.decode(await readAll((await decompress(chunked(two, [7]))).body)), "first\nsecond\n");
});

test("zip: the first file, or the entry named (full or base name); a missing one names what is there", async () => {
  const data = sample();
  const archive = zipSync({ "docs/": new Uint8Array(0), "docs/readme.txt": enc.encode("read me"), "feed/online-valid.json": data }, { level: 6 });
  const first = await decompress(chunked(archive, SIZES));
  assert.equal(first.compression, "zip");
  assert.equal(dec.decode(await readAll(first.body)), "read me");
  assert.deepEqual(await readAll((await decompress(chunked(archive, SIZES), { zipEntry: "online-valid.json" })).body), data);
  assert.deepEqual(await readAll((await decompress(chunked(archive, SIZES), { zipEntry: "feed/online-valid.json" })).body), data);
  const missing = await decompress(chunked(archive, [4096]), { zipEntry: "nope.csv" });
  await assert.rejects(readAll(missing.body), (err: unknown) => {
    assert.ok(err instanceof DecompressError);
    assert.match(err.message, /no entry nope\.csv \(entries: docs\/, docs\/readme\.txt, feed\/online-valid\.json\)/);
    return true;
  });
});

test("zip written to a pipe by /usr/bin/zip (data descriptors, sizes unknown up front)", async () => {
  const dir = await mkdtemp(join(tmpdir(), "decompress-"));
  try {
    const data = sample(2000);
    await writeFile(join(dir, "feed.txt"), data);
    const archive = new Uint8Array(execFileSync("/usr/bin/zip", ["-q", "-", "feed.txt"], { cwd: dir, maxBuffer: 64 << 20 }));
    const r = await decompress(chunked(archive, [1000]));
    assert.equal(r.compression, "zip");
    assert.deepEqual(await readAll(r.body), data);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("plain bodies pass through unchanged, including ones that start like a magic number", async () => {
  for (const text of ["", "[", "P", "PK", "B", "BZh", "BZh9 is not bzip2 data", "\x1f", '[{"phish_id":"1"}]', "PKG list\n"]) {
    const r = await decompress(chunked(enc.encode(text), [1]));
    assert.equal(r.compression, "none", JSON.stringify(text));
    assert.equal(dec.decode(await readAll(r.body)), text);
  }
});

test("corrupt or truncated compressed data: DecompressError naming the format", async () => {
  const data = sample();
  const gz = gzipSync(data);
  const cut = gz.slice(0, gz.length >> 1);
  await assert.rejects(readAll((await decompress(chunked(cut, [4096]))).body), (err: unknown) => err instanceof DecompressError && /gzip/.test(err.message));
  const garbled = gz.slice();
  for (let i = 100; i < 400; i++) garbled[i] = garbled[i]! ^ 0x5a;
  await assert.rejects(readAll((await decompress(chunked(garbled, [4096]))).body), (err: unknown) => err instanceof DecompressError && /gzip/.test(err.message));
  const bz = bzip2(data);
  await assert.rejects(readAll((await decompress(chunked(bz.slice(0, bz.length - 200), [4096]))).body), (err: unknown) => err instanceof DecompressError && /bzip2/.test(err.message));
  const zip = zipSync({ "a.json": data });
  await assert.rejects(readAll((await decompress(chunked(zip.slice(0, zip.length >> 1), [4096]))).body), (err: unknown) => err instanceof DecompressError && /zip/.test(err.message));
});

test("an error of the input itself comes out unchanged (not relabelled as corrupt data)", async () => {
  const gz = gzipSync(sample());
  const boom = new Error("connection reset");
  let sent = false;
  const input = new ReadableStream<Uint8Array>({
    pull(c) {
      if (!sent) {
        sent = true;
        c.enqueue(gz.slice(0, 2000));
      } else {
        c.error(boom);
      }
    },
  });
  const r = await decompress(input);
  await assert.rejects(readAll(r.body), (err: unknown) => err === boom);
});

test("decompressFile reads a .gz file from disk", async () => {
  const dir = await mkdtemp(join(tmpdir(), "decompress-"));
  try {
    const data = sample(300);
    await writeFile(join(dir, "events.json.gz"), gzipSync(data));
    const r = await decompressFile(join(dir, "events.json.gz"));
    assert.equal(r.compression, "gzip");
    assert.deepEqual(await readAll(r.body), data);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("sniffCompression and compressionFromHints", () => {
  assert.equal(sniffCompression(Uint8Array.of(0x1f)), null);
  assert.equal(sniffCompression(Uint8Array.of(0x1f), true), "none");
  assert.equal(sniffCompression(Uint8Array.of(0x1f, 0x8b)), "gzip");
  assert.equal(sniffCompression(enc.encode("PK\x03\x04")), "zip");
  assert.equal(sniffCompression(enc.encode("{")), "none");
  assert.equal(compressionFromHints({ contentEncoding: "gzip" }), "gzip");
  assert.equal(compressionFromHints({ contentEncoding: "x-bzip2" }), "bzip2");
  assert.equal(compressionFromHints({ contentType: "application/x-bzip2" }), "bzip2");
  assert.equal(compressionFromHints({ contentType: "application/zip; charset=binary" }), "zip");
  assert.equal(compressionFromHints({ contentType: "application/json", url: "http://data.phishtank.com/data/KEY/online-valid.json.bz2" }), "bzip2");
  assert.equal(compressionFromHints({ url: "https://h.example/dump.json.gz?x=1" }), "gzip");
  assert.equal(compressionFromHints({ url: "https://h.example/export.zip" }), "zip");
  assert.equal(compressionFromHints({ url: "https://h.example/feed.txt", contentType: "text/plain" }), "none");
});
