// Parsing a body of threat data submitted by hand (control server, `post`): a JSON object, a
// JSON array, NDJSON, plain text lines, or a form (multipart/form-data, urlencoded) whose file
// parts and `data` fields are such bodies. The whole body is parsed before anything is handed
// on, so a bad body is refused as a whole and nothing is partially taken.
import { InputError } from "../../agent/plugin.ts";
import type { EventKind } from "../../agent/plugin.ts";
import { errorFirstLine } from "../../agent/errortext.ts";

/** The events of a submission, ready for the spool: JSON objects serialised on one line each, or text lines. */
export interface Submission {
  kind: EventKind;
  events: string[];
}

/**
 * Deepest nesting of arrays and objects a JSON body may have. Checked before parsing: the
 * runtimes' parsers and serialisers recurse and would exhaust the stack on a deeper one.
 */
export const MAX_JSON_DEPTH = 1000;

type BodyFormat = "json" | "ndjson" | "text" | "sniff";
type FormFormat = BodyFormat | "multipart" | "urlencoded";

const NDJSON_TYPES = new Set([
  "application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonl",
  "application/jsonlines", "application/x-jsonlines", "application/json-seq",
]);

function mimeOf(contentType: string): string {
  return contentType.split(";")[0]!.trim().toLowerCase();
}

function formatOf(contentType: string | null): FormFormat {
  if (!contentType) return "sniff";
  const mime = mimeOf(contentType);
  if (NDJSON_TYPES.has(mime)) return "ndjson";
  if (mime === "application/json" || mime === "text/json" || mime.endsWith("+json")) return "json";
  if (mime === "text/plain") return "text";
  if (mime === "multipart/form-data") return "multipart";
  if (mime === "application/x-www-form-urlencoded") return "urlencoded";
  return "sniff";
}

const utf8 = new TextDecoder("utf-8", { fatal: true });
const lenientUtf8 = new TextDecoder("utf-8");
const encoder = new TextEncoder();

function decode(body: Uint8Array): string {
  try {
    return utf8.decode(body);
  } catch {
    throw new InputError("the body is not valid UTF-8");
  }
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return `a ${typeof value}`;
}

function isObject(value: unknown): value is object {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Lines end at "\n", "\r\n" or a lone "\r", in text and NDJSON alike: the API Module reads
 * an upload's lines with universal newlines, so a "\r" kept inside an event would split it
 * there; a JSON string holding one is refused as a line break for the same reason.
 */
const LINE_END = /\r\n|\r|\n/;

class TooDeepError extends Error {
  constructor(readonly line: number) {
    super(`nests deeper than ${MAX_JSON_DEPTH} levels of arrays and objects (the limit)`);
  }
}

/** Throws TooDeepError when `text` nests arrays and objects deeper than MAX_JSON_DEPTH. */
function checkDepth(text: string): void {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // Skip the string: brackets inside it do not nest.
      for (i++; i < text.length; i++) {
        const s = text.charCodeAt(i);
        if (s === 0x5c) i++;
        else if (s === 0x22) break;
      }
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > MAX_JSON_DEPTH) throw new TooDeepError(text.slice(0, i).split(LINE_END).length);
    } else if ((c === 0x5d || c === 0x7d) && depth > 0) {
      depth--;
    }
  }
}

/** JSON.parse behind the depth limit; throws TooDeepError or the parser's SyntaxError. */
function jsonValue(text: string): unknown {
  checkDepth(text);
  return JSON.parse(text);
}

/** A JSON document: one object, or an array of objects or of strings (text events). */
function fromJsonValue(value: unknown): Submission {
  if (isObject(value)) return { kind: "json", events: [JSON.stringify(value)] };
  if (!Array.isArray(value)) throw new InputError(`expected a JSON object or array, got ${describe(value)}`);
  if (value.length === 0) throw new InputError("the JSON array is empty");
  if (typeof value[0] === "string") {
    const events: string[] = [];
    value.forEach((v, i) => {
      if (typeof v !== "string") throw new InputError(`element ${i}: expected a string like element 0, got ${describe(v)}`);
      // A text event is one line: a newline inside would split it into two events downstream.
      if (/[\r\n]/.test(v)) throw new InputError(`element ${i}: a text event cannot contain a line break`);
      if (v !== "") events.push(v);
    });
    if (events.length === 0) throw new InputError("the JSON array holds only empty strings");
    return { kind: "text", events };
  }
  return {
    kind: "json",
    events: value.map((v, i) => {
      if (!isObject(v)) throw new InputError(`element ${i}: expected a JSON object like element 0, got ${describe(v)}`);
      return JSON.stringify(v);
    }),
  };
}

