import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import plugin from "./index.ts";
import { InputError } from "../../agent/plugin.ts";
import { Spool } from "../../agent/spool.ts";
import { StateStore } from "../../agent/state.ts";
import { createInputContext } from "../../agent/context.ts";
import { silentLogger } from "../../agent/log.ts";
import { drainSpool, runInput } from "../../test/plugin-harness.ts";

const enc = (s: string) => new TextEncoder().encode(s);

async function withManualInput(raw: Record<string, unknown>, fn: (env: {
  input: ReturnType<typeof plugin.create>;
  spool: Spool;
  events: () => Array<{ kind: string; event: string }>;
  stop: () => Promise<void>;
}) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), "manual-input-"));
  // A one-minute fsync interval: only the submit's own sync makes its events durable at once.
  const spool = await Spool.open({ dir: join(dir, "spool"), maxBytes: 64 << 20, whenFull: "block", fsync: 60_000, log: silentLogger });
  let input!: ReturnType<typeof plugin.create>;
  const { stop } = runInput((signal) => {
    const ctx = createInputContext({
      name: "hand", spool, state: new StateStore(join(dir, "state")), route: "hand",
      log: silentLogger, signal, hostname: "test",
    });
    input = plugin.create(plugin.options.parse(raw), ctx);
    return input.run();
  });
  // the events handed over since the last call
  const events = () => drainSpool(spool, []);
  try {
    await fn({ input, spool, events, stop });
  } finally {
    await stop();
    await spool.close();
    await rm(dir, { recursive: true, force: true });
  }
}

test("options: max_body_bytes defaults to 10MiB, full_wait to 10s, unknown keys are refused", () => {
  assert.equal(plugin.type, "manual");
  assert.deepEqual(plugin.options.parse({}), { max_body_bytes: 10 * 1024 * 1024, full_wait: 10_000 });
  assert.equal(plugin.options.parse({ max_body_bytes: "1KiB" }).max_body_bytes, 1024);
  assert.equal(plugin.options.safeParse({ paths: ["x"] }).success, false);
});

test("submissions of each shape are spooled as their events", async () => {
  await withManualInput({}, async ({ input, events }) => {
    assert.deepEqual(await input.submit!(enc('{"indicator":"1.2.3.4","type":"ip"}'), "application/json"), { accepted: 1 });
    assert.deepEqual(await input.submit!(enc('{"a":1}\n{"b":2}\n'), "application/x-ndjson"), { accepted: 2 });
    assert.deepEqual(await input.submit!(enc("evil.example\r\nbad.example\r\n"), null), { accepted: 2 });
    assert.deepEqual(events(), [
      { kind: "json", event: '{"indicator":"1.2.3.4","type":"ip"}' },
      { kind: "json", event: '{"a":1}' },
      { kind: "json", event: '{"b":2}' },
      { kind: "text", event: "evil.example" },
      { kind: "text", event: "bad.example" },
    ]);
  });
});

test("the answer comes only once the events are durable", async () => {
  await withManualInput({}, async ({ input, spool }) => {
    await input.submit!(enc('[{"a":1},{"a":2}]'), "application/json");
    // With a one-minute fsync interval, only a sync append explains an already durable spool.
    let settled = false;
    void spool.whenDurable().then(() => { settled = true; });
    await new Promise((r) => setTimeout(r, 0));
    assert.ok(settled);
  });
});

test("a bad body is refused whole: nothing of it is spooled", async () => {
  await withManualInput({}, async ({ input, events }) => {
    await assert.rejects(input.submit!(enc('{"a":1}\n{"b":2}\n{"c":'), "application/x-ndjson"),
      (err: unknown) => err instanceof InputError && err.status === 400 && /^line 3: /.test(err.message));
    await assert.rejects(input.submit!(enc(""), "text/plain"), (err: unknown) => err instanceof InputError && err.status === 400);
    assert.deepEqual(events(), []);
  });
});

test("a body over max_body_bytes is refused with 413", async () => {
  await withManualInput({ max_body_bytes: 100 }, async ({ input, events }) => {
    await assert.rejects(input.submit!(enc("x".repeat(101)), "text/plain"),
      (err: unknown) => err instanceof InputError && err.status === 413 && /max_body_bytes/.test(err.message));
    assert.deepEqual(await input.submit!(enc("y".repeat(100)), "text/plain"), { accepted: 1 });
    assert.equal(events().length, 1);
  });
});

test("run() returns when the input is stopped; a stopped input takes nothing", async () => {
  await withManualInput({}, async ({ input, stop, events }) => {
    await stop();
    await assert.rejects(input.submit!(enc("x"), "text/plain"), (err: unknown) => err instanceof InputError && err.status === 503);
    assert.deepEqual(events(), []);
  });
});
