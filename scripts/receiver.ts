// The reference Cybex-P API receiver: POST /raw answered as strictly as the real API does,
// for tests, benchmarks and trying the agent without a Cybex-P installation.
//
//   bun scripts/receiver.ts --port 5000 --dir ./.receiver-data --token TOKEN \
//       [--hostname 127.0.0.1] [--fail-status 503 --fail-for 5s] [--max-body 1MiB]
//
// Prints {"listening":"http://127.0.0.1:PORT"} on stdout once it accepts connections.
// GET /_stats answers {uploads, lines, bytes, rejected} for scripts running it as a process.
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { errorMessage } from "../agent/errortext.ts";
import { serve, type Served } from "../agent/serve.ts";
import { countNewlines } from "../agent/bytes.ts";
import { indexOfBytes } from "../agent/upload.ts";
import { parseDuration, parseSize } from "../agent/units.ts";

export interface ReceiverOptions {
  port?: number;
  hostname?: string;
  /** Store each accepted upload here (file + metadata); omitted = keep counts only. */
  dir?: string;
  /** Required bearer token; omitted = any request is authorised. */
  token?: string;
  /** Keep accepted file contents in memory for Receiver.file() (tests; not for benchmarks). */
  keepFiles?: boolean;
  /** Answer 413 to requests whose body is larger than this many bytes. */
  maxBodyBytes?: number;
}

export interface ReceivedUpload {
  seq: number;
  name: string;
  orgid: string;
  typetag: string;
  timezone: string;
  filename: string;
  contentType: string;
  bytes: number;
  lines: number;
  receivedAt: number;
}

export interface Receiver {
  url: string;
  port: number;
  /** Metadata of accepted uploads, in arrival order. */
  uploads: ReceivedUpload[];
  /** Requests to /raw answered with anything but 201 (including injected failures). */
  rejected: number;
  totalLines(): number;
  /** Contents of accepted upload `seq` (kept in memory with keepFiles, else read from dir). */
  file(seq: number): Promise<Uint8Array>;
  /** Answer `status` (default 503) to every /raw request for the next `ms`. */
  failFor(ms: number, status?: number, opts?: { retryAfterS?: number }): void;
  /** Answer the next `n` /raw requests with `status` (and `body`, default a JSON message). */
  failNext(n: number, status: number, body?: string, opts?: { retryAfterS?: number }): void;
  /** Change the accepted token (undefined = no auth). */
  setToken(token: string | undefined): void;
  close(): Promise<void>;
}

const TEXT_PARTS = ["name", "orgid", "typetag", "timezone"] as const;
const ALLOWED_PARTS = new Set<string>([...TEXT_PARTS, "file"]);

interface Part {
  name: string;
  filename: string | undefined;
  contentType: string;
  start: number;
  end: number;
}

class MultipartError extends Error {}

const encoder = new TextEncoder();
const utf8 = new TextDecoder();
const CRLFCRLF = encoder.encode("\r\n\r\n");

/** The boundary parameter of a multipart/form-data content type, or undefined. */
function boundaryOf(contentType: string | null): string | undefined {
  if (!contentType || !/^\s*multipart\/form-data\s*(;|$)/i.test(contentType)) return undefined;
  const m = /;\s*boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  return m ? (m[1] ?? m[2]) : undefined;
}

function headerParams(value: string): Map<string, string> {
  const params = new Map<string, string>();
  const re = /;\s*([^=;\s]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))/g;
  for (let m; (m = re.exec(value)); ) {
    params.set(m[1]!.toLowerCase(), m[2] !== undefined ? m[2].replace(/\\(.)/g, "$1") : m[3]!.trim());
  }
  return params;
}

/**
 * A multipart/form-data parser over the whole body (RFC 7578). Hand-written because it is
 * several times faster than Request.formData() on uploads of ~100 KB, and it leaves the file
 * contents as a view on the body instead of a copy.
 */
