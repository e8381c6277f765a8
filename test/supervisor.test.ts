import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { z } from "zod";
import { parseConfig } from "../agent/config.ts";
import { silentLogger, createLogger } from "../agent/log.ts";
import { defineInput, FatalInputError, type InputPlugin } from "../agent/plugin.ts";
import { Spool } from "../agent/spool/index.ts";
import { StateStore } from "../agent/state.ts";
import { Supervisor, UnknownInputError } from "../agent/supervisor.ts";
import { until } from "./testing/until.ts";

// Test input types: real plugins run by the real supervisor, with behaviour the tests control.
const runs = new Map<string, number>();
const ticker = defineInput({
  type: "ticker",
  description: "emits one event per run and then waits for stop",
  options: z.object({ fail_times: z.number().default(0), fatal: z.boolean().default(false), label: z.string().default("") }).strict(),
  create(opts, ctx) {
    return {
      async run() {
        const n = (runs.get(ctx.name) ?? 0) + 1;
        runs.set(ctx.name, n);
        if (opts.fatal) throw new FatalInputError("the source rejected the key");
        if (n <= opts.fail_times) throw new Error(`boom ${n}`);
        await ctx.emitText([`${ctx.name} run ${n}`]);
        await ctx.checkpoint({ runs: n });
        if (!ctx.signal.aborted) await new Promise<void>((r) => ctx.signal.addEventListener("abort", () => r(), { once: true }));
      },
    };
  },
});
const plugins = { ticker } as unknown as Record<string, InputPlugin>;

function inputs(toml: string) {
  return parseConfig(`[api]\nurl = "http://127.0.0.1:9"\ntoken = "t"\norgid = "o"\n${toml}`, "/x.toml", plugins, {}).inputs;
}


describe("supervisor", () => {
  let dir: string, spool: Spool, state: StateStore;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "sup-"));
    spool = await Spool.open({ dir: join(dir, "spool"), maxBytes: 1 << 24, whenFull: "block", fsync: 20, log: silentLogger });
    state = new StateStore(join(dir, "state"));
  });
  after(async () => {
    await spool.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const make = () => new Supervisor({ spool, state, plugins, log: process.env.DBG ? createLogger("debug") : silentLogger, hostname: "h", restart: { baseMs: 20, capMs: 40 } });

  test("a failing input is restarted with backoff, counted, then runs", async () => {
    const sup = make();
    const seen = new Set<string>();
    await sup.apply(inputs(`[inputs.flaky]\ntype = "ticker"\ntypetag = "t"\nfail_times = 3\n`));
    await until(() => {
      const s = sup.status()[0]!;
      seen.add(s.state);
      return s.state === "running" && s.events === 1;
    }, "the input to run after its failures");
    const s = sup.status()[0]!;
    assert.ok(seen.has("backoff"), "the input went through backoff");
    assert.equal(s.restarts, 3);
    assert.equal(s.errors, 3);
    assert.equal(s.last_error, "boom 3");
    await sup.stopAll();
    assert.equal(sup.status()[0]!.state, "stopped");
    assert.deepEqual(await state.load("flaky"), { runs: 4 });
  });

  test("a fatal error marks the input failed without a restart loop", async () => {
    const sup = make();
    await sup.apply(inputs(`[inputs.badkey]\ntype = "ticker"\ntypetag = "t"\nfatal = true\n`));
    await until(() => sup.status()[0]!.state === "failed", "failed state");
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(sup.status()[0]!.restarts, 0);
    assert.equal(runs.get("badkey"), 1);
    assert.equal(sup.status()[0]!.last_error, "the source rejected the key");
    await sup.stopAll();
  });

  test("reload applies the difference only", async () => {
    const sup = make();
    await sup.apply(
      inputs(
        `[inputs.keep]\ntype = "ticker"\ntypetag = "t"\n[inputs.change]\ntype = "ticker"\ntypetag = "t"\n` +
          `[inputs.remove]\ntype = "ticker"\ntypetag = "t"\n[inputs.off]\ntype = "ticker"\ntypetag = "t"\nenabled = false\n`,
      ),
    );
    await until(() => sup.status().filter((s) => s.state === "running").length === 3, "three running inputs");
    const keepInstance = sup.instance("keep");
    const changeInstance = sup.instance("change");
    assert.equal(sup.status().find((s) => s.name === "off")!.state, "disabled");

    const result = await sup.apply(
      inputs(
        `[inputs.keep]\ntype = "ticker"\ntypetag = "t"\n[inputs.change]\ntype = "ticker"\ntypetag = "t"\nlabel = "v2"\n` +
          `[inputs.off]\ntype = "ticker"\ntypetag = "t"\n[inputs.fresh]\ntype = "ticker"\ntypetag = "t"\n`,
      ),
    );
    assert.deepEqual(result.unchanged, ["keep"]);
    assert.deepEqual(result.restarted, ["change"]);
    assert.deepEqual(result.stopped, ["remove"]);
    assert.deepEqual(result.started.sort(), ["fresh", "off"]);
    await until(() => sup.status().filter((s) => s.state === "running").length === 4, "four running inputs");
    assert.equal(sup.instance("keep"), keepInstance, "an unchanged input is not touched");
    assert.notEqual(sup.instance("change"), changeInstance, "a changed input runs anew");
    assert.equal(sup.has("remove"), false);
    await sup.stopAll();
  });

  test("inputs start, stop and restart by name", async () => {
    const sup = make();
    await sup.apply(inputs(`[inputs.one]\ntype = "ticker"\ntypetag = "t"\n`));
    await until(() => sup.status()[0]!.state === "running", "running");
    await sup.stop("one");
    assert.equal(sup.status()[0]!.state, "stopped");
    sup.start("one");
    await until(() => sup.status()[0]!.state === "running", "running again");
    const before = runs.get("one")!;
    await sup.restart("one");
    await until(() => runs.get("one") === before + 1, "a new run");
    assert.throws(() => sup.start("nope"), UnknownInputError);
    await assert.rejects(sup.stop("nope"), UnknownInputError);
    await sup.stopAll();
  });
});
