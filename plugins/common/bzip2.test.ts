import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { concat as concatParts } from "../../agent/bytes.ts";
import { errorMessage } from "../../agent/errortext.ts";
import { Bzip2Error, bunzip2, bunzip2Stream } from "./bzip2.ts";

const BZIP2 = "/usr/bin/bzip2";
const skip = existsSync(BZIP2) ? false : `needs ${BZIP2} to make reference .bz2 data`;

/** Compresses with the real bzip2 at the given level (1..9). */
function bzip2(data: Uint8Array, level = 9): Uint8Array {
  // Input goes through a file: Deno's spawnSync writes all of stdin before reading stdout,
  // which deadlocks once bzip2 has more output than a pipe holds.
  const dir = mkdtempSync(join(tmpdir(), "bzip2-test-"));
  try {
    const file = join(dir, "in");
    writeFileSync(file, data);
    const r = spawnSync(BZIP2, [`-${level}`, "-c", file], { maxBuffer: 1 << 28 });
    if (r.status !== 0) throw new Error(`bzip2 -${level} failed: ${r.stderr}`);
    return new Uint8Array(r.stdout);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// Deterministic inputs, so a failure reproduces.
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomBytes(n: number, seed: number): Uint8Array {
  const rnd = prng(seed);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (rnd() * 256) | 0;
  return out;
}

const WORDS = ["phish", "url", "login", "verify", "account", "https://", "example.com", "\n", "{\"id\":", "}", " ", "  ", "0", "12345"];
function text(n: number, seed: number): Uint8Array {
  const rnd = prng(seed);
  let s = "";
  while (s.length < n) s += WORDS[(rnd() * WORDS.length) | 0] + (rnd() < 0.1 ? String((rnd() * 1e6) | 0) : "");
  return new TextEncoder().encode(s.slice(0, n));
}

function repeat(byte: number, n: number): Uint8Array {
  return new Uint8Array(n).fill(byte);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  return concatParts(parts);
}

function assertBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (actual.length === expected.length) {
    let i = 0;
    while (i < actual.length && actual[i] === expected[i]) i++;
    if (i === actual.length) return;
    assert.fail(`${what}: first difference at byte ${i} of ${actual.length}`);
  }
  assert.fail(`${what}: got ${actual.length} bytes, expected ${expected.length}`);
}

function split(data: Uint8Array, sizes: () => number): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < data.length; ) {
    const n = Math.max(1, sizes());
    chunks.push(data.slice(i, i + n));
    i += n;
  }
  return chunks;
}

/** Feeds chunks through bunzip2Stream() while reading, as a pipe would. */
async function streamDecode(chunks: Uint8Array[]): Promise<{ data: Uint8Array; sizes: number[] }> {
  const ts = bunzip2Stream();
  const writer = ts.writable.getWriter();
  const writing = (async () => {
    for (const c of chunks) await writer.write(c);
    await writer.close();
  })();
  const reading = (async () => {
    const parts: Uint8Array[] = [];
    for await (const c of ts.readable) parts.push(c);
    return parts;
  })();
  const [, parts] = await Promise.all([writing, reading]);
  return { data: concat(...parts), sizes: parts.map((p) => p.length) };
}

function assertBzip2Error(fn: () => unknown, what: string): void {
  assert.throws(fn, (e: unknown) => e instanceof Bzip2Error && /^bzip2: /.test(e.message), what);
}

// Inputs aimed at the format's edges: RLE1 turns 4..259 equal bytes into 4 bytes + a count,
// so runs of 4, 5, 259 and 260 sit on its boundaries; periodic blocks make the inverse BWT's
// permutation split into several cycles; random bytes do not compress at all.
const CASES: [string, Uint8Array][] = [
  ["empty", new Uint8Array(0)],
  ["one byte", new Uint8Array([0x41])],
  ["one zero byte", new Uint8Array([0])],
  ...[1, 3, 4, 5, 6, 258, 259, 260, 261, 518, 519, 1000].map((n): [string, Uint8Array] => [`run of ${n}`, repeat(0x61, n)]),
  ["runs around text", concat(text(100, 1), repeat(7, 4), text(10, 2), repeat(7, 5), repeat(8, 259), repeat(9, 260), text(50, 3))],
  ["run of 300k", repeat(0xff, 300_000)],
  ["periodic ab", new TextEncoder().encode("ab".repeat(50_000))],
  ["periodic abc with runs", new TextEncoder().encode("abcccccc".repeat(20_000))],
  ["all byte values", Uint8Array.from({ length: 4096 }, (_, i) => i & 0xff)],
  ["random 150k", randomBytes(150_000, 4)],
  ["text 300k", text(300_000, 5)],
];

