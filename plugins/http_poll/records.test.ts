import { test } from "node:test";
import assert from "node:assert/strict";
import { nextLink, valueAt } from "./paths.ts";
import { FormatError, PageReader, type FormatOptions, type PollRecord } from "./records.ts";

/** A body delivered in pieces of `size` bytes (so records straddle chunks). */
function body(text: string, size = 7): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  let at = 0;
  return new ReadableStream({
    pull(c) {
      if (at >= bytes.length) return c.close();
      c.enqueue(bytes.slice(at, at + size));
      at += size;
    },
  });
}

const base: FormatOptions = { format: "json", whole: false, csvHeader: true, csvDelimiter: ",", batchSize: 2 };

async function read(text: string, opts: Partial<FormatOptions>): Promise<{ batches: PollRecord[][]; next: unknown }> {
  const reader = new PageReader(body(text), { ...base, ...opts });
  const batches: PollRecord[][] = [];
  for await (const b of reader.batches()) batches.push(b);
  return { batches, next: reader.nextValue };
}

test("valueAt: dotted steps through objects and arrays; a key spelled with dots wins", () => {
  const doc = { a: { b: [{ c: 1 }, { c: "x" }] }, "a.b": "literal" };
  assert.equal(valueAt(doc, "a.b.1.c"), "x");
  assert.equal(valueAt(doc, "a.b"), "literal");
  assert.equal(valueAt(doc, "a.x.c"), undefined);
  assert.equal(valueAt(doc, "a.b.c"), undefined);
  assert.equal(valueAt({ a: { toString: 1 } }, "a.constructor"), undefined);
});

test("nextLink: rel=next among several links and relations, quoted commas, none", () => {
  assert.equal(nextLink('<https://api.example/x?page=1>; rel="prev", <https://api.example/x?page=3>; rel="next"'), "https://api.example/x?page=3");
  assert.equal(nextLink('</a>; title="a, b"; rel="first", </b>; rel="last next"'), "/b");
  assert.equal(nextLink("</c>; REL=next"), "/c");
  assert.equal(nextLink('</a>; rel="first"'), null);
  assert.equal(nextLink("</a>; rel=nextpage"), null);
  assert.equal(nextLink(null), null);
});

test("json, streamed: batches of the configured size, source text kept", async () => {
  const { batches } = await read('{"x": 1, "data": {"items": [{"a": 1}, {"b":  2}, {"c": 3}]}}', { records: ["data", "items"] });
  assert.deepEqual(batches.map((b) => b.map((r) => r.text)), [['{"a": 1}', '{"b":  2}'], ['{"c": 3}']]);
  assert.deepEqual(batches[0]![1]!.value, { b: 2 });
});

test("json: an absent or null records array is an answer without records, streamed or whole", async () => {
  for (const whole of [false, true]) {
    assert.deepEqual((await read('{"data": {"other": 1}}', { records: ["data", "items"], whole })).batches, [], `whole ${whole}`);
    assert.deepEqual((await read('{"data": {"items": null}}', { records: ["data", "items"], whole })).batches, [], `whole ${whole}`);
    await assert.rejects(read('{"data": {"items": 5}}', { records: ["data", "items"], whole }), `whole ${whole}`);
  }
});

test("json, whole: the next field is read wherever it is, even after the records", async () => {
  const { batches, next } = await read('{"items": [{"a": 1}], "links": {"next": "/p2"}}', { records: ["items"], whole: true, nextField: "links.next" });
  assert.deepEqual(batches.flat().map((r) => r.text), ['{"a": 1}']);
  assert.equal(next, "/p2");
});

test("json: not JSON, empty, or a bare value is a FormatError", async () => {
  for (const whole of [false, true]) {
    await assert.rejects(read("", { whole }), FormatError);
    await assert.rejects(read('"just a string"', { whole }), FormatError);
    await assert.rejects(read("{oops}", { whole }), FormatError);
  }
});

test("text and ndjson: a UTF-8 character split across chunks stays whole", async () => {
  const { batches } = await read("héllo wörld 😀\nsecond\n", { format: "text", batchSize: 1000 });
  assert.deepEqual(batches.flat().map((r) => r.text), ["héllo wörld 😀", "second"]);
  const nd = await read('\ufeff{"k": "😀"}\n', { format: "ndjson" });
  assert.deepEqual(nd.batches.flat().map((r) => r.text), ['{"k": "😀"}']);
});