function jsonError(err: unknown): InputError {
  if (err instanceof TooDeepError) return new InputError(`the JSON ${err.message}, at line ${err.line}`);
  return new InputError(`invalid JSON: ${errorFirstLine(err)}`);
}

function parseJson(text: string): Submission {
  let value: unknown;
  try {
    value = jsonValue(text);
  } catch (err) {
    throw jsonError(err);
  }
  return fromJsonValue(value);
}

function parseNdjson(text: string): Submission {
  const events: string[] = [];
  const lines = text.split(LINE_END);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "") continue;
    let value: unknown;
    try {
      value = jsonValue(line);
    } catch (err) {
      throw new InputError(`line ${i + 1}: ${errorFirstLine(err)}`);
    }
    if (!isObject(value)) throw new InputError(`line ${i + 1}: expected a JSON object, got ${describe(value)}`);
    // The line is kept as sent: it is already one line of valid JSON.
    events.push(line);
  }
  if (events.length === 0) throw new InputError("the body holds no events");
  return { kind: "json", events };
}

function parseText(text: string): Submission {
  const events: string[] = [];
  for (const line of text.split(LINE_END)) {
    if (line.trim() !== "") events.push(line);
  }
  if (events.length === 0) throw new InputError("the body holds no events");
  return { kind: "text", events };
}

/** JSON when the body starts like JSON: a whole document, else NDJSON; never text for broken JSON. */
function parseSniffed(text: string): Submission {
  const first = /\S/.exec(text)?.[0];
  if (first !== "{" && first !== "[") return parseText(text);
  let value: unknown;
  try {
    value = jsonValue(text);
  } catch (jsonErr) {
    // Too deep as a whole means some line is too deep or unbalanced: not NDJSON either.
    if (jsonErr instanceof TooDeepError) throw jsonError(jsonErr);
    try {
      return parseNdjson(text);
    } catch (ndErr) {
      // One line: the JSON error says it best; several: it may be NDJSON with a bad line.
      if (text.trim().includes("\n")) {
        throw new InputError(`neither JSON (${errorFirstLine(jsonErr)}) nor NDJSON (${errorFirstLine(ndErr)})`);
      }
      throw jsonError(jsonErr);
    }
  }
  return fromJsonValue(value);
}

function parseOne(body: Uint8Array, format: BodyFormat): Submission {
  const text = decode(body);
  if (text.trim() === "") throw new InputError("the body is empty");
  switch (format) {
    case "json": return parseJson(text);
    case "ndjson": return parseNdjson(text);
    case "text": return parseText(text);
    case "sniff": return parseSniffed(text);
  }
}

// ---- forms ----

/** One body inside a form: a file part or a `data` field. */
interface FormBody {
  /** How errors name it: `part 2 ("file", iocs.txt)`. */
  label: string;
  body: Uint8Array;
  format: BodyFormat;
}

interface FormContent {
  bodies: FormBody[];
  /** Names of the fields that were not used (neither a file nor `data`). */
  ignored: string[];
  /** Parts that were there but could not count (e.g. an empty file input). */
  empty: string[];
}

/** A part's own Content-Type, when it says how to read the part; a form inside a form is sniffed. */
function partFormat(contentType: string | null): BodyFormat {
  const f = formatOf(contentType);
  return f === "multipart" || f === "urlencoded" ? "sniff" : f;
}

function isBlank(bytes: Uint8Array): boolean {
  for (const b of bytes) if (b !== 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d) return false;
  return true;
}

function startsWith(hay: Uint8Array, needle: Uint8Array, at: number): boolean {
  if (at + needle.length > hay.length) return false;
  for (let i = 0; i < needle.length; i++) if (hay[at + i] !== needle[i]) return false;
  return true;
}

function indexOfBytes(hay: Uint8Array, needle: Uint8Array, from: number): number {
  const last = hay.length - needle.length;
  for (let i = hay.indexOf(needle[0]!, from); i !== -1 && i <= last; i = hay.indexOf(needle[0]!, i + 1)) {
    if (startsWith(hay, needle, i)) return i;
  }
  return -1;
}

/** The parameters after the first ";" of a header value like `form-data; name="file"; filename="a b.txt"` (names lower-cased). */
function headerParams(value: string): Map<string, string> {
  const params = new Map<string, string>();
  const re = /;\s*([^\s=;]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))/g;
  for (let m = re.exec(value); m; m = re.exec(value)) {
    const v = m[2] !== undefined ? m[2].replace(/\\(.)/g, "$1") : m[3]!.trim();
    params.set(m[1]!.toLowerCase(), v);
  }
  return params;
}