test("round trip against bzip2 -1 and -9: empty, single bytes, RLE1 run edges, periodic, random, text", { skip }, () => {
  for (const [name, input] of CASES) {
    for (const level of [1, 9]) {
      assertBytes(bunzip2(bzip2(input, level)), input, `${name} at -${level}`);
    }
  }
});

test("round trip at every level 1..9 (block size changes)", { skip }, () => {
  const input = concat(text(250_000, 6), randomBytes(20_000, 7));
  for (let level = 1; level <= 9; level++) assertBytes(bunzip2(bzip2(input, level)), input, `level ${level}`);
});

test("multi-block streams: -1 over many 100k blocks, -9 over two 900k blocks", { skip }, () => {
  const small = concat(text(450_000, 8), randomBytes(120_000, 9), repeat(0x20, 50_000), text(200_000, 10));
  assertBytes(bunzip2(bzip2(small, 1)), small, "-1, 9 blocks");
  const big = concat(text(1_000_000, 11), randomBytes(100_000, 12));
  assertBytes(bunzip2(bzip2(big, 9)), big, "-9, 2 blocks");
});

test("concatenated streams (as pbzip2/lbzip2 write them) decode one after the other", { skip }, async () => {
  const a = text(150_000, 13), b = randomBytes(5_000, 14), c = new Uint8Array(0), d = repeat(0x61, 1000);
  const joined = concat(bzip2(a, 1), bzip2(b, 9), bzip2(c, 5), bzip2(d, 2));
  const expected = concat(a, b, c, d);
  assertBytes(bunzip2(joined), expected, "whole buffer");
  const rnd = prng(15);
  const { data } = await streamDecode(split(joined, () => (rnd() * 3000) | 0));
  assertBytes(data, expected, "stream");
});

test("stream: any chunking, including 1-byte chunks, gives the whole-buffer result in chunks of at most 64 KiB", { skip }, async () => {
  const input = concat(text(250_000, 16), repeat(0x41, 70_000), randomBytes(30_000, 17));
  const compressed = bzip2(input, 1);
  const whole = bunzip2(compressed);
  assertBytes(whole, input, "whole buffer");
  const rnd = prng(18);
  const chunkings: [string, () => number][] = [
    ["1-byte", () => 1],
    ["random 1..10", () => 1 + ((rnd() * 10) | 0)],
    ["random 1..70000", () => 1 + ((rnd() * 70_000) | 0)],
    ["single chunk", () => compressed.length],
  ];
  for (const [name, sizes] of chunkings) {
    const { data, sizes: outSizes } = await streamDecode(split(compressed, sizes));
    assertBytes(data, whole, `${name} chunks`);
    assert.ok(Math.max(...outSizes) <= 64 * 1024, `${name}: output chunk of ${Math.max(...outSizes)} bytes`);
  }
});

test("stream: output starts before the input ends (one block at a time)", { skip }, async () => {
  const input = text(500_000, 19);
  const compressed = bzip2(input, 1); // 5 blocks
  const chunks = split(compressed, () => 4096);
  const ts = bunzip2Stream();
  const writer = ts.writable.getWriter();
  let written = 0;
  let writtenAtFirstOutput = -1;
  const reading = (async () => {
    const parts: Uint8Array[] = [];
    for await (const c of ts.readable) {
      if (writtenAtFirstOutput < 0) writtenAtFirstOutput = written;
      parts.push(c);
    }
    return concat(...parts);
  })();
  for (const c of chunks) {
    written += c.length;
    await writer.write(c);
  }
  await writer.close();
  assertBytes(await reading, input, "stream");
  assert.ok(
    writtenAtFirstOutput > 0 && writtenAtFirstOutput < compressed.length / 2,
    `first output after ${writtenAtFirstOutput} of ${compressed.length} compressed bytes`,
  );
});

