// Test scaffolding for the database input: a real spool and state store in a temp dir, and
// inputs started on them (again after a stop, to check what a restart does).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import plugin from "./index.ts";
import { Spool } from "../../agent/spool.ts";
import { StateStore } from "../../agent/state.ts";
import { createInputContext, type CoreInputContext } from "../../agent/context.ts";
import { createLogger } from "../../agent/log.ts";
import { drainSpool, runInput } from "../../test/plugin-harness.ts";

export interface RunningDatabaseInput {
  ctx: CoreInputContext;
  /** Resolves when run() returns; rejects with its failure. */
  done: Promise<void>;
  /** Stops the input and waits for its last checkpoint. */
  stop(): Promise<void>;
}

export class DatabaseTestEnv {
  /** Every log line of every input started here (JSON text). */
  readonly logs: string[] = [];
  private running: RunningDatabaseInput[] = [];

  private constructor(readonly dir: string, readonly spool: Spool) {}

  static async create(): Promise<DatabaseTestEnv> {
    const dir = await mkdtemp(join(tmpdir(), "database-input-"));
    const spool = await Spool.open({ dir: join(dir, "spool"), maxBytes: 64 << 20, whenFull: "block", fsync: 20, log: createLogger("error", { write() {} }) });
    return new DatabaseTestEnv(dir, spool);
  }

  /** Starts a `database` input named "db" with these options (parsed by the plugin's schema). */
  start(raw: Record<string, unknown>): RunningDatabaseInput {
    const log = createLogger("debug", { write: (line) => void this.logs.push(line) });
    let ctx!: CoreInputContext;
    const { stop, done } = runInput((signal) => {
      ctx = createInputContext({
        name: "db", spool: this.spool, state: new StateStore(join(this.dir, "state")), route: "db",
        log, signal, hostname: "test",
      });
      return plugin.create(plugin.options.parse(raw), ctx).run();
    });
    const r: RunningDatabaseInput = {
      ctx,
      done,
      async stop() {
        await stop().catch(() => {});
        await ctx.settled();
      },
    };
    this.running.push(r);
    return r;
  }

  /** The events spooled since the last call, parsed. */
  events(): Array<Record<string, unknown>> {
    return drainSpool(this.spool, []).map((e) => {
      if (e.kind !== "json") throw new Error(`expected JSON events, got ${e.kind}`);
      return JSON.parse(e.event) as Record<string, unknown>;
    });
  }

  async close(): Promise<void> {
    for (const r of this.running) await r.stop();
    await this.spool.close();
    await rm(this.dir, { recursive: true, force: true });
  }
}
