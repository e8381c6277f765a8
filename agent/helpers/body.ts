// Parsing a body of threat data submitted by hand (control server, `post`): a JSON object, a
// JSON array, NDJSON or plain text lines. The whole body is parsed before anything is handed
// on, so a bad body is refused as a whole and nothing is partially taken.
import { InputError } from "../plugin.ts";
import type { EventKind } from "../plugin.ts";

/** The events of a submission, ready for the spool: JSON objects serialised on one line each, or text lines. */
export interface Submission {
  kind: EventKind;
  events: string[];
}

type BodyFormat = "json" | "ndjson" | "text" | "sniff";

const NDJSON_TYPES = new Set([
  "application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonl",
  "application/jsonlines", "application/x-jsonlines", "application/json-seq",
]);

function formatOf(contentType: string | null): BodyFormat {
  if (!contentType) return "sniff";
  const mime = contentType.split(";")[0]!.trim().toLowerCase();
  if (NDJSON_TYPES.has(mime)) return "ndjson";
  if (mime === "application/json" || mime === "text/json" || mime.endsWith("+json")) return "json";
  if (mime === "text/plain") return "text";
  return "sniff";
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function decode(body: Uint8Array): string {
  try {
    return utf8.decode(body);
  } catch {
    throw new InputError("the body is not valid UTF-8");
  }
}

function message(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split("\n")[0]!;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return `a ${typeof value}`;
}

function isObject(value: unknown): value is object {
  return typeof value === "object" && value !== null && !Array.isArray(value);
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

function parseJson(text: string): Submission {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new InputError(`invalid JSON: ${message(err)}`);
  }
  return fromJsonValue(value);
}

function parseNdjson(text: string): Submission {
  const events: string[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "") continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      throw new InputError(`line ${i + 1}: ${message(err)}`);
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
  for (const raw of text.split("\n")) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
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
    value = JSON.parse(text);
  } catch (jsonErr) {
    try {
      return parseNdjson(text);
    } catch (ndErr) {
      // One line: the JSON error says it best; several: it may be NDJSON with a bad line.
      if (text.trim().includes("\n")) {
        throw new InputError(`neither JSON (${message(jsonErr)}) nor NDJSON (${message(ndErr)})`);
      }
      throw new InputError(`invalid JSON: ${message(jsonErr)}`);
    }
  }
  return fromJsonValue(value);
}

/**
 * Parses a submitted body by its Content-Type (application/json, application/x-ndjson,
 * text/plain), or by its first character when there is none or another. Throws InputError
 * (status 400) with a one-line reason for a body that holds no events or a bad one.
 */
export function parseSubmission(body: Uint8Array, contentType: string | null): Submission {
  const text = decode(body);
  if (text.trim() === "") throw new InputError("the body is empty");
  switch (formatOf(contentType)) {
    case "json": return parseJson(text);
    case "ndjson": return parseNdjson(text);
    case "text": return parseText(text);
    case "sniff": return parseSniffed(text);
  }
}
