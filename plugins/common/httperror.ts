// The error an HTTP request ends with, apart from the client so that the poll loop can tell
// "the source asked to wait" without loading the HTTP client, decompression and bzip2.

export type HttpErrorKind = "wait" | "retryable" | "rejected";

export class HttpError extends Error {
  /** For kind "wait": how long the source asked to wait (ms), null if it did not say. */
  readonly waitMs: number | null;
  /** The start of the answer's body, one line, secrets replaced. */
  readonly bodyExcerpt: string;
  /** The answer's headers (e.g. MISP's X-Rate-Limit-Reset), null when no answer came. */
  readonly headers: Headers | null;

  constructor(
    message: string,
    readonly kind: HttpErrorKind,
    /** The HTTP status, or null when no answer came (network, timeout). */
    readonly status: number | null,
    extra: { waitMs?: number | null; bodyExcerpt?: string; headers?: Headers | null } = {},
  ) {
    super(message);
    this.name = "HttpError";
    this.waitMs = extra.waitMs ?? null;
    this.bodyExcerpt = extra.bodyExcerpt ?? "";
    this.headers = extra.headers ?? null;
  }
}
