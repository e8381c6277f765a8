// A minimal HTTP server over whichever runtime we are on: Bun.serve under Bun, Deno.serve
// under Deno. Both take a web-standard fetch handler, so callers stay runtime-neutral.
import { errorMessage } from "./errortext.ts";
import { bunGlobal, denoGlobal } from "./runtime/detect.ts";

export interface Served {
  port: number;
  hostname: string;
  close(): Promise<void>;
}

export interface ServeOptions {
  hostname: string;
  /** 0 = any free port; the chosen one is in Served.port. */
  port: number;
  /** Largest request body accepted (Bun rejects bigger ones itself; Deno has no limit). */
  maxRequestBodySize?: number;
}

export type FetchHandler = (req: Request, info: { remoteAddress: string }) => Response | Promise<Response>;

// Bun's own default (128 MiB) would refuse large uploads before any handler sees them.
const DEFAULT_MAX_BODY = 2 * 1024 ** 3;

export function serve(fetch: FetchHandler, opts: ServeOptions): Promise<Served> {
  const bun = bunGlobal();
  if (bun?.serve) return serveBun(bun, fetch, opts);
  const deno = denoGlobal();
  if (deno?.serve) return serveDeno(deno, fetch, opts);
  return Promise.reject(new Error("no HTTP server available: run under Bun or Deno"));
}

// A handler that throws answers a JSON 500 rather than the runtime's HTML error page.
function internalError(err: unknown): Response {
  return new Response(JSON.stringify({ message: `internal error: ${errorMessage(err)}` }), {
    status: 500,
    headers: { "content-type": "application/json" },
  });
}

function serveBun(bun: any, fetch: FetchHandler, opts: ServeOptions): Promise<Served> {
  const server = bun.serve({
    hostname: opts.hostname,
    port: opts.port,
    maxRequestBodySize: opts.maxRequestBodySize ?? DEFAULT_MAX_BODY,
    // Large uploads from slow clients must not be cut off by Bun's 10 s default.
    idleTimeout: 120,
    fetch(req: Request, srv: any) {
      const ip = srv.requestIP(req);
      return fetch(req, { remoteAddress: ip?.address ?? "" });
    },
    error: internalError,
  });
  let closing: Promise<void> | undefined;
  return Promise.resolve({
    port: server.port as number,
    hostname: opts.hostname,
    close(): Promise<void> {
      // Force-closing drops idle keep-alive connections, which would otherwise hold the
      // process (and a test) open.
      if (!closing) closing = Promise.resolve(server.stop(true)).then(() => undefined);
      return closing;
    },
  });
}

function serveDeno(deno: any, fetch: FetchHandler, opts: ServeOptions): Promise<Served> {
  return new Promise((resolve, reject) => {
    let server: any;
    try {
      server = deno.serve(
        {
          hostname: opts.hostname,
          port: opts.port,
          onListen(addr: { port: number; hostname: string }) {
            let closing: Promise<void> | undefined;
            resolve({
              port: addr.port,
              hostname: opts.hostname,
              close(): Promise<void> {
                if (!closing) closing = Promise.resolve(server.shutdown()).then(() => undefined);
                return closing;
              },
            });
          },
          onError: internalError,
        },
        (req: Request, info: { remoteAddr: { hostname: string } }) =>
          fetch(req, { remoteAddress: info.remoteAddr?.hostname ?? "" }),
      );
    } catch (err) {
      reject(err);
    }
  });
}
