// HTTP for polling inputs: web fetch with the things every feed needs, and secrets kept out
// of every message.
//
//   const http = new HttpClient({ timeoutMs: opts.timeout, userAgent: `phishtank/${opts.username}`,
//                                 secrets: [opts.app_key], tlsVerify: opts.tls_verify, caFile: opts.ca_file, log: ctx.log });
//   const res = await http.request(url, { validators: state.validators, signal });
//   if (res.notModified) return { status: "not modified" };
//   for await (const batch of jsonArrayBatches(res.body)) ...
//   // only once the spool holds the records: ctx.checkpoint({ ..., validators: res.validators })
//   http.close();                                             // when the input stops
//
// - Timeouts: `timeoutMs` bounds connecting and receiving the response headers (over the
//   whole redirect chain); `idleTimeoutMs` bounds each wait for body data (time the consumer
//   spends on a chunk does not count). `signal` aborts the request or the body read at once.
// - Redirects are followed by hand (at most `maxRedirects`). Credentials go to the origin
//   of the URL asked for only: once a redirect leaves it, later requests carry no
//   Authorization, Cookie, secret-named or caller-marked header, and no basic auth from the
//   URL's userinfo (userinfo is always sent as an Authorization header, never in the URL).
//   303, and 301/302 after a POST, continue as GET without a body, as browsers do.
// - Conditional GET: `validators` from the previous answer become If-None-Match /
//   If-Modified-Since; a 304 is a result with notModified = true, not an error.
// - Bodies: gzip / bzip2 / zip are undone as the body streams (see decompress.ts).
// - Errors are HttpError with `kind`: "wait" (429, 509, or 5xx with Retry-After; `waitMs`
//   from Retry-After, or null when the source did not say), "retryable" (other 5xx, 408,
//   network errors, timeouts), "rejected" (other 4xx, redirect trouble; `status` and a
//   short body excerpt). An abort by `signal` rejects with the signal's reason instead.
// - Secrets: literal `secrets`, values of secret headers and URL userinfo are replaced by
//   "***" in every message; URLs in messages lose userinfo and secret-named query values.
// - TLS: `tlsVerify: false` and `caFile` go to Bun's fetch as `tls: { rejectUnauthorized, ca }`
//   (Bun's ca replaces the default roots); under Deno `caFile` becomes a
//   Deno.createHttpClient({ caCerts }) (added to the default roots) and tls_verify = false
//   cannot be applied per request: a warning says so once, as the forwarder does.
import { isSecretHeaderName, redactText, TLS_WARNING } from "../../agent/redact.ts";
import { parseRetryAfter } from "../../agent/backoff.ts";
import { concat } from "../../agent/bytes.ts";
import { HttpError } from "./httperror.ts";

export { HttpError, type HttpErrorKind } from "./httperror.ts";
import { readFile } from "node:fs/promises";
import type { Logger } from "../../agent/plugin.ts";
import { networkErrorText, withoutRuntimeWords } from "../../agent/neterrors.ts";
import { denoGlobal, isBun } from "../../agent/runtime/detect.ts";
import { VERSION } from "../../agent/version.ts";
import { compressionFromHints, decompress, type Compression } from "./decompress.ts";

export const DEFAULT_USER_AGENT = `cybexp-agent/${VERSION}`;
export const DEFAULT_HTTP_TIMEOUT_MS = 30_000;

export interface HttpClientOptions {
  /** Connect + response headers, over the redirect chain. Default 30 s. */
  timeoutMs?: number;
  /** Longest wait for the next body chunk. Default: timeoutMs. */
  idleTimeoutMs?: number;
  /** Default `cybexp-agent/<version>`. */
  userAgent?: string;
  /** Headers sent with every request (e.g. Authorization); per-request headers override them. */
  headers?: Record<string, string>;
  /** Names of further headers whose values are secret (Authorization, Cookie, X-Api-Key, ... always are). */
  secretHeaders?: string[];
  /** Literal values never to show (an API key inside a URL path, a password in a body). */
  secrets?: Array<string | undefined | null>;
  /** Default true. */
  tlsVerify?: boolean;
  /** PEM file of CA certificates to trust. */
  caFile?: string;
  /** Default 5. */
  maxRedirects?: number;
  /** For the one-time TLS warning. */
  log?: Logger;
}

