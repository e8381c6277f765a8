// Reading the elements of a big JSON array (PhishTank's online-valid.json: ~100k records, tens
// of MB; MISP's {"response":[...]}) from a byte stream, a batch at a time, without holding the
// document: memory is bounded by the largest element (or skipped member, with `path`) plus
// one batch.
//
//   for await (const batch of jsonArrayBatches(res.body, { path: ["response"] })) {
//     await ctx.emitJsonLines(batch.filter((e) => isObject(e.value)).map((e) => e.text));
//   }
//
// A small state machine walks the bytes of the Uint8Array (strings, escapes, bracket
// nesting; chunks may split anywhere, even inside a UTF-8 sequence) and only the finished
// elements are decoded, with one TextDecoder call per chunk. So a record's `text` is the
// exact source text (what the agent posts unchanged), except that an element spread over
// several lines is re-serialised onto one (the spool takes single-line JSON). About 50 MB
// of PhishTank-like records per 0.3 s under Bun without `parse`, 0.5 s with it (JSON.parse of
// each element dominates).
//
// `path` names object keys leading to the array (["response"] for {"response":[...]},
// ["response", "Attribute"] for {"response":{"Attribute":[...]}}); the first occurrence of
// each key is followed, other members are skipped, and a document without an array at the
// path is an error. Without `path` the document itself must be an array.
import { errorMessage } from "../../agent/errortext.ts";

export interface JsonElement {
  /** The element's JSON text: the source slice, on one line (see the top comment). */
  text: string;
  /** The parsed element (undefined when `parse: false`). */
  value: unknown;
  /** Byte offset of the element in the stream. */
  offset: number;
}

export interface JsonArrayOptions {
  /** Object keys leading to the array; default: the document is the array. */
  path?: readonly string[];
  /** Elements per batch yielded by jsonArrayBatches. Default 1000. */
  batchSize?: number;
  /**
   * JSON.parse each element (default true). That is the full syntax check; without it only
   * the structure (brackets, strings, commas between elements) is checked.
   */
  parse?: boolean;
  /** An element (or skipped member) larger than this is an error. Default 256 MiB. */
  maxElementBytes?: number;
}

/** The document is not the JSON expected; `offset` is the byte where that became clear. */
export class JsonStreamError extends Error {
  constructor(message: string, readonly offset: number) {
    super(message);
    this.name = "JsonStreamError";
  }
}

/** Yields the array's elements in batches of `batchSize` (the last may be smaller). */
export async function* jsonArrayBatches(
  stream: ReadableStream<Uint8Array>,
  opts: JsonArrayOptions = {},
): AsyncGenerator<JsonElement[], void, undefined> {
  const batchSize = Math.max(1, opts.batchSize ?? 1000);
  const scanner = new JsonArrayScanner(opts);
  const reader = stream.getReader();
  let finished = false;
  let out: JsonElement[] = [];
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      scanner.push(value, out);
      while (out.length >= batchSize) {
        const batch = out.length === batchSize ? out : out.slice(0, batchSize);
        out = out.length === batchSize ? [] : out.slice(batchSize);
        yield batch;
      }
    }
    finished = true;
    scanner.end();
    if (out.length > 0) yield out;
  } finally {
    // A consumer that stops early (or an error) must not leave the download running.
    if (!finished) await reader.cancel().catch(() => {});
    else reader.releaseLock();
  }
}

/** Every element of a complete document in memory (tests, small files). */
export function parseJsonArray(bytes: Uint8Array, opts: JsonArrayOptions = {}): JsonElement[] {
  const out: JsonElement[] = [];
  const s = new JsonArrayScanner(opts);
  s.push(bytes, out);
  s.end();
  return out;
}

// Where the scanner is between values.
const enum At {
  /** Before the document's `[` (or `{` with a path). */
  Start,
  /** In the array, before an element or `]`. */
  FirstElement,
  /** In the array, after a comma: an element must follow. */
  NextElement,
  /** In the array, after an element: `,` or `]`. */
  AfterElement,
  /** Reading an element (or a skipped member value, or a key). */
  InValue,
  /** In an object on the path, after `{`: a key or `}`. */
  FirstKey,
  /** After a comma in an object on the path: a key. */
  NextKey,
  /** After a key: `:`. */
  Colon,
  /** After `:`: the member's value. */
  MemberValue,
  /** After a member's value: `,` or `}`. */
  AfterMember,
  /** After the document: only whitespace. */
  End,
}

