import { test } from "node:test";
import assert from "node:assert/strict";
import { parseSubmission } from "./body.ts";
import { InputError } from "../../agent/plugin.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const parse = (s: string, ct: string | null) => parseSubmission(enc(s), ct);

function rejects(s: string | Uint8Array, ct: string | null, pattern: RegExp) {
  assert.throws(() => parseSubmission(typeof s === "string" ? enc(s) : s, ct), (err: unknown) => {
    assert.ok(err instanceof InputError, `expected an InputError, got ${err}`);
    assert.equal(err.status, 400);
    assert.ok(!err.message.includes("\n"), "the reason is one line");
    assert.match(err.message, pattern);
    return true;
  });
}

test("application/json: an object is one event, an array of objects many, an array of strings text", () => {
  assert.deepEqual(parse('{"ip": "1.2.3.4",\n "tags": ["a"]}', "application/json"),
    { kind: "json", events: ['{"ip":"1.2.3.4","tags":["a"]}'] });
  assert.deepEqual(parse('[{"a":1},{"b":{"c":2}}]', "application/json; charset=utf-8"),
    { kind: "json", events: ['{"a":1}', '{"b":{"c":2}}'] });
  assert.deepEqual(parse('["http://bad.example/x", "", "8.8.8.8"]', "application/json"),
    { kind: "text", events: ["http://bad.example/x", "8.8.8.8"] });
});

test("application/json: mixed arrays, scalars, empty arrays, line breaks in text and bad JSON are refused", () => {
  rejects('[{"a":1}, "x"]', "application/json", /element 1: expected a JSON object/);
  rejects('["x", {"a":1}]', "application/json", /element 1: expected a string/);
  rejects('[[1]]', "application/json", /element 0: expected a JSON object.*array/);
  rejects("42", "application/json", /expected a JSON object or array, got a number/);
  rejects("[]", "application/json", /empty/);
  rejects('["a\\nb"]', "application/json", /element 0: .*line break/);
  rejects('{"a": 1', "application/json", /^invalid JSON: /);
  // NDJSON sent as application/json is not JSON.
  rejects('{"a":1}\n{"b":2}', "application/json", /^invalid JSON: /);
});

test("application/x-ndjson: one object a line, blank lines and CRLF allowed, errors name the line", () => {
  assert.deepEqual(parse('{"a":1}\r\n\r\n  {"b":2}  \n', "application/x-ndjson"),
    { kind: "json", events: ['{"a":1}', '{"b":2}'] });
  rejects('{"a":1}\n{"b":2}\n{"c":', "application/x-ndjson", /^line 3: /);
  rejects('{"a":1}\n[1,2]\n', "application/x-ndjson", /^line 2: expected a JSON object, got an array/);
  rejects("\n\n", "application/x-ndjson", /empty/);
});

test("text/plain: every non-empty line is a text event, CRLF handled", () => {
  assert.deepEqual(parse("Failed password for root from 1.2.3.4\r\n\r\n{not json}\nlast", "text/plain"),
    { kind: "text", events: ["Failed password for root from 1.2.3.4", "{not json}", "last"] });
});

test("no or another content type: sniffed by the first character", () => {
  assert.deepEqual(parse('  {"a":1}', null), { kind: "json", events: ['{"a":1}'] });
  assert.deepEqual(parse('[{"a":1}]', "application/octet-stream"), { kind: "json", events: ['{"a":1}'] });
  assert.deepEqual(parse('{"a":1}\n{"b":2}\n', null), { kind: "json", events: ['{"a":1}', '{"b":2}'] });
  assert.deepEqual(parse("1.2.3.4\n5.6.7.8\n", null), { kind: "text", events: ["1.2.3.4", "5.6.7.8"] });
  // Truncated JSON is an error, never taken as text.
  rejects('{"a": [1, 2', null, /^invalid JSON: /);
  rejects('{"a":1}\n{"b":2}\n{"c"', null, /neither JSON .* nor NDJSON \(line 3: /);
});

test("empty bodies and invalid UTF-8 are refused", () => {
  rejects("", null, /empty/);
  rejects("  \n\t", "text/plain", /empty/);
  rejects(new Uint8Array([0x66, 0xff, 0x0a]), "text/plain", /UTF-8/);
});