/** What makes the next request conditional; persist them only once the records are spooled. */
export interface Validators {
  etag?: string;
  lastModified?: string;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  /** A JSON body (sets Content-Type: application/json unless given). */
  json?: unknown;
  validators?: Validators | null;
  signal?: AbortSignal;
  /** Undo gzip/bzip2/zip. Default true. */
  decompress?: boolean;
  /** The zip entry to read (see decompress.ts). */
  zipEntry?: string;
}

export interface HttpResponse {
  status: number;
  /** The final URL after redirects, credentials removed (use displayUrl for messages). */
  url: string;
  headers: Headers;
  /** 304: the resource did not change since `validators`; the body is empty. */
  notModified: boolean;
  /** To send next time: this answer's ETag / Last-Modified (for a 304, the ones sent, refreshed by any it carries). */
  validators: Validators;
  /** What was undone on the body. */
  compression: Compression;
  /** What the headers or URL extension announced (fetch itself undoes Content-Encoding: gzip). */
  announced: Compression;
  /** The (decompressed) body; read it, or cancel() it, to free the connection. */
  body: ReadableStream<Uint8Array>;
  bytes(): Promise<Uint8Array>;
  text(): Promise<string>;
  json(): Promise<unknown>;
  cancel(): Promise<void>;
  /** A message-safe form of `text` (this request's secrets and URL credentials replaced). */
  redact(text: string): string;
}


const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const EXCERPT_BYTES = 4096;
const EXCERPT_CHARS = 200;

export class HttpClient {
  readonly timeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly userAgent: string;
  readonly maxRedirects: number;
  private readonly headers: Record<string, string>;
  private readonly secretHeaders: Set<string>;
  private readonly secrets: string[];
  private readonly tlsVerify: boolean;
  private readonly caFile: string | undefined;
  private tlsInit: Promise<Record<string, unknown>> | null = null;
  private denoClient: { close(): void } | null = null;

  constructor(opts: HttpClientOptions = {}) {
    this.timeoutMs = Math.max(1, opts.timeoutMs ?? DEFAULT_HTTP_TIMEOUT_MS);
    this.idleTimeoutMs = Math.max(1, opts.idleTimeoutMs ?? this.timeoutMs);
    this.userAgent = opts.userAgent ?? DEFAULT_USER_AGENT;
    this.maxRedirects = Math.max(0, opts.maxRedirects ?? 5);
    this.headers = { ...opts.headers };
    this.secretHeaders = new Set((opts.secretHeaders ?? []).map((h) => h.toLowerCase()));
    this.secrets = (opts.secrets ?? []).filter((s): s is string => typeof s === "string" && s.length > 0);
    this.tlsVerify = opts.tlsVerify ?? true;
    this.caFile = opts.caFile;
    if (!this.tlsVerify && !isBun()) opts.log?.warn(TLS_WARNING);
  }

  /** Is this header's value a secret (by its name, or marked by the caller)? Such headers never follow a redirect to another origin. */
  isSecretHeader(name: string): boolean {
    return isSecretHeaderName(name) || this.secretHeaders.has(name.toLowerCase());
  }

  /** `text` fit for a message: this client's secrets replaced, URLs without credentials, one line. */
  redact(text: string): string {
    return redactText(text, this.secrets);
  }

  /** Release the Deno TLS client, if one was made. */
  close(): void {
    this.denoClient?.close();
    this.denoClient = null;
    this.tlsInit = null;
  }