const enum Reading {
  Element,
  SkippedValue,
  Key,
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const COMMA = 0x2c;
const COLON = 0x3a;
const LF = 0x0a;
const CR = 0x0d;

function isSpace(c: number): boolean {
  return c === 0x20 || c === LF || c === CR || c === 0x09;
}

function isBareStart(c: number): boolean {
  // numbers, true, false, null
  return (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x74 || c === 0x66 || c === 0x6e;
}

function show(c: number): string {
  return c >= 0x20 && c < 0x7f ? `'${String.fromCharCode(c)}'` : `byte 0x${c.toString(16).padStart(2, "0")}`;
}

const utf8 = new TextDecoder();
const INITIAL_BUFFER = 64 * 1024;
const SHRINK_ABOVE = 1024 * 1024;

/**
 * The push-based core: push() chunks (any split, even inside a UTF-8 sequence), then end().
 * Finished elements are appended to `out`.
 */
export class JsonArrayScanner {
  private readonly path: readonly string[];
  private readonly parse: boolean;
  private readonly maxElementBytes: number;

  private buf = new Uint8Array(INITIAL_BUFFER);
  private len = 0;
  /** Stream offset of buf[0]. */
  private base = 0;
  /** Next byte to look at. */
  private pos = 0;

  private at = At.Start;
  private reading = Reading.Element;
  /** Where the value being read starts (buf index). */
  private valueStart = 0;
  /** Openers of the containers the value is in. */
  private stack: number[] = [];
  private inString = false;
  /** The chunk ended right after a backslash in a string. */
  private escaped = false;
  /** Reading a number or literal (ends at a delimiter). */
  private bare = false;
  /** The value held a line break outside strings. */
  private multiline = false;

  /** Path objects entered so far (0 = the root object when there is a path). */
  private level = -1;
  private key = "";
  private found = false;
  private sawBom = false;

  /** Elements finished in the current chunk, not yet decoded: buf ranges and line-break flags. */
  private readonly doneStart: number[] = [];
  private readonly doneEnd: number[] = [];
  private readonly doneMultiline: boolean[] = [];

  constructor(opts: JsonArrayOptions = {}) {
    this.path = opts.path ?? [];
    this.parse = opts.parse ?? true;
    this.maxElementBytes = opts.maxElementBytes ?? 256 * 1024 * 1024;
  }

  push(chunk: Uint8Array, out: JsonElement[]): void {
    if (chunk.byteLength === 0) return;
    this.append(chunk);
    this.run(out);
  }

  /** The document is complete: throws if it ended early (every element was already given by push). */
  end(): void {
    if (this.at !== At.End) {
      const where = this.at === At.InValue ? ` (in a value starting at offset ${this.base + this.valueStart})` : "";
      if (this.base + this.len === 0) throw new JsonStreamError("the document is empty", 0);
      throw new JsonStreamError(`the JSON document ends early at offset ${this.base + this.len}${where}`, this.base + this.len);
    }
    if (this.path.length > 0 && !this.found) {
      throw new JsonStreamError(`no array at ${this.path.join(".")} in the JSON document`, this.base + this.len);
    }
  }

  private fail(message: string, index: number): never {
    throw new JsonStreamError(`${message} at offset ${this.base + index}`, this.base + index);
  }

  /** Drop what is no longer needed, then add the chunk. */
  private append(chunk: Uint8Array): void {
    const keep = this.at === At.InValue ? this.valueStart : this.pos;
    const live = this.len - keep;
    if (keep > 0) {
      if (live > 0) this.buf.copyWithin(0, keep, this.len);
      this.base += keep;
      this.len = live;
      this.pos -= keep;
      this.valueStart -= keep;
    }
    const need = this.len + chunk.byteLength;
    const cap = this.buf.byteLength;
    // Grow for a big element; shrink again after one, so a single huge record does not pin its size.
    if (need > cap || (cap > SHRINK_ABOVE && need * 4 < cap)) {
      const next = new Uint8Array(need > cap ? Math.max(need, cap * 2) : Math.max(need * 2, INITIAL_BUFFER));
      next.set(this.buf.subarray(0, this.len));
      this.buf = next;
    }
    this.buf.set(chunk, this.len);
    this.len = need;
  }

  private run(out: JsonElement[]): void {
    const b = this.buf.subarray(0, this.len);
    this.scan(b, this.len);
    if (this.doneStart.length > 0) this.decodeDone(b, out);
  }

  private scan(b: Uint8Array, len: number): void {
    if (this.base === 0 && this.pos === 0 && !this.sawBom) {
      if (len < 3 && b[0] === 0xef) return; // wait for the whole BOM
      this.sawBom = true;
      if (b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf) this.pos = 3;
    }
    while (this.pos < len) {
      if (this.at === At.InValue) {
        if (!this.scanValue(b, len)) {
          if (len - this.valueStart > this.maxElementBytes) {
            this.fail(`a value larger than ${this.maxElementBytes} bytes (starting at offset ${this.base + this.valueStart})`, len);
          }
          return;
        }
        this.valueDone(b);
        continue;
      }
      const i = this.pos;
      const c = b[i]!;
      if (isSpace(c)) {
        this.pos++;
        continue;
      }
      switch (this.at) {
        case At.Start:
          if (this.path.length === 0) {
            if (c !== OPEN_BRACKET) this.fail(`expected a JSON array ('['), found ${show(c)}`, i);
            this.at = At.FirstElement;
          } else {
            if (c !== OPEN_BRACE) this.fail(`expected a JSON object ('{') holding ${this.path.join(".")}, found ${show(c)}`, i);
            this.level = 0;
            this.at = At.FirstKey;
          }
          this.pos++;
          break;
        case At.FirstElement:
        case At.NextElement:
          if (c === CLOSE_BRACKET && this.at === At.FirstElement) {
            this.pos++;
            this.arrayClosed();
          } else {
            this.startValue(b, i, Reading.Element);
          }
          break;
        case At.AfterElement:
          this.pos++;
          if (c === COMMA) this.at = At.NextElement;
          else if (c === CLOSE_BRACKET) this.arrayClosed();
          else this.fail(`expected ',' or ']' after an array element, found ${show(c)}`, i);
          break;
        case At.FirstKey:
        case At.NextKey:
          if (c === CLOSE_BRACE && this.at === At.FirstKey) {
            this.pos++;
            this.objectClosed();
          } else if (c === QUOTE) {
            this.startValue(b, i, Reading.Key);
          } else {
            this.fail(`expected an object key, found ${show(c)}`, i);
          }
          break;
        case At.Colon:
          if (c !== COLON) this.fail(`expected ':' after an object key, found ${show(c)}`, i);
          this.pos++;
          this.at = At.MemberValue;
          break;
        case At.MemberValue:
          this.memberValue(b, i, c);
          break;
        case At.AfterMember:
          this.pos++;
          if (c === COMMA) this.at = At.NextKey;
          else if (c === CLOSE_BRACE) this.objectClosed();
          else this.fail(`expected ',' or '}' after an object member, found ${show(c)}`, i);
          break;
        case At.End:
          this.fail(`unexpected ${show(c)} after the end of the JSON document`, i);
      }
    }
  }

  private memberValue(b: Uint8Array, i: number, c: number): void {
    const onPath = !this.found && this.key === this.path[this.level];
    if (!onPath) return this.startValue(b, i, Reading.SkippedValue);
    const where = this.path.slice(0, this.level + 1).join(".");
    if (this.level === this.path.length - 1) {
      if (c !== OPEN_BRACKET) this.fail(`expected an array at ${where}, found ${show(c)}`, i);
      this.found = true;
      this.at = At.FirstElement;
    } else {
      if (c !== OPEN_BRACE) this.fail(`expected an object at ${where}, found ${show(c)}`, i);
      this.level++;
      this.at = At.FirstKey;
    }
    this.pos++;
  }

  private arrayClosed(): void {
    // The target array is a member value of the innermost path object.
    this.at = this.path.length === 0 ? At.End : At.AfterMember;
  }

  private objectClosed(): void {
    this.level--;
    this.at = this.level < 0 ? At.End : At.AfterMember;
  }

  private startValue(b: Uint8Array, i: number, reading: Reading): void {
    const c = b[i]!;
    this.reading = reading;
    this.valueStart = i;
    this.multiline = false;
    this.stack.length = 0;
    this.bare = false;
    this.inString = false;
    this.escaped = false;
    if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      this.stack.push(c);
      this.pos = i + 1;
    } else if (c === QUOTE) {
      this.inString = true;
      this.pos = i + 1;
    } else if (isBareStart(c)) {
      this.bare = true;
      this.pos = i;
    } else {
      this.fail(`expected a JSON value, found ${show(c)}`, i);
    }
    this.at = At.InValue;
  }

  /** Advance through the current value; true once it is complete (pos is just past it). */
  private scanValue(b: Uint8Array, len: number): boolean {
    let i = this.pos;
    if (this.bare) {
      for (; i < len; i++) {
        const c = b[i]!;
        if (c === COMMA || c === CLOSE_BRACKET || c === CLOSE_BRACE || isSpace(c)) {
          this.pos = i;
          return true;
        }
        if (c === QUOTE || c === OPEN_BRACE || c === OPEN_BRACKET || c === COLON) this.fail(`unexpected ${show(c)} in a number or literal`, i);
      }
      this.pos = len;
      return false;
    }
    // A plain byte loop: most strings in records are short, where a native indexOf per
    // string costs more in call overhead than it saves.
    const stack = this.stack;
    let inString = this.inString;
    for (;;) {
      if (inString) {
        if (this.escaped) {
          this.escaped = false;
          i++;
        }
        while (i < len) {
          const c = b[i]!;
          if (c === QUOTE) break;
          i += c === BACKSLASH ? 2 : 1;
        }
        if (i >= len) {
          // i === len + 1: the chunk ended right after a backslash.
          this.escaped = i > len;
          this.inString = true;
          this.pos = len;
          return false;
        }
        inString = false;
        i++;
        if (stack.length === 0) break;
      }
      for (; i < len; i++) {
        const c = b[i]!;
        if (c === QUOTE) break;
        if (c === OPEN_BRACE || c === OPEN_BRACKET) {
          stack.push(c);
        } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
          const open = stack.pop();
          if (open !== (c === CLOSE_BRACE ? OPEN_BRACE : OPEN_BRACKET)) this.fail(`mismatched ${show(c)}`, i);
          if (stack.length === 0) break;
        } else if (c === LF || c === CR) {
          this.multiline = true;
        }
      }
      if (i >= len) {
        this.inString = false;
        this.pos = len;
        return false;
      }
      if (stack.length === 0) {
        i++;
        break;
      }
      inString = true;
      i++;
    }
    this.inString = false;
    this.pos = i;
    return true;
  }

  private valueDone(b: Uint8Array): void {
    const start = this.valueStart;
    const end = this.pos;
    switch (this.reading) {
      case Reading.Element:
        this.doneStart.push(start);
        this.doneEnd.push(end);
        this.doneMultiline.push(this.multiline);
        this.at = At.AfterElement;
        break;
      case Reading.SkippedValue:
        this.at = At.AfterMember;
        break;
      case Reading.Key: {
        const raw = utf8.decode(b.subarray(start, end));
        try {
          this.key = JSON.parse(raw) as string;
        } catch {
          this.fail(`bad object key ${raw.slice(0, 80)}`, start);
        }
        this.at = At.Colon;
        break;
      }
    }
  }

  /**
   * Turn the elements finished in this chunk into texts. One TextDecoder call for all of them
   * (per-call overhead dominates for small records); when the span is pure ASCII, byte offsets
   * are string offsets and each text is a cheap substring.
   */
  private decodeDone(b: Uint8Array, out: JsonElement[]): void {
    const starts = this.doneStart;
    const ends = this.doneEnd;
    const multi = this.doneMultiline;
    const n = starts.length;
    const first = starts[0]!;
    const span = utf8.decode(b.subarray(first, ends[n - 1]!));
    const ascii = span.length === ends[n - 1]! - first;
    for (let k = 0; k < n; k++) {
      const text = ascii ? span.slice(starts[k]! - first, ends[k]! - first) : utf8.decode(b.subarray(starts[k]!, ends[k]!));
      out.push(this.element(text, this.base + starts[k]!, multi[k]!));
    }
    starts.length = 0;
    ends.length = 0;
    multi.length = 0;
  }

  private element(text: string, offset: number, multiline: boolean): JsonElement {
    let value: unknown;
    if (this.parse || multiline) {
      try {
        value = JSON.parse(text);
      } catch (err) {
        const why = errorMessage(err);
        throw new JsonStreamError(`the array element at offset ${offset} is not valid JSON: ${why}`, offset);
      }
      if (multiline) text = JSON.stringify(value);
      if (!this.parse) value = undefined;
    }
    return { text, value, offset };
  }
}