export function parseMultipart(body: Uint8Array, boundary: string): Part[] {
  const dash = encoder.encode(`--${boundary}`);
  const delimiter = encoder.encode(`\r\n--${boundary}`);
  let at: number;
  if (indexOfBytes(body.subarray(0, dash.length), dash) === 0) at = dash.length;
  else {
    const first = indexOfBytes(body, delimiter); // after a preamble
    if (first === -1) throw new MultipartError("no opening boundary");
    at = first + delimiter.length;
  }
  const parts: Part[] = [];
  for (;;) {
    if (body[at] === 0x2d && body[at + 1] === 0x2d) return parts; // closing "--"
    while (body[at] === 0x20 || body[at] === 0x09) at++; // transport padding
    if (body[at] !== 0x0d || body[at + 1] !== 0x0a) throw new MultipartError("bad boundary line");
    at += 2;
    const headEnd = indexOfBytes(body, CRLFCRLF, at);
    if (headEnd === -1) throw new MultipartError("unterminated part headers");
    const start = headEnd + 4;
    const end = indexOfBytes(body, delimiter, start);
    if (end === -1) throw new MultipartError("missing closing boundary");
    let disposition = "";
    let contentType = "text/plain";
    for (const line of utf8.decode(body.subarray(at, headEnd)).split("\r\n")) {
      const colon = line.indexOf(":");
      if (colon === -1) throw new MultipartError("bad part header");
      const key = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      if (key === "content-disposition") disposition = value;
      else if (key === "content-type") contentType = value;
    }
    if (!/^form-data\s*(;|$)/i.test(disposition)) throw new MultipartError("part without form-data disposition");
    const params = headerParams(disposition);
    const name = params.get("name");
    if (name === undefined) throw new MultipartError("part without a name");
    parts.push({ name, filename: params.get("filename"), contentType, start, end });
    at = end + delimiter.length;
  }
}