function boundaryOf(contentType: string): string {
  const boundary = headerParams(contentType).get("boundary");
  if (boundary === undefined) throw new InputError("the multipart/form-data Content-Type has no boundary parameter");
  // RFC 2046: 1 to 70 characters, none of them outside the allowed set, not ending in a space.
  if (!/^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$/.test(boundary)) {
    throw new InputError(`the multipart/form-data boundary ${JSON.stringify(boundary)} is not a valid boundary (1 to 70 letters, digits or '()+_,-./:=? )`);
  }
  return boundary;
}

const CRLF = encoder.encode("\r\n");
const HEADERS_END = encoder.encode("\r\n\r\n");

/**
 * Splits a multipart/form-data body (RFC 7578) into the bodies it carries: every file part
 * (a part with a filename) and every text field named `data`. Strict about the framing
 * (CRLF line ends, a closing boundary) so a cut-off body is refused rather than half taken.
 */
function multipartBodies(body: Uint8Array, contentType: string): FormContent {
  const boundary = boundaryOf(contentType);
  const dashBoundary = encoder.encode(`--${boundary}`);
  const delimiter = encoder.encode(`\r\n--${boundary}`);
  const content: FormContent = { bodies: [], ignored: [], empty: [] };

  // The first boundary opens the body, or follows a preamble (which is ignored).
  let pos: number;
  if (startsWith(body, dashBoundary, 0)) pos = dashBoundary.length;
  else {
    const at = indexOfBytes(body, delimiter, 0);
    if (at === -1) throw new InputError(`the multipart body holds no boundary line "--${boundary}" (the boundary its Content-Type names)`);
    pos = at + delimiter.length;
  }

  for (let n = 1; ; n++) {
    if (body[pos] === 0x2d && body[pos + 1] === 0x2d) break; // the closing boundary; an epilogue after it is ignored
    while (body[pos] === 0x20 || body[pos] === 0x09) pos++;
    if (!startsWith(body, CRLF, pos)) {
      throw new InputError(pos >= body.length
        ? `the multipart body ends before its closing boundary "--${boundary}--"`
        : `part ${n}: its boundary line does not end in CRLF`);
    }
    pos += 2;
    let headerText = "";
    let start: number;
    if (startsWith(body, CRLF, pos)) start = pos + 2;
    else {
      const end = indexOfBytes(body, HEADERS_END, pos);
      if (end === -1) throw new InputError(`part ${n}: its headers do not end in an empty line`);
      headerText = lenientUtf8.decode(body.subarray(pos, end));
      start = end + 4;
    }
    const next = indexOfBytes(body, delimiter, start);
    if (next === -1) throw new InputError(`part ${n}: the multipart body ends before its closing boundary "--${boundary}--"`);
    addPart(content, n, headerText, body.subarray(start, next));
    pos = next + delimiter.length;
  }
  if (content.bodies.length + content.ignored.length + content.empty.length === 0) {
    throw new InputError("the multipart body has no parts");
  }
  return content;
}