test("truncated input throws Bzip2Error, whole-buffer and on stream flush", { skip }, async () => {
  const single = bzip2(text(3000, 20), 1);
  for (let n = 0; n < single.length; n++) assertBzip2Error(() => bunzip2(single.subarray(0, n)), `prefix of ${n} bytes`);
  const multi = bzip2(concat(text(250_000, 21), randomBytes(10_000, 22)), 1);
  const rnd = prng(23);
  for (let k = 0; k < 20; k++) {
    const n = (rnd() * multi.length) | 0;
    assertBzip2Error(() => bunzip2(multi.subarray(0, n)), `multi-block prefix of ${n} bytes`);
    if (k < 5) {
      await assert.rejects(streamDecode(split(multi.subarray(0, n), () => 1 + ((rnd() * 5000) | 0))), Bzip2Error);
    }
  }
  assert.ok(/truncated/.test(catchMessage(() => bunzip2(multi.subarray(0, multi.length - 100)))));
});

function catchMessage(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return errorMessage(e);
  }
  return "";
}

// Some bits cannot matter: the level digit of a small stream, the padding after the end
// marker, and code lengths of a Huffman table that no selector picks (bzip2 leaves some unused
// in small blocks). Any other flip must throw, never decode to different data.
test("single-bit flips throw Bzip2Error or, where the bit is unused, decode to the original", { skip }, () => {
  const input = text(1200, 24);
  const good = bzip2(input, 1);
  let undetected = 0;
  for (let bit = 0; bit < good.length * 8; bit++) {
    const bad = good.slice();
    bad[bit >>> 3] ^= 0x80 >>> (bit & 7);
    let out: Uint8Array | undefined;
    try {
      out = bunzip2(bad);
    } catch (e) {
      assert.ok(e instanceof Bzip2Error, `bit ${bit}: ${e}`);
      continue;
    }
    // Decoding anyway is only acceptable where the bit does not change the data.
    assertBytes(out, input, `bit ${bit} decoded to other data`);
    undetected++;
  }
  assert.ok(undetected * 50 < good.length * 8, `${undetected} of ${good.length * 8} flips undetected`);
});

test("not bzip2 data, empty input and trailing garbage throw Bzip2Error", { skip }, () => {
  assertBzip2Error(() => bunzip2(new Uint8Array(0)), "empty");
  assertBzip2Error(() => bunzip2(new TextEncoder().encode("hello world")), "text");
  assertBzip2Error(() => bunzip2(new TextEncoder().encode("BZh0")), "level 0");
  assertBzip2Error(() => bunzip2(concat(new TextEncoder().encode("BZh9"), randomBytes(5000, 25))), "random after header");
  const good = bzip2(text(1000, 26), 9);
  assertBzip2Error(() => bunzip2(concat(good, new TextEncoder().encode("garbage!"))), "trailing garbage");
  assertBzip2Error(() => bunzip2(concat(good, new Uint8Array(8))), "trailing zeros");
  assert.match(catchMessage(() => bunzip2(concat(good, Uint8Array.of(10)))), /data after stream 1 is not a bzip2 stream/);
  assert.match(catchMessage(() => bunzip2(concat(good, good.subarray(0, 2)))), /stream 2: input is truncated/);
});

test("a block longer than the header's level allows is rejected", { skip }, () => {
  const input = text(300_000, 27);
  const compressed = bzip2(input, 9); // one block of 300k
  compressed[3] = 0x31; // claim level 1: blocks of at most 100k
  assert.match(catchMessage(() => bunzip2(compressed)), /block longer than/);
});

