// The input context's side of state: a saved state of the wrong shape fails the input naming
// the file, a checkpoint that meets a full disk waits for room instead of being lost, and a
// checkpoint asked for after the input's run() returned is ignored.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { z } from "zod";
import { parseConfig } from "../agent/config.ts";
import { createInputContext } from "../agent/context.ts";
import { silentLogger } from "../agent/log.ts";
import { defineInput, FatalInputError, type InputPlugin } from "../agent/plugin.ts";
import { Spool } from "../agent/spool/index.ts";
import { StateStore } from "../agent/state.ts";
import { Supervisor } from "../agent/supervisor.ts";
import { cannotMount, mountSmallDisk, type SmallDisk } from "./testing/tmpfs.ts";
import { until } from "./testing/until.ts";

const cleanup: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

async function setup(stateDir?: string) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "context-test-"));
  const spool = await Spool.open({ dir: path.join(dir, "spool"), maxBytes: 1 << 20, whenFull: "block", fsync: 10, log: silentLogger });
  cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }), () => spool.close());
  const state = new StateStore(stateDir ?? path.join(dir, "state"));
  const ac = new AbortController();
  const schema = z.object({ offset: z.number().int().min(0) }).strict();
  const ctx = createInputContext<{ offset: number }>({
    name: "in", spool, state, route: "in", log: silentLogger, signal: ac.signal, hostname: "test", stateSchema: schema,
  });
  return { dir, spool, state, ctx, ac };
}

describe("loadState", () => {
  for (const [what, text] of [
    ["null", "null"],
    ["another shape", '{"files":[]}'],
    ["a negative offset", '{"offset":-5}'],
    ["a string offset", '{"offset":"12"}'],
    ["not JSON", '{"offset":'],
  ] as const) {
    it(`a state file holding ${what} fails the input, naming the file`, async () => {
      const { state, ctx } = await setup();
      fs.mkdirSync(state.dir, { recursive: true });
      fs.writeFileSync(state.fileFor("in"), text);
      await assert.rejects(ctx.loadState(), (err: Error) => {
        assert.ok(err instanceof FatalInputError, `${err.name}: ${err.message}`);
        assert.ok(err.message.includes(state.fileFor("in")), err.message);
        assert.match(err.message, /delete it|delete the file/);
        return true;
      });
    });
  }

  it("a state of the right shape loads; no file is a first run", async () => {
    const { state, ctx } = await setup();
    assert.equal(await ctx.loadState(), undefined);
    await state.save("in", { offset: 42 });
    assert.deepEqual(await ctx.loadState(), { offset: 42 });
  });
});

describe("checkpoints after run() returned", () => {
  it("are ignored: not saved, the promise resolves, nothing counted as an error", async () => {
    const { ctx, state } = await setup();
    await ctx.checkpoint({ offset: 1 });
    ctx.runReturned();
    await ctx.checkpoint({ offset: 2 });
    await ctx.settled();
    assert.deepEqual(await state.load("in"), { offset: 1 });
    assert.equal(ctx.counters.errors, 0);
  });

  it("a poll left running past its stop cannot overwrite the state the next run saved (through the supervisor)", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "context-test-"));
    const spool = await Spool.open({ dir: path.join(dir, "spool"), maxBytes: 1 << 20, whenFull: "block", fsync: 10, log: silentLogger });
    cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }), () => spool.close());
    const state = new StateStore(path.join(dir, "state"));
    let runs = 0;
    let leftover: Promise<void> | undefined;
    // Each run saves its number; at stop it returns at once but leaves work behind that saves
    // its (older) number later, as a poll that ignores its signal does.
    const lingering = defineInput({
      type: "lingering",
      description: "saves its run number; leaves a late checkpoint behind at stop",
      options: z.object({}).strict(),
      state: z.object({ run: z.number() }).strict(),
      create(_opts, ctx) {
        return {
          async run() {
            const run = ++runs;
            await ctx.checkpoint({ run });
            // The stop may come while the checkpoint above is still settling: an aborted signal fires no event.
            if (!ctx.signal.aborted) await new Promise<void>((r) => ctx.signal.addEventListener("abort", () => r(), { once: true }));
            leftover = new Promise<void>((r) => setTimeout(r, 300)).then(() => ctx.checkpoint({ run }));
          },
        };
      },
    });
    const plugins = { lingering } as unknown as Record<string, InputPlugin>;
    const configs = parseConfig(`[api]\nurl = "http://127.0.0.1:9"\ntoken = "t"\norgid = "o"\n[inputs.in]\ntype = "lingering"\ntypetag = "t"\n`, "/x.toml", plugins, {}).inputs;
    const sup = new Supervisor({ spool, state, plugins, log: silentLogger, hostname: "h" });
    await sup.apply(configs);
    await until(async () => (await state.load("in").catch(() => undefined)) !== undefined, "the first run's state");
    await sup.restart("in");
    const lateOfFirstRun = leftover!;
    await until(async () => JSON.stringify(await state.load("in").catch(() => undefined)) === '{"run":2}', "the second run's state");
    await lateOfFirstRun;
    assert.equal(runs, 2);
    assert.deepEqual(await state.load("in"), { run: 2 }, "the first run's late checkpoint was not saved over the second run's state");
    await sup.stopAll();
    await leftover;
  });
});

describe("checkpoints on a full disk", { skip: cannotMount }, () => {
  let disk: SmallDisk;
  it("a checkpoint that meets ENOSPC waits for room and is then saved (a later one supersedes it)", async () => {
    disk = mountSmallDisk(1);
    cleanup.push(() => disk.unmount());
    const { ctx, state } = await setup(path.join(disk.dir, "state"));
    await ctx.checkpoint({ offset: 1 });
    const filler = disk.fill(0);
    let saved = false;
    const first = ctx.checkpoint({ offset: 2 }).then(() => (saved = true));
    const second = ctx.checkpoint({ offset: 3 });
    await new Promise((r) => setTimeout(r, 700));
    assert.equal(saved, false, "no room: not saved, still trying");
    assert.deepEqual(JSON.parse(fs.readFileSync(state.fileFor("in"), "utf8")), { offset: 1 }, "the old state is intact");
    assert.equal(ctx.counters.errors > 0, true, "the wait is visible in the input's errors");
    fs.unlinkSync(filler);
    await first;
    await second;
    await ctx.settled();
    assert.deepEqual(JSON.parse(fs.readFileSync(state.fileFor("in"), "utf8")), { offset: 3 });
  });

  it("a StateStore given a way to free space (the reserve) uses it and saves at once", async () => {
    const small = mountSmallDisk(1);
    cleanup.push(() => small.unmount());
    const reserve = small.fill(0, "reserve");
    let asked = 0;
    const store = new StateStore(path.join(small.dir, "state"), async () => {
      asked++;
      fs.unlinkSync(reserve);
      return true;
    });
    await store.save("k", { offset: 7 });
    assert.equal(asked, 1);
    await until(() => fs.existsSync(store.fileFor("k")), "the state file");
  });
});
