// What a failed fetch means, in the agent's words. Bun and Deno word the same failure
// differently ("ECONNREFUSED: Unable to connect. Is the computer able to access the url?",
// "error sending request for url (...): client error (Connect): tcp connect error: Connection
// refused (os error 111)"); an operator wants the address and the cause, the same on both.
//
//   networkErrorText(err, "http://127.0.0.1:5000/raw")
//     -> "cannot connect to 127.0.0.1:5000: connection refused"
//
// And why a socket could not bind, for listeners: listenErrorCause(err) -> "address already in use".

/** `host:port` of a URL, with the scheme's default port when the URL names none. */
export function hostPort(url: string | URL): string {
  let u: URL;
  try {
    u = typeof url === "string" ? new URL(url) : url;
  } catch {
    return String(url);
  }
  const port = u.port || (u.protocol === "https:" || u.protocol === "wss:" ? "443" : u.protocol === "http:" || u.protocol === "ws:" ? "80" : "");
  return port ? `${u.hostname}:${port}` : u.hostname;
}

interface Cause {
  /** True when the failure came before a connection stood (the text then says "cannot connect"). */
  connecting: boolean;
  text: string;
}

// Codes Bun and Node put on the error; Deno only has text, matched after them.
const BY_CODE: Record<string, Cause> = {
  ECONNREFUSED: { connecting: true, text: "connection refused" },
  ENOTFOUND: { connecting: true, text: "host name not found" },
  EAI_AGAIN: { connecting: true, text: "host name lookup failed (temporary DNS failure)" },
  ETIMEDOUT: { connecting: true, text: "connection timed out" },
  EHOSTUNREACH: { connecting: true, text: "host unreachable" },
  ENETUNREACH: { connecting: true, text: "network unreachable" },
  ECONNRESET: { connecting: false, text: "closed before an answer" },
  EPIPE: { connecting: false, text: "closed before an answer" },
  UND_ERR_SOCKET: { connecting: false, text: "closed before an answer" },
};

const BY_TEXT: Array<[RegExp, Cause | ((m: RegExpMatchArray) => Cause)]> = [
  [/connection refused|ECONNREFUSED/i, BY_CODE.ECONNREFUSED!],
  [/dns error|failed to lookup address|name or service not known|ENOTFOUND|no such host/i, BY_CODE.ENOTFOUND!],
  [/temporary failure in name resolution|EAI_AGAIN/i, BY_CODE.EAI_AGAIN!],
  [/no route to host|host is unreachable|EHOSTUNREACH/i, BY_CODE.EHOSTUNREACH!],
  [/network is unreachable|ENETUNREACH/i, BY_CODE.ENETUNREACH!],
  [/invalid peer certificate:?\s*([^\s)]+)?/i, (m) => ({ connecting: true, text: `TLS certificate not accepted${m[1] ? ` (${m[1]})` : ""}` })],
  [/tls handshake eof|handshake/i, { connecting: true, text: "the TLS handshake failed (is it a TLS server?)" }],
  [/connection closed before message completed|connection reset|socket connection was closed|ECONNRESET|broken pipe/i, BY_CODE.ECONNRESET!],
  [/timed out|ETIMEDOUT/i, BY_CODE.ETIMEDOUT!],
  [/requests to port (\d+) are blocked/i, (m) => ({ connecting: true, text: `the runtime refuses requests to port ${m[1]}` })],
];

/** Certificate trouble as Bun / Node name it (the code is clearer than the message). */
function certificateCause(code: string, message: string): Cause | undefined {
  if (!/CERT|UNABLE_TO_VERIFY|SELF_SIGNED|ERR_TLS|ERR_SSL/.test(code)) return undefined;
  const what = message.replace(/^[A-Z_]+:\s*/, "").trim() || code;
  return { connecting: true, text: `TLS certificate not accepted (${what})` };
}

/** Every message along the error's `cause` chain (Deno puts the real one in `cause`). */
function messages(err: unknown): { codes: string[]; texts: string[] } {
  const codes: string[] = [];
  const texts: string[] = [];
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    if (typeof e === "object") {
      const o = e as { code?: unknown; message?: unknown; cause?: unknown };
      if (typeof o.code === "string") codes.push(o.code);
      if (typeof o.message === "string" && o.message) texts.push(o.message);
      e = o.cause;
    } else {
      texts.push(String(e));
      break;
    }
  }
  return { codes, texts };
}

/** A runtime's message without its advice and framing (Bun's "Is the computer able ...", Deno's "error sending request for url (...)"). */
export function withoutRuntimeWords(text: string): string {
  return text
    .replace(/\s*Is the computer able to access the url\?/i, "")
    .replace(/\s*For more information, pass `verbose: true`.*$/i, "")
    .replace(/^error sending request (?:from \S+ )?for (?:url )?\(?\S+?\)?(?: \([^)]*\))?: /i, "")
    .replace(/^client error \([^)]*\): /i, "")
    .replace(/^E[A-Z]+: (?=\S)/, "")
    .trim();
}

/** The runtime's own words for a failure none of the rules knows. */
function cleaned(texts: string[]): string {
  const own = texts.filter((t) => !/^fetch failed$/i.test(t.trim()));
  return withoutRuntimeWords(own.at(-1) ?? texts.at(-1) ?? "") || "network error";
}

/** The agent's one line for a request that got no answer: address and cause, e.g. "cannot connect to 127.0.0.1:5000: connection refused". */
export function networkErrorText(err: unknown, url: string | URL): string {
  const where = hostPort(url);
  const { codes, texts } = messages(err);
  let cause: Cause | undefined;
  for (const code of codes) {
    cause = BY_CODE[code] ?? certificateCause(code, texts[0] ?? "");
    if (cause) break;
  }
  if (!cause) {
    const all = texts.join(" | ");
    for (const [re, c] of BY_TEXT) {
      const m = all.match(re);
      if (m) {
        cause = typeof c === "function" ? c(m) : c;
        break;
      }
    }
  }
  if (!cause) return `cannot connect to ${where}: ${cleaned(texts)}`;
  return cause.connecting ? `cannot connect to ${where}: ${cause.text}` : `connection to ${where} ${cause.text}`;
}

const LISTEN_CAUSES: Record<string, string> = {
  EADDRINUSE: "address already in use",
  EACCES: "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
  EPERM: "permission denied",
  EADDRNOTAVAIL: "address not available on this host",
  ENOTFOUND: "host name not found",
  EAI_AGAIN: "host name lookup failed (temporary DNS failure)",
};

/** Why a socket could not bind, in words: "address already in use" rather than "EADDRINUSE". */
export function listenErrorCause(err: unknown): string {
  const { codes, texts } = messages(err);
  for (const code of codes) if (LISTEN_CAUSES[code]) return LISTEN_CAUSES[code]!;
  const all = texts.join(" | ");
  for (const [code, text] of Object.entries(LISTEN_CAUSES)) if (all.includes(code)) return text;
  if (/address already in use|addrinuse/i.test(all)) return LISTEN_CAUSES.EADDRINUSE!;
  if (/permission denied/i.test(all)) return LISTEN_CAUSES.EACCES!;
  return texts[0] ?? String(err);
}
