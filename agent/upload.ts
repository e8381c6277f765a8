// The multipart/form-data body of one upload to the Cybex-P API (POST {url}/raw): parts
// `file`, `name`, `orgid`, `typetag`, `timezone`, built as one buffer so the payload is
// copied exactly once (from the spool records into the body). The caller may lend a buffer
// to build it in: at hundreds of MB/s a fresh body per upload is garbage the collector frees
// late, which shows up as peak RSS.
import type { EventKind } from "./plugin.ts";

/** What a route carries besides the events: where the upload comes from and how to tag it. */
export interface RouteMeta {
  /** The input's table key (the upload's file name). */
  input: string;
  name: string;
  orgid: string;
  typetag: string;
  timezone: string;
  /**
   * The file part's name (without its extension) when it is not the input's key: batches an
   * input relays for another agent (EmitOptions.route) keep the name their sensor gave them.
   */
  file?: string;
}

export interface UploadBody {
  body: Uint8Array<ArrayBuffer>;
  contentType: string;
  /** The file part's name as sent, e.g. "auth.txt". */
  filename: string;
}

const encoder = new TextEncoder();

export function fileNameFor(input: string, kind: EventKind): string {
  return `${input}.${kind === "json" ? "ndjson" : "txt"}`;
}

function fileContentType(kind: EventKind): string {
  return kind === "json" ? "application/x-ndjson" : "text/plain";
}

// Header parameter values are quoted strings; a quote or line break in an input name would
// break the header, so they are percent-encoded the way browsers do it.
function quoteParam(value: string): string {
  return value.replace(/["\r\n]/g, (c) => (c === '"' ? "%22" : c === "\r" ? "%0D" : "%0A"));
}

function randomBoundary(): string {
  const bytes = new Uint8Array(18);
  crypto.getRandomValues(bytes);
  let hex = "";
  for (const b of bytes) hex += b.toString(16).padStart(2, "0");
  return `----cybexp-${hex}`;
}

function head(boundary: string, meta: RouteMeta, kind: EventKind, filename: string): string {
  let s = "";
  for (const key of ["name", "orgid", "typetag", "timezone"] as const) {
    s += `--${boundary}\r\nContent-Disposition: form-data; name="${key}"\r\n\r\n${meta[key]}\r\n`;
  }
  s +=
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${quoteParam(filename)}"\r\n` +
    `Content-Type: ${fileContentType(kind)}\r\n\r\n`;
  return s;
}

function tail(boundary: string): string {
  return `\r\n--${boundary}--\r\n`;
}

/**
 * Build the upload body. `chunks` (record payloads: events each ending in "\n") are
 * concatenated in order into the file part. `makeBoundary` exists for tests. With `into`
 * large enough, the body is a view of it (the caller must not reuse `into` while the body
 * is in use); otherwise a new buffer.
 */
export function buildUploadBody(
  meta: RouteMeta,
  kind: EventKind,
  chunks: readonly Uint8Array[],
  makeBoundary: () => string = randomBoundary,
  into?: Uint8Array<ArrayBuffer>,
): UploadBody {
  const filename = fileNameFor(meta.file ?? meta.input, kind);
  let payloadLength = 0;
  for (const c of chunks) payloadLength += c.byteLength;

  for (let attempt = 0; attempt < 8; attempt++) {
    const boundary = makeBoundary();
    const headBytes = encoder.encode(head(boundary, meta, kind, filename));
    const tailBytes = encoder.encode(tail(boundary));
    // Text values go before the file part, so a boundary inside them would be seen first.
    if (Object.values(meta).some((v) => v !== undefined && v.includes(boundary))) continue;

    const length = headBytes.byteLength + payloadLength + tailBytes.byteLength;
    const body = into && into.byteLength >= length ? into.subarray(0, length) : new Uint8Array(length);
    body.set(headBytes, 0);
    let at = headBytes.byteLength;
    for (const c of chunks) {
      body.set(c, at);
      at += c.byteLength;
    }
    body.set(tailBytes, at);

    // 144 random bits make a collision practically impossible, but the payload is
    // arbitrary data, so make sure rather than hope. A delimiter is CRLF "--" boundary; the
    // head ends in CRLF, so one could also start right at the payload's first byte.
    const payload = body.subarray(headBytes.byteLength, headBytes.byteLength + payloadLength);
    const dashBoundary = encoder.encode(`--${boundary}`);
    if (startsWith(payload, dashBoundary, 0) || indexOfBytes(payload, encoder.encode(`\r\n--${boundary}`)) !== -1) continue;

    return { body, contentType: `multipart/form-data; boundary=${boundary}`, filename };
  }
  throw new Error("could not find a multipart boundary absent from the payload");
}

function startsWith(hay: Uint8Array, needle: Uint8Array, at: number): boolean {
  if (at + needle.length > hay.length) return false;
  for (let i = 0; i < needle.length; i++) if (hay[at + i] !== needle[i]) return false;
  return true;
}

/**
 * Position of `needle` in `hay` at or after `from`, or -1. Candidates are found with the
 * native Uint8Array.indexOf on the needle's first byte, so a needle starting with a byte that
 * is rare in the haystack (CR in log lines) is found at memchr speed on every runtime
 * (node:buffer's indexOf is slow under Deno).
 */
export function indexOfBytes(hay: Uint8Array, needle: Uint8Array, from = 0): number {
  if (needle.length === 0) return from <= hay.length ? from : -1;
  const first = needle[0]!;
  const last = hay.length - needle.length;
  for (let i = hay.indexOf(first, from); i !== -1 && i <= last; i = hay.indexOf(first, i + 1)) {
    if (startsWith(hay, needle, i)) return i;
  }
  return -1;
}