// A bzip2 block made bit by bit, to forge what no encoder writes.
class BitWriter {
  private bytes: number[] = [];
  private acc = 0;
  private n = 0;
  bits(count: number, value: number): this {
    for (let i = count - 1; i >= 0; i--) {
      this.acc = (this.acc << 1) | ((value >>> i) & 1);
      if (++this.n === 8) {
        this.bytes.push(this.acc);
        this.acc = 0;
        this.n = 0;
      }
    }
    return this;
  }
  done(): Uint8Array {
    return Uint8Array.from(this.n ? [...this.bytes, this.acc << (8 - this.n)] : this.bytes);
  }
}

/**
 * Stream header (level 1) and a block using only byte 'x', with 2 identical Huffman tables
 * over RUNA=0, RUNB=10, EOB=11, then the given symbols (0 RUNA, 1 RUNB, 2 EOB).
 */
function forgedBlock(symbols: number[], opts: { origPtr?: number; selector?: number } = {}): Uint8Array {
  const w = new BitWriter();
  for (const c of "BZh1") w.bits(8, c.charCodeAt(0));
  w.bits(24, 0x314159).bits(24, 0x265359).bits(32, 0).bits(1, 0).bits(24, opts.origPtr ?? 0);
  w.bits(16, 0x8000 >>> 7).bits(16, 0x8000 >>> 8); // 'x' = 0x78: group 7, bit 8
  const nSelectors = Math.ceil((symbols.length + 1) / 50);
  w.bits(3, 2).bits(15, nSelectors);
  for (let i = 0; i < nSelectors; i++) {
    for (let j = 0; j < (opts.selector ?? 0); j++) w.bits(1, 1);
    w.bits(1, 0);
  }
  for (let t = 0; t < 2; t++) w.bits(5, 1).bits(1, 0).bits(3, 0b100).bits(1, 0); // lengths 1, 2, 2
  for (const s of symbols) w.bits(s === 0 ? 1 : 2, s === 0 ? 0 : s === 1 ? 0b10 : 0b11);
  w.bits(2, 0b11);
  return w.done();
}

test("forged blocks: huge zero runs, bad selectors and pointers fail fast with Bzip2Error", () => {
  // 16 RUNB = a run of 2 * (2^16 - 1) = 131070 bytes, more than level 1's 100k block.
  assert.match(catchMessage(() => bunzip2(forgedBlock(new Array(16).fill(1)))), /block longer than/);
  // 40 RUNB would be a run of ~2^41: rejected as soon as the weight passes 2^21.
  assert.match(catchMessage(() => bunzip2(forgedBlock(new Array(40).fill(1)))), /zero run too long/);
  assert.match(catchMessage(() => bunzip2(forgedBlock([0], { selector: 2 }))), /selector out of range/);
  assert.match(catchMessage(() => bunzip2(forgedBlock([0], { origPtr: 5 }))), /origin pointer/);
  // Well-formed up to the CRC, which is forged as 0.
  assert.match(catchMessage(() => bunzip2(forgedBlock([0, 1]))), /block CRC mismatch/);
  assert.match(catchMessage(() => bunzip2(forgedBlock([]))), /origin pointer/);
});

test("property: random data round-trips through real bzip2, whole and streamed", { skip }, async () => {
  const runs = fc.array(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 600 })), { maxLength: 20 })
    .map((rs) => concat(...rs.map(([b, n]) => repeat(b, n))));
  const input = fc.oneof(fc.uint8Array({ maxLength: 3000 }), runs, fc.uint8Array({ minLength: 1, maxLength: 8, max: 3 }).chain((alpha) =>
    fc.array(fc.integer({ min: 0, max: alpha.length - 1 }), { maxLength: 5000 }).map((ix) => Uint8Array.from(ix, (i) => alpha[i]))));
  await fc.assert(
    fc.asyncProperty(input, fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 500 }), async (data, level, chunk) => {
      const compressed = bzip2(data, level);
      assertBytes(bunzip2(compressed), data, "whole");
      assertBytes((await streamDecode(split(compressed, () => chunk))).data, data, "stream");
    }),
    { numRuns: 50 },
  );
});
