// Turning one answer (one page) into records, per `format`, a batch at a time:
// - json: the array at `records` (or the answer itself: an array's elements, or an object as
//   one record). Objects are posted as their exact source text. A string element without
//   line breaks is a text event (a list of indicators); any other element is posted as
//   {"value": <element>} so nothing is lost. An absent or null `records` is an answer
//   without records. Single-page answers are streamed
//   (jsonstream.ts), so a dump of any size is never held whole; a paginated answer is read
//   whole, because its next-page field may come after the records.
// - ndjson: each non-blank line a JSON object event; a line that is not one is posted as
//   {"message": <line>, "parse_error": <why>}, as the file input does.
// - text: each non-blank line a text event (a trailing \r removed).
// - csv: each row a JSON object {column: value} (csv.ts).
import { errorMessage } from "../../agent/errortext.ts";
import { JsonStreamError, jsonArrayBatches, parseJsonArray, type JsonElement } from "../common/jsonstream.ts";
import { CsvParser, columnNames, rowToJson } from "./csv.ts";
import { isObject, valueAt } from "./paths.ts";

export type Format = "json" | "ndjson" | "text" | "csv";

export interface PollRecord {
  kind: "json" | "text";
  /** The event: a single-line JSON object text, or a text line. */
  text: string;
  /** The parsed object of a json record (for dedup_key); undefined for text. */
  value: unknown;
}

export interface FormatOptions {
  format: Format;
  /** Object keys leading to the array of records in a JSON answer. */
  records?: readonly string[];
  /** Read a JSON answer whole and pick this dotted path's value (the next page) from it. */
  nextField?: string;
  /** Read a JSON answer whole (a paginated source): an absent or null `records` is an empty page. */
  whole: boolean;
  csvHeader: boolean;
  csvColumns?: readonly string[];
  csvDelimiter: string;
  batchSize: number;
}

/** The answer is not in the configured format. */
export class FormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FormatError";
  }
}

export class PageReader {
  /** The value at nextField, known once batches() has finished. */
  nextValue: unknown = undefined;

  constructor(private readonly body: ReadableStream<Uint8Array>, private readonly opts: FormatOptions) {}

  batches(): AsyncGenerator<PollRecord[], void, undefined> {
    switch (this.opts.format) {
      case "json":
        return this.opts.whole ? this.wholeJson() : this.streamedJson();
      case "ndjson":
        return this.ndjson();
      case "text":
        return this.text();
      case "csv":
        return this.csv();
    }
  }

  private async *streamedJson(): AsyncGenerator<PollRecord[], void, undefined> {
    const { records, batchSize } = this.opts;
    let body = this.body;
    if (!records || records.length === 0) {
      const peeked = await peekFirstByte(body);
      body = peeked.body;
      if (peeked.first !== 0x5b /* [ */) {
        yield [documentRecord(await readAll(body))];
        return;
      }
    }
    let yielded = false;
    try {
      for await (const batch of jsonArrayBatches(body, { path: records, batchSize })) {
        yielded = true;
        yield batch.map(fromElement);
      }
    } catch (err) {
      // An absent or null array is an answer with no records, as with pages.
      if (!yielded && err instanceof JsonStreamError && /^no array at |^expected an array at .*, found 'n'/.test(err.message)) return;
      throw err;
    }
  }

  private async *wholeJson(): AsyncGenerator<PollRecord[], void, undefined> {
    const { records, batchSize, nextField } = this.opts;
    const bytes = await readAll(this.body);
    const text = stripBom(utf8.decode(bytes));
    if (text.trim() === "") throw new FormatError("the answer is empty, expected JSON");
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (err) {
      throw new FormatError(`not valid JSON: ${errorMessage(err)}`);
    }
    if (nextField) this.nextValue = valueAt(doc, nextField);
    let elements: JsonElement[];
    if (records && records.length > 0) {
      let at: unknown = doc;
      for (const key of records) at = isObject(at) && Object.hasOwn(at, key) ? at[key] : undefined;
      if (at === undefined || at === null) return;
      if (!Array.isArray(at)) throw new FormatError(`${records.join(".")} is not an array in the JSON answer`);
      elements = parseJsonArray(bytes, { path: records });
    } else if (Array.isArray(doc)) {
      elements = parseJsonArray(bytes);
    } else {
      yield [objectRecord(text.trim(), doc)];
      return;
    }
    for (let i = 0; i < elements.length; i += batchSize) yield elements.slice(i, i + batchSize).map(fromElement);
  }

  private async *ndjson(): AsyncGenerator<PollRecord[], void, undefined> {
    let out: PollRecord[] = [];
    for await (const lines of lineBatches(this.body)) {
      for (const raw of lines) {
        const line = raw.trim();
        if (line === "") continue;
        out.push(ndjsonRecord(line));
      }
      if (out.length >= this.opts.batchSize) {
        yield out;
        out = [];
      }
    }
    if (out.length > 0) yield out;
  }

  private async *text(): AsyncGenerator<PollRecord[], void, undefined> {
    let out: PollRecord[] = [];
    for await (const lines of lineBatches(this.body)) {
      for (const line of lines) if (line.trim() !== "") out.push({ kind: "text", text: line, value: undefined });
      if (out.length >= this.opts.batchSize) {
        yield out;
        out = [];
      }
    }
    if (out.length > 0) yield out;
  }

