// Plugin tests: run an input against the real spool, and read back every event it handed over.
//
//   await withInputEnv(plugin, { name: "op" }, async (env) => {
//     const input = env.start({ url: `${srv.base}/feed.txt`, interval: "100ms" });
//     ...
//     assert.deepEqual(env.events(), [...]);
//     await input.stop();                   // stopped, its last state saved
//     env.start({ ... });                   // a restart: a new instance on the same state
//   });
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInputContext, type CoreInputContext } from "../../agent/context.ts";
import { createLogger, silentLogger } from "../../agent/log.ts";
import { FatalInputError, type InputPlugin } from "../../agent/plugin.ts";
import { Spool } from "../../agent/spool/index.ts";
import { StateStore } from "../../agent/state.ts";
import { until } from "./until.ts";

export interface SpooledEvent {
  kind: string;
  event: string;
}

/** Moves every unread spool record into `into` (one entry per event) and acks it. */
export function drainSpool(spool: Spool, into: SpooledEvent[]): SpooledEvent[] {
  for (;;) {
    const recs = spool.read(64 << 20);
    if (recs.length === 0) return into;
    for (const r of recs) {
      const body = new TextDecoder().decode(r.payload);
      for (const e of body.split("\n").slice(0, -1)) into.push({ kind: r.kind, event: e });
      spool.ack(r.id);
    }
  }
}

/**
 * Runs an input until the returned stop() (idempotent) aborts it and waits for run() to return.
 * `run` receives the abort signal to build its context with.
 */
export function runInput(run: (signal: AbortSignal) => Promise<void>): { stop: () => Promise<void>; done: Promise<void> } {
  const ac = new AbortController();
  const done = run(ac.signal);
  let stopping: Promise<void> | undefined;
  return { done, stop: () => (stopping ??= (ac.abort(), done)) };
}

// ---- an input on a real spool and state store ---------------------------------------------

/** One instance of the input under test. */
export interface RunningInput {
  ctx: CoreInputContext;
  /**
   * Resolves when run() returns; rejects with its failure. A test that reads `done` expects
   * the failure; an instance whose `done` was never read fails the test if run() failed.
   */
  readonly done: Promise<void>;
  /** This instance's log lines (JSON text, from debug up). */
  logs: string[];
  /** Polls finished so far, successful or not (the poll loop showed its next poll time after polling). */
  finished(): number;
  /** Stops the instance: resolves once run() returned (rejects with its failure) and its last state is saved. */
  stop(): Promise<void>;
}

export interface InputTestEnvOptions {
  /** The input's name (its state file and spool route). */
  name: string;
  /** The spool's fsync interval in ms (checkpoints wait for it). Default 20. */
  fsyncMs?: number;
}

/** A temp dir with a spool and a state directory, and inputs of one plugin started on them. */
export class InputTestEnv {
  /** Every log line of every instance started here (JSON text). */
  readonly logs: string[] = [];
  private readonly running: Array<{ input: RunningInput; failureExpected: () => boolean }> = [];

  private constructor(
    private readonly plugin: InputPlugin<any>,
    private readonly name: string,
    readonly dir: string,
    readonly spool: Spool,
  ) {}

  static async create(plugin: InputPlugin<any>, opts: InputTestEnvOptions): Promise<InputTestEnv> {
    const dir = await mkdtemp(join(tmpdir(), `${plugin.type}-input-`));
    const spool = await Spool.open({ dir: join(dir, "spool"), maxBytes: 64 << 20, whenFull: "block", fsync: opts.fsyncMs ?? 20, log: silentLogger });
    return new InputTestEnv(plugin, opts.name, dir, spool);
  }

  /** The input's state file in this env. */
  get stateFile(): string {
    return join(this.dir, "state", `${this.name}.json`);
  }

  /**
   * For each [state, key]: with that state saved, an instance started with `raw` fails with a
   * FatalInputError naming the state file and the key (a wrong-shaped state is never ignored).
   */
  async expectStateRefused(bads: Array<[unknown, string]>, raw: Record<string, unknown>): Promise<void> {
    await mkdir(join(this.dir, "state"), { recursive: true });
    for (const [bad, key] of bads) {
      await writeFile(this.stateFile, JSON.stringify(bad));
      const input = this.start(raw);
      let outcome: unknown = "running";
      input.done.then(() => (outcome = "returned"), (err: unknown) => (outcome = err));
      await until(() => outcome !== "running", `run() to end with state ${JSON.stringify(bad)}`);
      assert.ok(outcome instanceof FatalInputError, `state ${JSON.stringify(bad)}: ${String(outcome)}`);
      assert.ok(outcome.message.includes(this.stateFile) && outcome.message.includes(key), outcome.message);
    }
  }

