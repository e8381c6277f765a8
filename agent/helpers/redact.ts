// Keeping secrets out of what the agent says: shared by the forwarder and the polling core.

/** Said once (per HTTP client, and by the forwarder) where tls_verify = false cannot be honoured. */
export const TLS_WARNING =
  "tls_verify = false cannot be applied by this runtime's fetch; certificates are still verified unless the process runs with --unsafely-ignore-certificate-errors";

/**
 * `text` with each literal secret (and its URL-encoded form) replaced by "***", layout kept.
 * Secrets shorter than 4 characters are left: they protect nothing and would garble the text.
 */
export function replaceSecrets(text: string, secrets: Iterable<string | undefined | null>): string {
  let s = text;
  const list = [...new Set([...secrets].filter((x): x is string => typeof x === "string" && x.length >= 4))];
  list.sort((a, b) => b.length - a.length);
  for (const secret of list) {
    s = s.split(secret).join("***");
    const encoded = encodeURIComponent(secret);
    if (encoded !== secret) s = s.split(encoded).join("***");
  }
  return s;
}