  private async *csv(): AsyncGenerator<PollRecord[], void, undefined> {
    const parser = new CsvParser(this.opts.csvDelimiter);
    let columns: string[] | null = this.opts.csvColumns ? [...this.opts.csvColumns] : null;
    let headerPending = this.opts.csvHeader;
    const rows: string[][] = [];
    let out: PollRecord[] = [];
    const take = () => {
      for (const row of rows) {
        if (headerPending) {
          headerPending = false;
          // Named columns replace the answer's own header row.
          columns ??= columnNames(row);
          continue;
        }
        const text = rowToJson(columns ?? [], row);
        out.push({ kind: "json", text, value: JSON.parse(text) });
      }
      rows.length = 0;
    };
    for await (const chunk of textChunks(this.body)) {
      parser.push(chunk, rows);
      take();
      if (out.length >= this.opts.batchSize) {
        yield out;
        out = [];
      }
    }
    parser.end(rows);
    take();
    if (out.length > 0) yield out;
  }
}

const utf8 = new TextDecoder();

function fromElement(e: JsonElement): PollRecord {
  return fromValue(e.text, e.value);
}

/** A record from a JSON value and its single-line source text. */
function fromValue(text: string, value: unknown): PollRecord {
  if (isObject(value)) return { kind: "json", text, value };
  if (typeof value === "string" && value.trim() !== "" && !/[\r\n]/.test(value)) return { kind: "text", text: value, value: undefined };
  const wrapped = `{"value":${text}}`;
  return { kind: "json", text: wrapped, value: { value } };
}

/** A JSON answer that is not an array: the whole document is one record. */
function documentRecord(bytes: Uint8Array): PollRecord {
  const text = stripBom(utf8.decode(bytes)).trim();
  if (text === "") throw new FormatError("the answer is empty, expected JSON");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new FormatError(`not valid JSON: ${errorMessage(err)}`);
  }
  return objectRecord(text, value);
}

function objectRecord(text: string, value: unknown): PollRecord {
  if (!isObject(value)) throw new FormatError(`expected a JSON array or object, found ${JSON.stringify(text.slice(0, 20))}`);
  // The spool takes single-line events: a pretty-printed answer is re-serialised.
  return fromValue(/[\r\n]/.test(text) ? JSON.stringify(value) : text, value);
}

function ndjsonRecord(line: string): PollRecord {
  let value: unknown;
  let why: string;
  try {
    value = JSON.parse(line);
    if (isObject(value)) return { kind: "json", text: line, value };
    why = `not a JSON object (${Array.isArray(value) ? "an array" : value === null ? "null" : typeof value})`;
  } catch (err) {
    why = errorMessage(err);
  }
  const wrapped = { message: line, parse_error: why };
  return { kind: "json", text: JSON.stringify(wrapped), value: wrapped };
}

/** The first byte that is not whitespace or a UTF-8 BOM (-1 if there is none), and the body unconsumed. */
async function peekFirstByte(body: ReadableStream<Uint8Array>): Promise<{ first: number; body: ReadableStream<Uint8Array> }> {
  const reader = body.getReader();
  const held: Uint8Array[] = [];
  let first = -1;
  let offset = 0;
  let done = false;
  try {
    while (first === -1) {
      const r = await reader.read();
      if (r.done) {
        done = true;
        break;
      }
      held.push(r.value);
      for (let i = 0; i < r.value.byteLength; i++, offset++) {
        const c = r.value[i]!;
        const bom = offset < 3 && (c === 0xef || c === 0xbb || c === 0xbf);
        if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09 || bom) continue;
        first = c;
        break;
      }
    }
  } catch (err) {
    await reader.cancel(err).catch(() => {});
    throw err;
  }
  const rest = new ReadableStream<Uint8Array>(
    {
      start(c) {
        for (const h of held) c.enqueue(h);
        if (done) c.close();
      },
      async pull(c) {
        const r = await reader.read();
        if (r.done) c.close();
        else c.enqueue(r.value);
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
  return { first, body: rest };
}

async function readAll(body: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(body).arrayBuffer());
}

/** The body decoded as UTF-8, chunk by chunk (a sequence split across chunks is kept whole). */
async function* textChunks(body: ReadableStream<Uint8Array>): AsyncGenerator<string, void, undefined> {
  const decoder = new TextDecoder();
  const reader = body.getReader();
  let finished = false;
  let first = true;
  try {
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      let s = decoder.decode(r.value, { stream: true });
      if (first && s.length > 0) {
        first = false;
        s = stripBom(s);
      }
      if (s.length > 0) yield s;
    }
    finished = true;
    const tail = decoder.decode();
    if (tail.length > 0) yield tail;
  } finally {
    // A consumer that stops early (or an error) must not leave the download running.
    if (!finished) await reader.cancel().catch(() => {});
  }
}

/** Complete lines (without \n or a trailing \r), a chunk's worth at a time; the last line may lack a \n. */
async function* lineBatches(body: ReadableStream<Uint8Array>): AsyncGenerator<string[], void, undefined> {
  let carry = "";
  for await (const chunk of textChunks(body)) {
    const parts = (carry + chunk).split("\n");
    carry = parts.pop()!;
    if (parts.length > 0) yield parts.map(dropCr);
  }
  if (carry.length > 0) yield [dropCr(carry)];
}

function dropCr(line: string): string {
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}

function stripBom(s: string): string {
  return s.charCodeAt(0) === 0xfeff ? s.slice(1) : s;
}
