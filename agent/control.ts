// The localhost control server (Hono): status, metrics, input control, reload, shutdown, hand
// submissions, live capture (tap) and the web console.
// - Every request must name this server in its Host header (no DNS rebinding).
// - Everything but /health, /metrics, the console's page and assets and /login needs either the
//   bearer token (scripts, the CLI) or a console session cookie; a session's state-changing
//   requests also need its CSRF token.
import { createHash, timingSafeEqual } from "node:crypto";
import { Hono, type Context } from "hono";
import { bodyLimit } from "hono/body-limit";
import { getCookie, setCookie } from "hono/cookie";
import { streamSSE } from "hono/streaming";
import type { ConsoleAsset } from "./console/assets.ts";
import { allowedHostNames, hostAllowed } from "./console/hosts.ts";
import { ConsoleSessions, LOGIN_CODE_TTL_MS, sameSecret, type ConsoleSession } from "./console/sessions.ts";
import { TAP_DEFAULTS, type TapSubscription } from "./tap.ts";
import { ConfigError } from "./config.ts";
import { InputError } from "./plugin.ts";
import { SpoolClosedError } from "./spool/index.ts";
import { UnknownInputError, type ReloadResult } from "./supervisor.ts";
import { errorMessage } from "./errortext.ts";

export interface ControlApi {
  health(): { problems: string[] };
  status(): unknown;
  metrics(): string;
  inputAction(name: string, action: "start" | "stop" | "restart"): Promise<void>;
  reload(): Promise<ReloadResult>;
  shutdown(): void;
  submit(name: string, body: Uint8Array, contentType: string | null): Promise<{ accepted: number }>;
  /** What a submission would make (the same checks as submit), taking nothing. */
  preview(name: string, body: Uint8Array, contentType: string | null): { events: number };
  /** Live capture of these inputs (all when empty); throws UnknownInputError for a name not configured. */
  tap(inputs: string[], ratePerSecond: number): TapSubscription;
}

export interface ControlOptions {
  /** Tokens accepted right now: runningconfig's, and [control] token if set (may change on reload). */
  tokens: () => string[];
  maxBodyBytes: () => number;
  /** The host of control.listen, for the Host header check. */
  listenHost: string;
  /** The port the server listens on (known once it listens). */
  port: () => number;
  /** The console's page and assets by path ("/", "/console/app.js", ...). */
  assets?: Record<string, ConsoleAsset>;
  /** How often /status/stream sends the status (tests shorten it). */
  statusIntervalMs?: number;
}

/** Answers that must not be cached, framed or sniffed; the console's pages run only their own scripts. */
const CONSOLE_HEADERS: Record<string, string> = {
  "content-security-policy": "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
};

/** SSE comment sent when a stream has been quiet this long, so proxies and idle timers keep it. */
const KEEPALIVE_MS = 15_000;

