// The localhost control server (Hono): status, metrics, input control, reload, shutdown and
// hand submissions. Everything but /health and /metrics needs the bearer token.
import { createHash, timingSafeEqual } from "node:crypto";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
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
}

export interface ControlOptions {
  /** Tokens accepted right now: runningconfig's, and [control] token if set (may change on reload). */
  tokens: () => string[];
  maxBodyBytes: () => number;
}

function digest(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

/** Constant-time comparison: both sides hashed to equal length first. */
export function tokenMatches(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

export function controlApp(api: ControlApi, opts: ControlOptions): Hono {
  const app = new Hono();

  app.get("/health", (c) => {
    const { problems } = api.health();
    return problems.length ? c.json({ status: "degraded", problems }, 503) : c.json({ status: "ok" });
  });

  app.get("/metrics", (c) =>
    c.body(api.metrics(), 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }),
  );

  app.use("*", async (c, next) => {
    const header = c.req.header("authorization") ?? "";
    const m = /^Bearer\s+(.+)$/i.exec(header);
    const given = m?.[1]!.trim() ?? "";
    // compare against every token so the time taken does not depend on which one matched
    const ok = opts.tokens().map((t) => tokenMatches(given, t)).includes(true);
    if (!m || !ok) {
      return c.json({ error: "missing or invalid bearer token" }, 401, { "www-authenticate": 'Bearer realm="cybexp-agent"' });
    }
    await next();
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
      const result = await api.submit(c.req.param("name"), body, c.req.header("content-type") ?? null);
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