function json(status: number, message: string, headers?: Record<string, string>): Response {
  return new Response(JSON.stringify({ message }), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

const STATUS_TEXT: Record<number, string> = {
  408: "Request timeout", 413: "Request entity too large", 429: "Too many requests",
  500: "Internal server error", 502: "Bad gateway", 503: "Service unavailable", 504: "Gateway timeout",
};

function safeFilePart(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 100) || "_";
}

export async function startReceiver(opts: ReceiverOptions = {}): Promise<Receiver> {
  let token = opts.token;
  const uploads: ReceivedUpload[] = [];
  const kept = new Map<number, Uint8Array>();
  const storedAs = new Map<number, string>();
  let lines = 0;
  let bytes = 0;
  let seq = 0;
  let failUntil = 0;
  let failStatus = 503;
  let failRetryAfter: number | undefined;
  let failCount = 0;
  let failNextStatus = 503;
  let failNextBody: string | undefined;
  let failNextRetryAfter: number | undefined;
  if (opts.dir) await mkdir(opts.dir, { recursive: true });

  const receiver: Receiver = {
    url: "",
    port: 0,
    uploads,
    rejected: 0,
    totalLines: () => lines,
    async file(n) {
      const mem = kept.get(n);
      if (mem) return mem;
      const path = storedAs.get(n);
      if (!path) throw new Error(`upload ${n} was not kept (use keepFiles or dir)`);
      return new Uint8Array(await readFile(path));
    },
    failFor(ms, status = 503, o) {
      failUntil = Date.now() + ms;
      failStatus = status;
      failRetryAfter = o?.retryAfterS;
    },
    failNext(n, status, body, o) {
      failCount = n;
      failNextStatus = status;
      failNextBody = body;
      failNextRetryAfter = o?.retryAfterS;
    },
    setToken(t) {
      token = t;
    },
    close: () => served.close(),
  };

  function reject(res: Response): Response {
    receiver.rejected++;
    return res;
  }

  async function handleRaw(req: Request): Promise<Response> {
    // The body is always read, so the client never sees a reset while it is still sending.
    const raw = new Uint8Array(await req.arrayBuffer());

    if (failCount > 0) {
      failCount--;
      const headers: Record<string, string> = { "content-type": "application/json" };
      if (failNextRetryAfter !== undefined) headers["retry-after"] = String(failNextRetryAfter);
      const body = failNextBody ?? JSON.stringify({ message: STATUS_TEXT[failNextStatus] ?? `HTTP ${failNextStatus}` });
      return reject(new Response(body, { status: failNextStatus, headers }));
    }
    if (Date.now() < failUntil) {
      const headers: Record<string, string> = {};
      if (failRetryAfter !== undefined) headers["retry-after"] = String(failRetryAfter);
      return reject(json(failStatus, STATUS_TEXT[failStatus] ?? `HTTP ${failStatus}`, headers));
    }
    if (token !== undefined && req.headers.get("authorization") !== `Bearer ${token}`) {
      return reject(json(401, "Invalid/missing token in auth header!"));
    }
    if (opts.maxBodyBytes !== undefined && raw.length > opts.maxBodyBytes) {
      return reject(json(413, "Request entity too large"));
    }
    const boundary = boundaryOf(req.headers.get("content-type"));
    if (!boundary) return reject(json(400, "Invalid input: not multipart/form-data"));
    let parts: Part[];
    try {
      parts = parseMultipart(raw, boundary);
    } catch (err) {
      return reject(json(400, `Invalid input: ${errorMessage(err)}`));
    }

    const byName = new Map<string, Part>();
    for (const p of parts) {
      if (!ALLOWED_PARTS.has(p.name) || byName.has(p.name)) return reject(json(400, `Invalid input: ${p.name}`));
      byName.set(p.name, p);
    }
    const text: Record<string, string> = {};
    for (const key of TEXT_PARTS) {
      const p = byName.get(key);
      if (!p || p.filename !== undefined || p.end === p.start) return reject(json(400, `Invalid input: ${key}`));
      text[key] = utf8.decode(raw.subarray(p.start, p.end));
    }
    const file = byName.get("file");
    if (!file || !file.filename || file.end === file.start) return reject(json(400, "Invalid or missing file!"));

    const content = raw.subarray(file.start, file.end);
    const upload: ReceivedUpload = {
      seq: ++seq,
      name: text.name!,
      orgid: text.orgid!,
      typetag: text.typetag!,
      timezone: text.timezone!,
      filename: file.filename,
      contentType: file.contentType,
      bytes: content.length,
      lines: countNewlines(content),
      receivedAt: Date.now(),
    };
    if (opts.dir) {
      const dot = upload.filename.lastIndexOf(".");
      const ext = dot > 0 ? safeFilePart(upload.filename.slice(dot + 1)) : "bin";
      const base = join(opts.dir, `${upload.seq}-${safeFilePart(upload.name)}`);
      await writeFile(`${base}.${ext}`, content);
      await writeFile(`${base}.json`, JSON.stringify(upload) + "\n");
      storedAs.set(upload.seq, `${base}.${ext}`);
    }
    if (opts.keepFiles) kept.set(upload.seq, new Uint8Array(content));
    uploads.push(upload);
    lines += upload.lines;
    bytes += upload.bytes;
    return json(201, "File uploaded successfully!");
  }

  const served: Served = await serve(
    (req) => {
      const path = new URL(req.url).pathname;
      if (path === "/raw") {
        if (req.method !== "POST") return json(405, "Method not allowed");
        return handleRaw(req);
      }
      if (path === "/_stats" && req.method === "GET") {
        return new Response(JSON.stringify({ uploads: uploads.length, lines, bytes, rejected: receiver.rejected }), {
          headers: { "content-type": "application/json" },
        });
      }
      return json(404, "Not found");
    },
    { hostname: opts.hostname ?? "127.0.0.1", port: opts.port ?? 0 },
  );
  receiver.port = served.port;
  const host = served.hostname.includes(":") ? `[${served.hostname}]` : served.hostname;
  receiver.url = `http://${host}:${served.port}`;
  return receiver;
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: "string", default: "5000" },
      hostname: { type: "string", default: "127.0.0.1" },
      dir: { type: "string" },
      token: { type: "string" },
      "fail-status": { type: "string" },
      "fail-for": { type: "string" },
      "max-body": { type: "string" },
    },
    strict: true,
  });
  const port = Number(values.port);
  const maxBody = values["max-body"] !== undefined ? parseSize(values["max-body"]) : undefined;
  const failFor = values["fail-for"] !== undefined ? parseDuration(values["fail-for"]) : undefined;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad --port ${values.port}`);
  if (values["max-body"] !== undefined && maxBody === undefined) throw new Error(`bad --max-body ${values["max-body"]}`);
  if (values["fail-for"] !== undefined && failFor === undefined) throw new Error(`bad --fail-for ${values["fail-for"]}`);

  const receiver = await startReceiver({
    port,
    hostname: values.hostname,
    dir: values.dir,
    token: values.token,
    maxBodyBytes: maxBody,
  });
  if (failFor !== undefined) receiver.failFor(failFor, values["fail-status"] ? Number(values["fail-status"]) : 503);
  process.stdout.write(JSON.stringify({ listening: receiver.url }) + "\n");
  const shutdown = () => {
    receiver.close().then(() => process.exit(0));
  };
  process.on("SIGINT", shutdown);
  process.on("SIGTERM", shutdown);
}

if (import.meta.main) {
  main(process.argv.slice(2)).catch((err) => {
    process.stderr.write(`receiver: ${errorMessage(err)}\n`);
    process.exit(1);
  });
}