function addPart(content: FormContent, n: number, headerText: string, data: Uint8Array): void {
  const headers = new Map<string, string>();
  for (const line of headerText.split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  const disposition = headers.get("content-disposition");
  if (!disposition || !/^form-data\s*(;|$)/i.test(disposition)) {
    throw new InputError(`part ${n}: no "Content-Disposition: form-data" header`);
  }
  const params = headerParams(disposition);
  const name = params.get("name") ?? "";
  const filename = params.get("filename");
  const label = filename !== undefined ? `part ${n} (${JSON.stringify(name)}, ${filename || "no file name"})` : `part ${n} (${JSON.stringify(name)} field)`;
  if (filename === undefined && name !== "data") {
    content.ignored.push(name);
    return;
  }
  // An empty file input of a browser form comes as a part with no file name and no content.
  if (isBlank(data)) {
    content.empty.push(label);
    return;
  }
  content.bodies.push({ label, body: data, format: partFormat(headers.get("content-type") ?? null) });
}

function hexValue(b: number): number {
  if (b >= 0x30 && b <= 0x39) return b - 0x30;
  if (b >= 0x41 && b <= 0x46) return b - 0x37;
  if (b >= 0x61 && b <= 0x66) return b - 0x57;
  return -1;
}

/** Decodes one name or value of an urlencoded form ("+" a space, "%XX" a byte) to its bytes. */
function formDecode(raw: Uint8Array, where: string): Uint8Array {
  const out = new Uint8Array(raw.length);
  let n = 0;
  for (let i = 0; i < raw.length; i++) {
    const b = raw[i]!;
    if (b === 0x2b) out[n++] = 0x20;
    else if (b === 0x25) {
      const hi = hexValue(raw[i + 1] ?? -1), lo = hexValue(raw[i + 2] ?? -1);
      if (hi < 0 || lo < 0) {
        throw new InputError(`${where}: a "%" not followed by two hex digits ("${lenientUtf8.decode(raw.subarray(i, i + 3))}")`);
      }
      out[n++] = hi * 16 + lo;
      i += 2;
    } else out[n++] = b;
  }
  return out.subarray(0, n);
}

/** The `data` fields of an application/x-www-form-urlencoded body (what `curl --data-urlencode data@FILE` sends). */
function urlencodedBodies(body: Uint8Array): FormContent {
  const content: FormContent = { bodies: [], ignored: [], empty: [] };
  let n = 0;
  for (let start = 0; start <= body.length; ) {
    let end = body.indexOf(0x26, start);
    if (end === -1) end = body.length;
    const pair = body.subarray(start, end);
    start = end + 1;
    if (pair.length === 0) continue;
    n++;
    const eq = pair.indexOf(0x3d);
    const name = lenientUtf8.decode(formDecode(eq === -1 ? pair : pair.subarray(0, eq), `field ${n}`));
    if (name !== "data") {
      content.ignored.push(name);
      continue;
    }
    const label = `field ${n} ("data")`;
    const value = formDecode(eq === -1 ? new Uint8Array(0) : pair.subarray(eq + 1), label);
    if (isBlank(value)) content.empty.push(label);
    else content.bodies.push({ label, body: value, format: "sniff" });
  }
  if (content.bodies.length === 0 && content.empty.length === 0) {
    // Usually `curl -d @FILE`, which sends this type (and drops the file's line breaks).
    throw new InputError(
      `an application/x-www-form-urlencoded body is read only from its "data" field, and this one has none` +
        `${fieldList(content.ignored)}; send the data itself as text/plain, application/json or application/x-ndjson ` +
        `(curl --data-binary @FILE -H "Content-Type: text/plain"), as a "data" field, or as multipart/form-data (curl -F file=@FILE)`,
      415,
    );
  }
  return content;
}

function fieldList(names: string[]): string {
  if (names.length === 0) return "";
  const shown = names.slice(0, 5).map((n) => JSON.stringify(n)).join(", ");
  return ` (fields: ${shown}${names.length > 5 ? `, and ${names.length - 5} more` : ""})`;
}

/** One submission from a form's bodies: all parsed before anything is taken, all of one kind. */
function fromForm(content: FormContent, what: string): Submission {
  if (content.bodies.length === 0) {
    if (content.empty.length > 0) throw new InputError(`${what} has no events: ${content.empty.join(", ")} ${content.empty.length === 1 ? "is" : "are"} empty`);
    throw new InputError(`${what} has no file part and no "data" field${fieldList(content.ignored)}`);
  }
  let first: { label: string; kind: EventKind } | undefined;
  const events: string[] = [];
  for (const part of content.bodies) {
    let sub: Submission;
    try {
      sub = parseOne(part.body, part.format);
    } catch (err) {
      if (err instanceof InputError) throw new InputError(`${part.label}: ${err.message}`, err.status);
      throw err;
    }
    // A submission goes to the spool in one append of one kind, so it stays all or nothing.
    if (first && sub.kind !== first.kind) {
      throw new InputError(
        `${part.label} holds ${sub.kind} events but ${first.label} holds ${first.kind} events; ` +
          `one submission holds one kind, send them separately`,
      );
    }
    first ??= { label: part.label, kind: sub.kind };
    for (const e of sub.events) events.push(e);
  }
  return { kind: first!.kind, events };
}

/**
 * Parses a submitted body by its Content-Type (application/json, application/x-ndjson,
 * text/plain, multipart/form-data, application/x-www-form-urlencoded), or by its first
 * character when there is none or another. Throws InputError (status 400; 415 for a urlencoded
 * form without a `data` field) with a one-line reason for a body that holds no events or a bad one.
 */
export function parseSubmission(body: Uint8Array, contentType: string | null): Submission {
  const format = formatOf(contentType);
  if (format === "multipart") return fromForm(multipartBodies(body, contentType!), "the multipart body");
  if (format === "urlencoded") return fromForm(urlencodedBodies(body), "the form");
  return parseOne(body, format);
}
