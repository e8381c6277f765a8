import { test } from "node:test";
import assert from "node:assert/strict";
import { JsonArrayScanner, JsonStreamError, jsonArrayBatches, parseJsonArray, type JsonElement } from "./jsonstream.ts";

const enc = new TextEncoder();

// Two records in PhishTank's dump format (online-valid.json), with PHP's escaped slashes.
const PHISHTANK =
  '[{"phish_id":"7946016","url":"https:\\/\\/ardentig.top\\/","phish_detail_url":"http:\\/\\/www.phishtank.com\\/phish_detail.php?phish_id=7946016",' +
  '"submission_time":"2022-11-16T14:08:44+00:00","verified":"yes","verification_time":"2022-11-16T14:12:55+00:00","online":"yes",' +
  '"details":[{"ip_address":"204.152.210.139","cidr_block":"204.152.192.0\\/19","announcing_network":"8100","rir":"arin","country":"US","detail_time":"2022-11-16T14:13:00+00:00"}],"target":"AEON Card"},' +
  ' {"phish_id":"7946017","url":"http:\\/\\/198.51.100.23\\/office365\\/index.php?email=a@b.c","phish_detail_url":"http:\\/\\/www.phishtank.com\\/phish_detail.php?phish_id=7946017",' +
  '"submission_time":"2022-11-16T14:09:10+00:00","verified":"yes","verification_time":"2022-11-16T14:15:02+00:00","online":"yes","details":[],"target":"Other"}]';

// Strings holding quotes, backslashes, brackets and commas; multi-byte UTF-8 (2, 3 and 4 bytes).
const TRICKY =
  '\ufeff[ {"a":"x\\"]}\\\\","b":[1,{"c":"[{,"}],"d":"\\\\\\""} ,\n' +
  '  {"é":"naïve – 🎣 ✓","n":-1.5e3,"t":true,"z":null},"just a string \\" ]",42,  -0.5 , true,null,[],{},' +
  '{"e":"\\u00e9\\ud83c\\udfa3"}\r\n]\n';

function stream(bytes: Uint8Array, sizes: number[] | number, onCancel?: () => void): ReadableStream<Uint8Array> {
  let at = 0;
  let k = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (at >= bytes.length) return c.close();
      const n = typeof sizes === "number" ? sizes : sizes[k++ % sizes.length]!;
      c.enqueue(bytes.slice(at, at + n));
      at += n;
    },
    cancel() {
      onCancel?.();
    },
  });
}

async function collect(s: ReadableStream<Uint8Array>, opts = {}): Promise<JsonElement[]> {
  const all: JsonElement[] = [];
  for await (const batch of jsonArrayBatches(s, opts)) all.push(...batch);
  return all;
}

function errorOf(fn: () => unknown): JsonStreamError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof JsonStreamError, `expected JsonStreamError, got ${err}`);
    return err;
  }
  assert.fail("no error");
}

test("phishtank records: the exact source text of each element, parsed values, offsets", () => {
  const bytes = enc.encode(PHISHTANK);
  const els = parseJsonArray(bytes);
  const expected = JSON.parse(PHISHTANK) as object[];
  assert.equal(els.length, 2);
  assert.deepEqual(els.map((e) => e.value), expected);
  for (const e of els) {
    assert.equal(PHISHTANK.slice(e.offset, e.offset + e.text.length), e.text);
    assert.ok(e.text.startsWith('{"phish_id":') && e.text.endsWith("}"));
  }
  assert.equal(els[0]!.offset, 1);
  assert.match(els[0]!.text, /"url":"https:\\\/\\\/ardentig\.top\\\/"/);
});

