// The Cybex-P API output: each batch is one multipart upload, POST {url}/raw. HTTP answers map
// onto the forwarder's outcomes: 2xx sent; network errors, timeouts, 408, 429 and 5xx retried
// (honouring Retry-After); 401/403 held for the token to be fixed; 413 split; other 4xx to dead
// letters; a redirect retried with a hint, since following it would turn the POST into a GET.
//
// TLS: `tlsVerify: false` is passed to Bun's fetch as `tls: { rejectUnauthorized: false }`.
// Deno's fetch has no per-request or per-client switch for it (Deno.createHttpClient only
// adds CA certificates), so under Deno certificate checks stay on unless the process runs
// with `--unsafely-ignore-certificate-errors`; the output logs a warning saying so.
import { parseRetryAfter } from "../backoff.ts";
import type { Logger } from "../plugin.ts";
import { networkErrorText } from "../neterrors.ts";
import { redactText, redactUrl, replaceSecrets, TLS_WARNING, withoutUserinfo } from "../redact.ts";
import { isBun } from "../runtime/detect.ts";
import { buildUploadBody } from "../upload.ts";
import type { OutgoingBatch, OutputTransport, SendOutcome } from "./transport.ts";

export interface ApiOptions {
  url: string;
  token: string;
  timeoutMs: number;
  concurrency: number;
  tlsVerify: boolean;
}

/** Upload body buffers are reused; one this large or larger is not kept (a rare huge batch). */
const KEEP_BODY_BYTES = 4 * 1024 * 1024;
const ERROR_BODY_CHARS = 200;
const DEAD_LETTER_ANSWER_CHARS = 64 * 1024;

export class CybexApiTransport implements OutputTransport {
  readonly type = "cybexp_api";
  readonly recordPerBatch = false;
  /** Body buffers not lent to an upload right now (at most one per upload slot). */
  private readonly bodyBuffers: Uint8Array<ArrayBuffer>[] = [];
  private warnedTls = false;

  constructor(private api: ApiOptions, private readonly log: Logger) {
    this.checkTls();
  }

  get concurrency(): number {
    return this.api.concurrency;
  }

  get options(): ApiOptions {
    return this.api;
  }

  /** New [api] settings (config reload). */
  setApi(api: ApiOptions): void {
    this.api = api;
    this.checkTls();
  }

  destination(): string {
    return redactUrl(this.endpoint());
  }

  private endpoint(): string {
    return `${this.api.url.replace(/\/+$/, "")}/raw`;
  }

  async send(batch: OutgoingBatch, signal: AbortSignal): Promise<SendOutcome> {
    const api = this.api;
    const m = batch.meta;
    // The multipart head and tail: about 600 bytes of fixed text plus the UTF-8 of the metadata.
    const frame = 1024 + 3 * (m.input.length + m.name.length + m.orgid.length + m.typetag.length + m.timezone.length + (m.file?.length ?? 0));
    const buffer = this.bodyBuffer(batch.bytes + frame);
    const { body, contentType } = buildUploadBody(batch.meta, batch.kind, batch.records.map((r) => r.payload), undefined, buffer);
    try {
      return await this.post(api, body, contentType, signal);
    } finally {
      // Returned only once fetch is done with the body, whether or not it copied it.
      if (buffer.byteLength < KEEP_BODY_BYTES && this.bodyBuffers.length < Math.max(1, api.concurrency)) this.bodyBuffers.push(buffer);
    }
  }

  /** A buffer of at least `bytes` (a typical body with its multipart head and tail): a kept one if it is large enough. */
  private bodyBuffer(bytes: number): Uint8Array<ArrayBuffer> {
    const i = this.bodyBuffers.findIndex((b) => b.byteLength >= bytes);
    if (i !== -1) return this.bodyBuffers.splice(i, 1)[0]!;
    // Room to grow a little: batches of one route vary in bytes from upload to upload.
    return new Uint8Array(Math.max(64 * 1024, bytes + (bytes >> 3)));
  }

  private async post(api: ApiOptions, body: Uint8Array<ArrayBuffer>, contentType: string, stop: AbortSignal): Promise<SendOutcome> {
    const url = this.endpoint();
    const init: RequestInit & { tls?: unknown } = {
      method: "POST",
      redirect: "manual",
      headers: { authorization: `Bearer ${api.token}`, "content-type": contentType },
      body,
      signal: AbortSignal.any([AbortSignal.timeout(api.timeoutMs), stop]),
    };
    if (!api.tlsVerify) init.tls = { rejectUnauthorized: false };
    let status: number;
    let answer: string;
    let retryAfter: string | null;
    let location: string | null;
    try {
      const res = await fetch(url, init);
      status = res.status;
      retryAfter = res.headers.get("retry-after");
      location = res.headers.get("location");
      answer = await res.text();
    } catch (err) {
      if (stop.aborted) return { type: "aborted" };
      const timedOut = (err as Error)?.name === "TimeoutError";
      return {
        type: "retry",
        network: true,
        error: this.clean(
          timedOut ? `timeout after ${api.timeoutMs} ms posting to ${redactUrl(url)}` : `network error posting to ${redactUrl(url)}: ${networkErrorText(err, url)}`,
          api,
        ),
      };
    }
    if (status >= 200 && status < 300) return { type: "sent" };
    const error = this.clean(`HTTP ${status} from ${redactUrl(url)}: ${answer.slice(0, ERROR_BODY_CHARS)}`, api);
    if (status === 401 || status === 403) return { type: "unauthorized", error };
    if (status === 413) return { type: "too_large", error, answer: this.clean(answer.slice(0, DEAD_LETTER_ANSWER_CHARS), api, false) };
    if (status === 408 || status === 429 || status >= 500) return { type: "retry", error, retryAfterMs: parseRetryAfter(retryAfter) };
    if (status >= 400) return { type: "rejected", error, status, answer: this.clean(answer.slice(0, DEAD_LETTER_ANSWER_CHARS), api, false) };
    // 1xx/3xx as a final answer: [api] url is probably not the final address; keep the data.
    const hint = location ? ` (redirected to ${redactUrl(location)}; set [api] url to the final address)` : "";
    return { type: "retry", error: this.clean(`HTTP ${status} from ${redactUrl(url)}${hint}`, api) };
  }

  /**
   * One HEAD of [api] url without credentials (no token, no user:password from the URL), for
   * as long as `signal` lets it (the forwarder gives it a short timeout): an HTTP answer below
   * 500 means the API is there.
   */
  async probe(signal: AbortSignal): Promise<boolean> {
    const api = this.api;
    try {
      const init: RequestInit & { tls?: unknown } = { method: "HEAD", redirect: "manual", signal };
      if (!api.tlsVerify) init.tls = { rejectUnauthorized: false };
      const res = await fetch(withoutUserinfo(api.url), init);
      await res.body?.cancel().catch(() => {});
      return res.status < 500;
    } catch {
      return false;
    }
  }

  /** Never the token, whatever the server or the network layer put in it; one line unless told. */
  private clean(message: string, api: ApiOptions, oneLine = true): string {
    return oneLine ? redactText(message, [api.token]) : replaceSecrets(message, [api.token]);
  }

  private checkTls(): void {
    if (this.api.tlsVerify || this.warnedTls || isBun()) return;
    this.warnedTls = true;
    this.log.warn(TLS_WARNING);
  }
}
