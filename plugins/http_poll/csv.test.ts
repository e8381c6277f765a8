import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { CsvError, CsvParser, columnNames, parseCsv, rowToJson } from "./csv.ts";

/** The simplest correct writer: quote a field when it needs it, double its quotes. */
function serialize(rows: string[][], eol: string, delimiter = ","): string {
  const field = (f: string, onlyField: boolean) =>
    f.includes(delimiter) || f.includes('"') || f.includes("\r") || f.includes("\n") || (onlyField && f === "")
      ? `"${f.replaceAll('"', '""')}"`
      : f;
  return rows.map((r) => r.map((f) => field(f, r.length === 1)).join(delimiter)).join(eol);
}

/** Parse `text` fed in pieces cut at `cuts` (positions, any order). */
function parseInChunks(text: string, cuts: number[], delimiter = ","): string[][] {
  const at = [...new Set(cuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b);
  const out: string[][] = [];
  const p = new CsvParser(delimiter);
  let from = 0;
  for (const c of [...at, text.length]) {
    p.push(text.slice(from, c), out);
    from = c;
  }
  p.end(out);
  return out;
}

// Fields drawn mostly from the characters that matter to CSV, so quotes, delimiters and line
// breaks inside fields come up often.
const fieldArb = fc.string({ unit: fc.constantFrom("a", "b", " ", ",", '"', "\r", "\n", "\t", "é", "😀"), maxLength: 8 });
const rowsArb = fc.array(fc.array(fieldArb, { minLength: 1, maxLength: 5 }), { minLength: 0, maxLength: 8 });

test("property: parse(serialize(rows)) gives the rows back, for every line ending and chunking", () => {
  fc.assert(
    fc.property(rowsArb, fc.constantFrom("\r\n", "\n", "\r"), fc.boolean(), fc.array(fc.nat(), { maxLength: 6 }), (rows, eol, trailing, cuts) => {
      const text = serialize(rows, eol) + (trailing && rows.length > 0 ? eol : "");
      assert.deepEqual(parseCsv(text), rows);
      assert.deepEqual(parseInChunks(text, cuts), rows);
    }),
    { numRuns: 2000 },
  );
});

test("property: another delimiter (tab) round-trips too", () => {
  fc.assert(
    fc.property(rowsArb, fc.array(fc.nat(), { maxLength: 4 }), (rows, cuts) => {
      const text = serialize(rows, "\r\n", "\t");
      assert.deepEqual(parseInChunks(text, cuts, "\t"), rows);
    }),
    { numRuns: 500 },
  );
});

test("RFC 4180 examples: quoted fields, escaped quotes, CRLF, line breaks inside quotes", () => {
  assert.deepEqual(parseCsv('aaa,bbb,ccc\r\nzzz,yyy,xxx\r\n'), [["aaa", "bbb", "ccc"], ["zzz", "yyy", "xxx"]]);
  assert.deepEqual(parseCsv('"aaa","b\r\nbb","ccc"\r\nzzz,yyy,xxx'), [["aaa", "b\r\nbb", "ccc"], ["zzz", "yyy", "xxx"]]);
  assert.deepEqual(parseCsv('"aaa","b""bb","ccc"'), [["aaa", 'b"bb', "ccc"]]);
  assert.deepEqual(parseCsv('a,,\n,b,'), [["a", "", ""], ["", "b", ""]]);
});

test("blank lines are skipped, a quoted empty line is a row; a BOM is dropped", () => {
  assert.deepEqual(parseCsv("\ufeffh1,h2\n\n1,2\r\n\r\n\n3,4\n"), [["h1", "h2"], ["1", "2"], ["3", "4"]]);
  assert.deepEqual(parseCsv('a\n""\nb'), [["a"], [""], ["b"]]);
  assert.deepEqual(parseCsv(""), []);
});

test("lenient: a stray quote inside an unquoted field is kept, text after a closing quote is appended", () => {
  assert.deepEqual(parseCsv('5" screen,x'), [['5" screen', "x"]]);
  assert.deepEqual(parseCsv('"ab"c,d'), [["abc", "d"]]);
});

test("a quoted field left open at the end is an error naming its line", () => {
  assert.throws(() => parseCsv('a,b\n1,"never\nclosed'), (err: unknown) => err instanceof CsvError && /line 2/.test(err.message));
  assert.throws(() => new CsvParser('"'), CsvError);
});

test("column names: empty ones numbered, repeated ones suffixed", () => {
  assert.deepEqual(columnNames(["url", "", "url", "url"]), ["url", "column2", "url_2", "url_3"]);
});

test("rows become JSON objects: missing columns null, extra fields in _extra, __proto__ is a plain key", () => {
  assert.equal(rowToJson(["a", "b"], ["1", "2"]), '{"a":"1","b":"2"}');
  assert.equal(rowToJson(["a", "b"], ["1"]), '{"a":"1","b":null}');
  assert.equal(rowToJson(["a"], ["1", "2", "3"]), '{"a":"1","_extra":["2","3"]}');
  assert.equal(rowToJson(["_extra"], ["1", "2"]), '{"_extra":"1","__extra":["2"]}');
  assert.equal(rowToJson(["__proto__"], ["x"]), '{"__proto__":"x"}');
});
