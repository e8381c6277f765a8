// Keeping secrets out of what the agent says: the one home of redaction, for the forwarder,
// the control API and every input (a plugin may import this module).

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

const SECRET_HEADER = /^(authorization|proxy-authorization|cookie|set-cookie)$|api[-_]?key|token|secret|passw|auth|session|cookie|signature/i;

/** Header names whose values are secrets (Authorization, Cookie, X-Api-Key, X-Auth-Token, ...). */
export function isSecretHeaderName(name: string): boolean {
  return SECRET_HEADER.test(name);
}

const SECRET_PARAM =
  /^(key|apikey|api_key|api-key|token|access_token|auth|password|passwd|pwd|pass|secret|client_secret|signature|sig|x-amz-signature|x-amz-credential|x-amz-security-token)$|[_-](key|token|secret|password)$/i;

/** Query parameter names whose values are secrets. */
export function isSecretParamName(name: string): boolean {
  return SECRET_PARAM.test(name);
}

/**
 * The URL with userinfo as "***" and secret-named query values as "***", for messages and
 * logs. A string that is no URL keeps its text, with anything like "//user:pw@" masked.
 */
export function redactUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return url.replace(/\/\/[^/@\s]*@/, "//***@");
  }
  if (u.username || u.password) {
    u.username = "***";
    u.password = "";
  }
  let secretQuery = false;
  for (const k of u.searchParams.keys()) if (isSecretParamName(k)) secretQuery = true;
  if (secretQuery) {
    const params = [...u.searchParams];
    u.search = "";
    for (const [k, v] of params) u.searchParams.append(k, isSecretParamName(k) ? "***" : v);
  }
  return u.toString();
}

const URL_IN_TEXT = /\b[a-z][a-z0-9+.-]*:\/\/[^\s"'<>]+/gi;

/**
 * `text` on one line, safe to show: each literal secret (and its URL-encoded form) replaced
 * by "***", every URL in it redacted (redactUrl). Secrets shorter than 4 characters are not
 * replaced (they would garble the message and protect nothing).
 */
export function redactText(text: string, secrets: Iterable<string | undefined | null> = []): string {
  const s = replaceSecrets(text, secrets).replace(URL_IN_TEXT, (m) => redactUrl(m));
  return s.replace(/\s+/g, " ").trim();
}

/** The URL without userinfo, to send a request without the credentials written in it. */
export function withoutUserinfo(url: string): string {
  try {
    const u = new URL(url);
    u.username = "";
    u.password = "";
    return u.toString();
  } catch {
    return url;
  }
}