  async request(url: string, opts: RequestOptions = {}): Promise<HttpResponse> {
    const external = opts.signal;
    if (external?.aborted) throw abortReason(external);

    const secrets = [...this.secrets];
    const headers = new Map<string, string>();
    const set = (name: string, value: string) => {
      const key = name.toLowerCase();
      headers.set(key, value);
      if (this.isSecretHeader(key)) secrets.push(...secretParts(value));
    };
    set("user-agent", this.userAgent);
    for (const [k, v] of Object.entries(this.headers)) set(k, v);
    for (const [k, v] of Object.entries(opts.headers ?? {})) set(k, v);
    if (opts.validators?.etag) set("if-none-match", opts.validators.etag);
    if (opts.validators?.lastModified) set("if-modified-since", opts.validators.lastModified);

    let target: URL;
    try {
      target = new URL(url);
    } catch {
      throw new HttpError(`not a valid URL: ${redactText(url, secrets)}`, "rejected", null);
    }
    if (target.protocol !== "http:" && target.protocol !== "https:") {
      throw new HttpError(`not an http(s) URL: ${redactText(url, secrets)}`, "rejected", null);
    }
    const userinfo = takeUserinfo(target);
    if (userinfo) {
      secrets.push(...userinfo.secrets);
      if (!headers.has("authorization")) set("authorization", userinfo.authorization);
    }
    const display = (u: string | URL) => redactText(String(u), secrets);

    let body: string | Uint8Array | undefined = opts.body;
    if (opts.json !== undefined) {
      body = JSON.stringify(opts.json);
      if (!headers.has("content-type")) set("content-type", "application/json");
    }
    let method = (opts.method ?? "GET").toUpperCase();

    const ac = new AbortController();
    const onAbort = () => ac.abort(external!.reason);
    external?.addEventListener("abort", onAbort, { once: true });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ac.abort(new Error("timeout"));
    }, this.timeoutMs);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      clearTimeout(timer);
      external?.removeEventListener("abort", onAbort);
    };

    const origin = target.origin;
    let leftOrigin = false;
    let res: Response;
    try {
      const tls = await this.tlsOptions(display);
      for (let hop = 0; ; hop++) {
        const sent: Record<string, string> = {};
        for (const [k, v] of headers) if (!leftOrigin || !this.isSecretHeader(k)) sent[k] = v;
        const init: RequestInit & Record<string, unknown> = { method, headers: sent, redirect: "manual", signal: ac.signal, ...tls };
        if (body !== undefined) init.body = body as BodyInit;
        res = await fetch(target, init);
        const location = REDIRECTS.has(res.status) ? res.headers.get("location") : null;
        if (location === null) break;
        await res.body?.cancel().catch(() => {});
        if (hop >= this.maxRedirects) {
          throw new HttpError(`too many redirects (more than ${this.maxRedirects}) from ${display(url)}`, "rejected", res.status, { headers: res.headers });
        }
        let next: URL;
        try {
          next = new URL(location, target);
        } catch {
          throw new HttpError(`HTTP ${res.status} from ${display(target)} redirects to an invalid URL`, "rejected", res.status);
        }
        if (next.protocol !== "http:" && next.protocol !== "https:") {
          throw new HttpError(`HTTP ${res.status} from ${display(target)} redirects to a non-http URL`, "rejected", res.status);
        }
        // Credentials in a Location are not ours to send.
        next.username = "";
        next.password = "";
        if (next.origin !== origin) leftOrigin = true;
        if (res.status === 303 || ((res.status === 301 || res.status === 302) && method === "POST")) {
          if (method !== "HEAD") method = "GET";
          body = undefined;
          headers.delete("content-type");
        }
        target = next;
      }
    } catch (err) {
      release();
      if (external?.aborted) throw abortReason(external);
      if (err instanceof HttpError) throw err;
      if (timedOut) throw new HttpError(`timeout after ${this.timeoutMs} ms waiting for ${display(target)}`, "retryable", null);
      throw new HttpError(`cannot reach ${display(target)}: ${redactText(networkErrorText(err, target), secrets)}`, "retryable", null);
    }
    clearTimeout(timer);

    const finalUrl = target.toString();
    // A 304 confirms the validators sent (and may refresh them); a full answer replaces them.
    const validators: Validators = res.status === 304 ? { ...opts.validators } : {};
    const etag = res.headers.get("etag");
    const lastModified = res.headers.get("last-modified");
    if (etag) validators.etag = etag;
    if (lastModified) validators.lastModified = lastModified;
    const announced = compressionFromHints({
      contentEncoding: res.headers.get("content-encoding"),
      contentType: res.headers.get("content-type"),
      url: finalUrl,
    });
    const answerUrl = target;

    let idle = false;
    const raw = guardBody(res.body, this.idleTimeoutMs, ac, () => (idle = true), release, (err) => {
      if (external?.aborted) return abortReason(external);
      if (err instanceof HttpError) return err;
      if (idle) return new HttpError(`no data for ${this.idleTimeoutMs} ms reading ${display(answerUrl)}`, "retryable", res.status, { headers: res.headers });
      return new HttpError(`connection lost reading ${display(answerUrl)}: ${redactText(withoutRuntimeWords(messageOf(err)), secrets)}`, "retryable", res.status, { headers: res.headers });
    });

    if (res.status === 304 || !res.ok) {
      const excerpt = res.status === 304 ? "" : await readExcerpt(raw, secrets);
      await raw.cancel().catch(() => {});
      release();
      if (external?.aborted) throw abortReason(external);
      if (res.status === 304) {
        return makeResponse(res, finalUrl, true, validators, "none", announced, emptyStream(), secrets);
      }
      throw statusError(res, display(answerUrl), excerpt);
    }

    let compression: Compression = "none";
    let out = raw;
    if (opts.decompress !== false) {
      try {
        const d = await decompress(raw, { zipEntry: opts.zipEntry });
        compression = d.compression;
        out = d.body;
      } catch (err) {
        release();
        throw err;
      }
    }
    return makeResponse(res, finalUrl, false, validators, compression, announced, out, secrets);
  }

  private tlsOptions(display: (u: string) => string): Promise<Record<string, unknown>> {
    this.tlsInit ??= this.loadTls().catch((err) => {
      this.tlsInit = null;
      throw new HttpError(`ca_file: cannot read ${display(this.caFile ?? "")} (${messageOf(err)})`, "rejected", null);
    });
    return this.tlsInit;
  }

  private async loadTls(): Promise<Record<string, unknown>> {
    const ca = this.caFile ? await readFile(this.caFile, "utf8") : undefined;
    if (isBun()) {
      if (this.tlsVerify && ca === undefined) return {};
      return { tls: { rejectUnauthorized: this.tlsVerify, ...(ca !== undefined ? { ca } : {}) } };
    }
    const deno = denoGlobal();
    if (ca !== undefined && deno?.createHttpClient) {
      this.denoClient = deno.createHttpClient({ caCerts: [ca] });
      return { client: this.denoClient };
    }
    return {};
  }
}