  /** Starts an instance with these options (parsed by the plugin's schema) on this env's spool and state. */
  start(raw: Record<string, unknown>): RunningInput {
    const logs: string[] = [];
    const log = createLogger("debug", {
      write: (line) => {
        logs.push(line);
        this.logs.push(line);
      },
    });
    let finished = 0;
    let ctx!: CoreInputContext;
    const { stop, done } = runInput((signal) => {
      ctx = createInputContext({ name: this.name, spool: this.spool, state: new StateStore(join(this.dir, "state")), route: this.name, log, signal, hostname: "test", stateSchema: this.plugin.state });
      const setDetail = ctx.setDetail;
      ctx.setDetail = (d) => {
        setDetail(d);
        if (d.next_poll !== null && d.last_poll !== null && d.next_poll !== undefined && d.last_poll !== undefined) finished++;
      };
      return this.plugin.create(this.plugin.options.parse(raw), ctx).run().finally(() => ctx.runReturned());
    });
    let doneRead = false;
    const input: RunningInput = {
      ctx,
      get done() {
        doneRead = true;
        return done;
      },
      logs,
      finished: () => finished,
      stop: async () => {
        try {
          await stop();
        } finally {
          await ctx.settled();
        }
      },
    };
    this.running.push({ input, failureExpected: () => doneRead });
    return input;
  }

  /** The events spooled since the last call. */
  events(): SpooledEvent[] {
    return drainSpool(this.spool, []);
  }

  /** The events spooled since the last call, each checked to be a JSON event on one line. */
  jsonLines(): string[] {
    return this.events().map(({ kind, event }) => {
      assert.equal(kind, "json");
      assert.ok(!event.includes("\n"));
      return event;
    });
  }

  /**
   * Stops every instance and removes the temp dir; then rejects with the first failure of an
   * instance whose `done` the test never read.
   */
  async close(): Promise<void> {
    const unexpected: unknown[] = [];
    for (const { input, failureExpected } of this.running) {
      await input.stop().catch((err) => {
        if (!failureExpected()) unexpected.push(err);
      });
    }
    await this.spool.close();
    await rm(this.dir, { recursive: true, force: true });
    if (unexpected.length > 0) throw unexpected[0];
  }
}

/** Runs `fn` with a fresh InputTestEnv, closed afterwards whatever happens (fn's own failure comes first). */
export async function withInputEnv(plugin: InputPlugin<any>, opts: InputTestEnvOptions, fn: (env: InputTestEnv) => Promise<void>): Promise<void> {
  const env = await InputTestEnv.create(plugin, opts);
  try {
    await fn(env);
  } catch (err) {
    await env.close().catch(() => {});
    throw err;
  }
  await env.close();
}

// ---- a source server ----------------------------------------------------------------------

/** A request as the test server received it. */
export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  /** The whole body (UTF-8). */
  body: string;
  /** When it was received (epoch ms). */
  at: number;
}

export type HttpHandler = (req: IncomingMessage, res: ServerResponse, seen: RecordedRequest) => void;

export interface TestHttpServer {
  /** http://127.0.0.1:PORT */
  base: string;
  requests: RecordedRequest[];
  /** Answers each request; a test may swap it. */
  handler: HttpHandler;
  close(): Promise<void>;
}

/** A real HTTP server on 127.0.0.1 that records each request (with its body) and then lets `handler` answer. */
export async function serveHttp(handler: HttpHandler): Promise<TestHttpServer> {
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    const at = Date.now();
    const chunks: Uint8Array[] = [];
    req.on("data", (c: Uint8Array) => chunks.push(c));
    req.on("end", () => {
      const seen: RecordedRequest = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks).toString("utf8"), at };
      srv.requests.push(seen);
      srv.handler(req, res, seen);
    });
  });
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const srv: TestHttpServer = {
    base: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    requests: [],
    handler,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  return srv;
}

/** Answers as a static file server does: 304 to a request carrying `etag` (unless null), else 200 with `body`. */
export function answerFile(req: IncomingMessage, res: ServerResponse, body: string | Uint8Array, etag: string | null, contentType: string): void {
  if (etag !== null && req.headers["if-none-match"] === etag) {
    res.writeHead(304, { etag }).end();
    return;
  }
  res.writeHead(200, { "content-type": contentType, ...(etag !== null ? { etag } : {}) }).end(body);
}

/** Waits for request n + 1 (1-based n): a polling input has finished the poll that made request n. */
export async function afterPoll(srv: TestHttpServer, n: number): Promise<void> {
  await until(() => srv.requests.length > n, `request ${n + 1}`);
}