test("split at every byte: escapes, brackets in strings, multi-byte UTF-8 across chunks, scalars", () => {
  const bytes = enc.encode(TRICKY);
  const whole = parseJsonArray(bytes);
  const expected = JSON.parse(TRICKY.slice(1)) as unknown[];
  assert.deepEqual(whole.map((e) => e.value), expected);
  // Single-line elements keep their source text exactly.
  assert.equal(whole[0]!.text, '{"a":"x\\"]}\\\\","b":[1,{"c":"[{,"}],"d":"\\\\\\""}');
  assert.equal(whole[1]!.text, '{"é":"naïve – 🎣 ✓","n":-1.5e3,"t":true,"z":null}');
  assert.equal(whole[2]!.text, '"just a string \\" ]"');
  assert.deepEqual(whole.slice(3, 9).map((e) => e.text), ["42", "-0.5", "true", "null", "[]", "{}"]);
  for (let cut = 0; cut <= bytes.length; cut++) {
    const s = new JsonArrayScanner();
    const out: JsonElement[] = [];
    s.push(bytes.subarray(0, cut), out);
    s.push(bytes.subarray(cut), out);
    s.end();
    assert.deepEqual(out, whole, `cut at ${cut}`);
  }
  const s = new JsonArrayScanner();
  const out: JsonElement[] = [];
  for (let i = 0; i < bytes.length; i++) s.push(bytes.subarray(i, i + 1), out);
  s.end();
  assert.deepEqual(out, whole);
});

test("an element spread over lines comes out on one line, equal in value", () => {
  const doc = '[\n  {\n    "a": 1,\n    "b": [\n      "x"\n    ]\n  },\r\n  {"c": "keep  spacing"}\n]';
  const els = parseJsonArray(enc.encode(doc));
  assert.equal(els[0]!.text, '{"a":1,"b":["x"]}');
  assert.equal(els[1]!.text, '{"c": "keep  spacing"}');
  // Even without parsing, a multi-line element is made single-line.
  assert.equal(parseJsonArray(enc.encode(doc), { parse: false })[0]!.text, '{"a":1,"b":["x"]}');
  assert.equal(parseJsonArray(enc.encode(doc), { parse: false })[1]!.value, undefined);
});

test("path: the array inside MISP's {\"response\": [...]} and {\"response\": {\"Attribute\": [...]}}", () => {
  const events = '{"response":[{"Event":{"id":"1","info":"a [tricky] \\"info\\""}},{"Event":{"id":"2","info":"b"}}]}';
  assert.deepEqual(parseJsonArray(enc.encode(events), { path: ["response"] }).map((e) => e.text), [
    '{"Event":{"id":"1","info":"a [tricky] \\"info\\""}}',
    '{"Event":{"id":"2","info":"b"}}',
  ]);
  // Siblings before and after the path are skipped, whatever they hold.
  const attrs =
    '{"meta":{"response":[1,2],"x":"]}"},"response":{"count":2,"Attribute":[{"id":"10","value":"1.2.3.4"},{"id":"11","value":"evil.example"}],' +
    '"Attribute2":[{"no":1}]},"tail":[{"z":"{"}]}';
  const els = parseJsonArray(enc.encode(attrs), { path: ["response", "Attribute"] });
  assert.deepEqual(els.map((e) => (e.value as { id: string }).id), ["10", "11"]);
  assert.deepEqual(parseJsonArray(enc.encode('{"response":[]}'), { path: ["response"] }), []);
  assert.match(errorOf(() => parseJsonArray(enc.encode('{"message":"nothing"}'), { path: ["response"] })).message, /no array at response/);
  assert.match(errorOf(() => parseJsonArray(enc.encode('{"response":{"Attribute":{}}}'), { path: ["response", "Attribute"] })).message, /expected an array at response\.Attribute, found '\{'/);
  assert.match(errorOf(() => parseJsonArray(enc.encode("[1]"), { path: ["response"] })).message, /expected a JSON object/);
});

test("malformed documents: a clear error with the byte offset", () => {
  const cases: Array<[string, RegExp, number]> = [
    ["", /empty/, 0],
    ['{"a":1}', /expected a JSON array \('\['\), found '\{' at offset 0/, 0],
    ['[{"a":1},]', /expected a JSON value, found '\]' at offset 9/, 9],
    ['[{"a":1}{"b":2}]', /expected ',' or '\]' after an array element, found '\{' at offset 8/, 8],
    ['[{"a":1}] x', /unexpected 'x' after the end of the JSON document at offset 10/, 10],
    ['[{"a":[1}]', /mismatched '\}' at offset 8/, 8],
    ['[{"a":"unterminated}]', /ends early at offset 21 \(in a value starting at offset 1\)/, 21],
    ['[{"a":1}', /ends early at offset 8/, 8],
    ["[{a:1}]", /element at offset 1 is not valid JSON/, 1],
    ["[tru]", /element at offset 1 is not valid JSON/, 1],
    ["<html>", /expected a JSON array \('\['\), found '<' at offset 0/, 0],
  ];
  for (const [doc, re, offset] of cases) {
    const err = errorOf(() => parseJsonArray(enc.encode(doc)));
    assert.match(err.message, re, doc);
    assert.equal(err.offset, offset, doc);
  }
});