function makeResponse(
  res: Response,
  url: string,
  notModified: boolean,
  validators: Validators,
  compression: Compression,
  announced: Compression,
  body: ReadableStream<Uint8Array>,
  secrets: string[],
): HttpResponse {
  const bytes = async () => new Uint8Array(await new Response(body).arrayBuffer());
  return {
    status: res.status,
    url,
    headers: res.headers,
    notModified,
    validators,
    compression,
    announced,
    body,
    bytes,
    text: async () => new TextDecoder().decode(await bytes()),
    json: async () => JSON.parse(new TextDecoder().decode(await bytes())),
    cancel: () => body.cancel().catch(() => {}),
    redact: (text) => redactText(text, secrets),
  };
}

function statusError(res: Response, url: string, excerpt: string): HttpError {
  const status = res.status;
  const message = `HTTP ${status} from ${url}${excerpt ? `: ${excerpt}` : ""}`;
  const waitMs = parseRetryAfter(res.headers.get("retry-after")) ?? null;
  const extra = { waitMs, bodyExcerpt: excerpt, headers: res.headers };
  if (status === 429 || status === 509) return new HttpError(message, "wait", status, extra);
  if (status >= 500 && waitMs !== null) return new HttpError(message, "wait", status, extra);
  if (status >= 500 || status === 408) return new HttpError(message, "retryable", status, { ...extra, waitMs: null });
  if (REDIRECTS.has(status)) return new HttpError(`${message} (a redirect without Location)`, "rejected", status, { ...extra, waitMs: null });
  return new HttpError(message, "rejected", status, { ...extra, waitMs: null });
}