function digest(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

/** Constant-time comparison: both sides hashed to equal length first. */
export function tokenMatches(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

/** What a request carries between middleware and handlers: its console session (none for bearer-token requests). */
type ControlEnv = { Variables: { session: ConsoleSession | undefined } };

export function controlApp(api: ControlApi, opts: ControlOptions): Hono<ControlEnv> {
  const app = new Hono<ControlEnv>();
  const sessions = new ConsoleSessions();
  const hostNames = allowedHostNames(opts.listenHost);
  // Cookies are shared by every port of a host: the port in the name keeps two agents apart.
  const cookieName = () => `cybexp_console_${opts.port()}`;

  app.use("*", async (c, next) => {
    if (!hostAllowed(c.req.header("host"), hostNames, opts.port())) {
      return c.json({ error: `refused: Host ${JSON.stringify(c.req.header("host") ?? "")} is not this agent's address` }, 421);
    }
    await next();
  });

  app.get("/health", (c) => {
    const { problems } = api.health();
    return problems.length ? c.json({ status: "degraded", problems }, 503) : c.json({ status: "ok" });
  });

  app.get("/metrics", (c) =>
    c.body(api.metrics(), 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }),
  );

  // The console's page and assets carry no data: the page asks /console/session and shows how
  // to log in when there is none.
  for (const [path, asset] of Object.entries(opts.assets ?? {})) {
    app.get(path, (c) => c.body(asset.body, 200, { ...CONSOLE_HEADERS, "content-type": asset.type }));
  }

  // Browsers ask for it on their own; an empty answer keeps their consoles free of a 404.
  app.get("/favicon.ico", (c) => c.body(null, 204));

  app.get("/login", (c) => {
    const session = sessions.redeem(c.req.query("code") ?? "");
    if (!session) {
      return c.html(loginRefusedPage(), 401, CONSOLE_HEADERS);
    }
    setCookie(c, cookieName(), session.id, { httpOnly: true, sameSite: "Strict", path: "/" });
    return c.redirect("/", 303);
  });

  app.use("*", async (c, next) => {
    const header = c.req.header("authorization");
    if (header !== undefined) {
      const m = /^Bearer\s+(.+)$/i.exec(header);
      const given = m?.[1]!.trim() ?? "";
      // compare against every token so the time taken does not depend on which one matched
      const ok = opts.tokens().map((t) => tokenMatches(given, t)).includes(true);
      if (m && ok) return next();
    } else {
      const session = sessions.find(getCookie(c, cookieName()));
      if (session) {
        if (c.req.method !== "GET" && c.req.method !== "HEAD" && !sameSecret(c.req.header("x-csrf-token") ?? "", session.csrf)) {
          return c.json({ error: "missing or wrong X-CSRF-Token for this console session" }, 403);
        }
        c.set("session", session);
        return next();
      }
    }
    return c.json({ error: "missing or invalid bearer token, and no console session (run: cybexp-agent console)" }, 401, {
      "www-authenticate": 'Bearer realm="cybexp-agent"',
    });
  });

  app.get("/console/session", (c) => {
    const session = c.get("session");
    if (!session) return c.json({ error: "no console session: bearer tokens do not open one" }, 400);
    const status = api.status() as { agent: { version: string; hostname: string } };
    return c.json({ csrf: session.csrf, version: status.agent.version, hostname: status.agent.hostname }, 200, CONSOLE_HEADERS);
  });

  app.post("/console/logout", (c) => {
    const session = c.get("session");
    if (session) sessions.end(session.id);
    setCookie(c, cookieName(), "", { httpOnly: true, sameSite: "Strict", path: "/", maxAge: 0 });
    return c.json({ ok: true });
  });

  // A one-time login code for `cybexp-agent console` (bearer token only: a session cannot mint more).
  app.post("/console/login-code", (c) => {
    if (c.get("session")) return c.json({ error: "login codes are issued to the token holder only" }, 403);
    const code = sessions.issueCode();
    const host = loopbackOrListenHost(opts.listenHost);
    return c.json({ code, url: `http://${host}:${opts.port()}/login?code=${code}`, expires_in_s: LOGIN_CODE_TTL_MS / 1000 });
  });

  app.get("/status/stream", (c) =>
    streamSSE(c, async (stream) => {
      const every = opts.statusIntervalMs ?? 1000;
      while (!stream.aborted && !stream.closed) {
        await stream.writeSSE({ event: "status", data: JSON.stringify(api.status()) });
        await stream.sleep(every);
      }
    }),
  );

  app.get("/tap", (c) => {
    const inputs = c.req.queries("input") ?? [];
    const rateText = c.req.query("rate");
    const rate = rateText === undefined ? TAP_DEFAULTS.ratePerSecond : Number(rateText);
    if (!Number.isInteger(rate) || rate < 1 || rate > TAP_DEFAULTS.maxRatePerSecond) {
      return c.json({ error: `rate must be a whole number of events a second from 1 to ${TAP_DEFAULTS.maxRatePerSecond}` }, 400);
    }
    const sub = api.tap(inputs, rate);
    return streamTap(c, sub);
  });

  app.get("/status", (c) => c.json(api.status()));

  app.post("/inputs/:name/:action{start|stop|restart}", async (c) => {
    const name = c.req.param("name");
    const action = c.req.param("action") as "start" | "stop" | "restart";
    await api.inputAction(name, action);
    return c.json({ input: name, action, ok: true });
  });

  app.post("/reload", async (c) => c.json({ ok: true, ...(await api.reload()) }));

  app.post("/shutdown", (c) => {
    // Answer first; the process winds down right after.
    setTimeout(() => api.shutdown(), 10);
    return c.json({ ok: true, shutting_down: true });
  });

  app.post(
    "/inputs/:name/events",
    (c, next) =>
      bodyLimit({
        maxSize: opts.maxBodyBytes(),
        onError: (c) => c.json({ error: `request body larger than ${opts.maxBodyBytes()} bytes` }, 413),
      })(c, next),
    async (c) => {
      const body = new Uint8Array(await c.req.arrayBuffer());
      const contentType = c.req.header("content-type") ?? null;
      const preview = c.req.query("preview");
      if (preview !== undefined && preview !== "0" && preview !== "false") return c.json(api.preview(c.req.param("name"), body, contentType));
      const result = await api.submit(c.req.param("name"), body, contentType);
      return c.json(result, 202);
    },
  );

  app.notFound((c) => c.json({ error: `no such endpoint: ${c.req.method} ${c.req.path}` }, 404));

  app.onError((err, c) => {
    if (err instanceof UnknownInputError) return c.json({ error: err.message }, 404);
    if (err instanceof ConfigError) return c.json({ error: "invalid configuration; nothing changed", problems: err.problems }, 400);
    if (err instanceof InputError) {
      if (err.retryAfterS !== undefined) c.header("Retry-After", String(err.retryAfterS));
      return c.json({ error: err.message }, err.status as 400);
    }
    // Shutting down while a submission waited: nothing was taken, and it can be sent again.
    if (err instanceof SpoolClosedError) {
      c.header("Retry-After", "5");
      return c.json({ error: "the agent is stopping; nothing of this submission was taken" }, 503);
    }
    return c.json({ error: errorMessage(err) }, 500);
  });

  return app;
}

/**
 * The tap as server-sent events: one message per sampled event, a `skipped` event once a second
 * while sampling or a slow reader left some out, a comment when nothing else was sent for a while.
 */
function streamTap(c: Context<ControlEnv>, sub: TapSubscription): Response {
  return streamSSE(c, async (stream) => {
    stream.onAbort(() => sub.close());
    // Something at once, so that the answer's head goes out before the first event.
    await stream.write(`: tapping ${sub.options.inputs.length ? sub.options.inputs.join(", ") : "every input"} at ${sub.options.ratePerSecond} events/s at most\n\n`);
    let lastSent = Date.now(), lastSkipNotice = Date.now();
    try {
      while (!stream.aborted && !stream.closed && !sub.closed) {
        await sub.next(1000);
        const messages = sub.drain();
        if (messages.length) {
          await stream.write(messages.map((m) => `data: ${JSON.stringify(m)}\n\n`).join(""));
          lastSent = Date.now();
        }
        const now = Date.now();
        if (now - lastSkipNotice >= 1000) {
          lastSkipNotice = now;
          const skipped = sub.takeSkipped();
          if (skipped) {
            await stream.writeSSE({ event: "skipped", data: JSON.stringify({ skipped }) });
            lastSent = now;
          }
        }
        if (now - lastSent >= KEEPALIVE_MS) {
          await stream.write(": keepalive\n\n");
          lastSent = now;
        }
      }
    } finally {
      sub.close();
    }
  });
}

/** Where a browser on this machine reaches the server: 127.0.0.1 when listening on every address. */
function loopbackOrListenHost(listenHost: string): string {
  if (listenHost === "0.0.0.0" || listenHost === "" ) return "127.0.0.1";
  if (listenHost === "::") return "[::1]";
  return listenHost.includes(":") ? `[${listenHost}]` : listenHost;
}

function loginRefusedPage(): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>cybexp-agent: login link not valid</title></head>
<body><h1>This login link is not valid</h1>
<p>A login link works once, for ${LOGIN_CODE_TTL_MS / 60_000} minutes. Run <code>cybexp-agent console</code> on this host again and open the link it prints.</p></body></html>`;
}