test("a UTF-8 BOM and surrounding whitespace are fine; empty arrays give nothing", () => {
  assert.deepEqual(parseJsonArray(enc.encode("\ufeff \n[ ]\n")), []);
  assert.deepEqual(parseJsonArray(Uint8Array.of(0xef, 0xbb, 0xbf, 0x5b, 0x31, 0x5d)).map((e) => e.value), [1]);
});

test("an element larger than maxElementBytes is an error, not unbounded memory", () => {
  const big = `[{"a":"${"x".repeat(5000)}"}]`;
  const s = new JsonArrayScanner({ maxElementBytes: 1000 });
  const out: JsonElement[] = [];
  assert.throws(() => {
    for (let i = 0; i < big.length; i += 100) s.push(enc.encode(big.slice(i, i + 100)), out);
  }, /larger than 1000 bytes \(starting at offset 1\)/);
});

test("jsonArrayBatches: batches of batchSize over a stream, any chunking", async () => {
  const records = Array.from({ length: 2500 }, (_, i) => ({ phish_id: String(i), url: `http://x.example/${i}?q="${"é".repeat(i % 5)}"`, details: i % 3 ? [] : [{ ip: "1.2.3.4" }] }));
  const doc = enc.encode(`[${records.map((r) => JSON.stringify(r)).join(",\t ")}]`);
  const sizes = [1, 7, 300, 4096, 65536, 3];
  const batches: number[] = [];
  const all: JsonElement[] = [];
  for await (const batch of jsonArrayBatches(stream(doc, sizes), { batchSize: 1000 })) {
    batches.push(batch.length);
    all.push(...batch);
  }
  assert.deepEqual(batches, [1000, 1000, 500]);
  assert.deepEqual(all.map((e) => e.value), records);
  assert.deepEqual(all.map((e) => e.text), records.map((r) => JSON.stringify(r)));
});

test("jsonArrayBatches: stopping early cancels the stream; a broken document rejects", async () => {
  const doc = enc.encode(JSON.stringify(Array.from({ length: 100 }, (_, k) => ({ k }))));
  let cancelled = false;
  for await (const batch of jsonArrayBatches(stream(doc, 50, () => (cancelled = true)), { batchSize: 10 })) {
    assert.equal(batch.length, 10);
    break;
  }
  assert.equal(cancelled, true);
  await assert.rejects(collect(stream(enc.encode('[{"a":1},{"b":2}'), 4)), /ends early at offset 16/);
  await assert.rejects(collect(stream(enc.encode('[{"a":1} {"b":2}]'), 4)), (err: unknown) => err instanceof JsonStreamError && err.offset === 9);
});

test("parse: false yields texts only (structure still checked)", () => {
  const els = parseJsonArray(enc.encode(PHISHTANK), { parse: false });
  assert.equal(els.length, 2);
  assert.equal(els[0]!.value, undefined);
  assert.deepEqual(JSON.parse(els[1]!.text), (JSON.parse(PHISHTANK) as object[])[1]);
  assert.throws(() => parseJsonArray(enc.encode('[{"a":[1}]'), { parse: false }), /mismatched '\}' at offset 8/);
  assert.throws(() => parseJsonArray(enc.encode('[{"a":1}}]'), { parse: false }), /expected ',' or '\]' after an array element, found '\}' at offset 8/);
});

test("a huge element among small ones (the buffer grows for it and shrinks after)", async () => {
  const huge = { Event: { info: "big", Attribute: Array.from({ length: 60_000 }, (_, k) => ({ value: `10.${k >> 16}.${(k >> 8) & 255}.${k & 255}`, type: "ip-dst" })) } };
  const small = Array.from({ length: 50 }, (_, k) => ({ Event: { id: String(k) } }));
  const doc = JSON.stringify({ response: [small[0], huge, ...small.slice(1)] });
  assert.ok(doc.length > 2_000_000);
  const all = await collect(stream(enc.encode(doc), 65536), { path: ["response"] });
  assert.equal(all.length, 51);
  assert.deepEqual(all[1]!.value, huge);
  assert.deepEqual(all.slice(2).map((e) => e.value), small.slice(1));
});