/**
 * The body with an idle timeout per read (only while waiting for the network), errors mapped
 * by `mapError`, and `done` called once it ends, fails or is cancelled.
 */
function guardBody(
  body: ReadableStream<Uint8Array> | null,
  idleMs: number,
  ac: AbortController,
  onIdle: () => void,
  done: () => void,
  mapError: (err: unknown) => unknown,
): ReadableStream<Uint8Array> {
  if (!body) {
    done();
    return emptyStream();
  }
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>(
    {
      async pull(c) {
        const t = setTimeout(() => {
          onIdle();
          ac.abort(new Error("idle timeout"));
        }, idleMs);
        let r: Awaited<ReturnType<typeof reader.read>>;
        try {
          r = await reader.read();
        } catch (err) {
          done();
          throw mapError(err);
        } finally {
          clearTimeout(t);
        }
        if (r.done) {
          done();
          c.close();
        } else {
          c.enqueue(r.value);
        }
      },
      async cancel(reason) {
        done();
        ac.abort(reason);
        await reader.cancel(reason).catch(() => {});
      },
    },
    { highWaterMark: 0 },
  );
}

async function readExcerpt(body: ReadableStream<Uint8Array>, secrets: string[]): Promise<string> {
  const reader = body.getReader();
  const parts: Uint8Array[] = [];
  let have = 0;
  try {
    while (have < EXCERPT_BYTES) {
      const r = await reader.read();
      if (r.done) break;
      parts.push(r.value);
      have += r.value.byteLength;
    }
  } catch {
    // The status says enough; a body cut short only loses the excerpt.
  } finally {
    reader.releaseLock();
  }
  const bytes = concat(parts, have);
  const text = new TextDecoder().decode(bytes.subarray(0, EXCERPT_BYTES));
  const line = redactText(text, secrets);
  return line.length > EXCERPT_CHARS ? `${line.slice(0, EXCERPT_CHARS)}...` : line;
}

function emptyStream(): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({ start: (c) => c.close() });
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("The operation was aborted.", "AbortError");
}

function messageOf(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as { cause?: unknown }).cause;
    const own = err.message || err.name;
    return cause instanceof Error && cause.message && !own.includes(cause.message) ? `${own} (${cause.message})` : own;
  }
  return String(err);
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function base64(s: string): string {
  const bytes = new TextEncoder().encode(s);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

/** The Authorization header value of HTTP basic authentication. */
export function basicAuth(user: string, password: string): string {
  return `Basic ${base64(`${user}:${password}`)}`;
}

/**
 * Takes the userinfo out of `url` (changed in place) as basic authentication: the
 * Authorization value and the secrets to keep out of messages (decoded and as written);
 * null when the URL has none.
 */
export function takeUserinfo(url: URL): { authorization: string; secrets: string[] } | null {
  if (!url.username && !url.password) return null;
  const user = safeDecode(url.username);
  const pass = safeDecode(url.password);
  const secrets = [user, pass, url.username, url.password];
  url.username = "";
  url.password = "";
  return { authorization: basicAuth(user, pass), secrets };
}

/** A header value's secret pieces: the whole value and its long words (the token after "Bearer"). */
function secretParts(value: string): string[] {
  const parts = [value];
  for (const w of value.split(/\s+/)) if (w.length >= 8 && w !== value) parts.push(w);
  return parts;
}

