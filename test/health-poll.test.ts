// What runPolls tells /health through its status detail: `problem` once 3 polls in a row
// failed (not after 2), cleared by a success; `healthy_until` 3 intervals after the start or
// the last success, from a deliberately later first poll; both cleared when the loop stops.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInputContext } from "../agent/context.ts";
import { FAILURES_FOR_PROBLEM, runPolls, type PollFunction, type PollOptions } from "../plugins/common/poll.ts";
import { silentLogger } from "../agent/log.ts";
import { Spool } from "../agent/spool/index.ts";
import { StateStore } from "../agent/state.ts";
import { until } from "./testing/until.ts";

async function withPolls(opts: PollOptions, poll: PollFunction, fn: (detail: () => Record<string, unknown>, stop: () => Promise<void>) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "health-poll-"));
  const spool = await Spool.open({ dir: join(dir, "spool"), maxBytes: 1 << 20, whenFull: "block", fsync: 5, log: silentLogger });
  const ac = new AbortController();
  const ctx = createInputContext({ name: "feed", spool, state: new StateStore(join(dir, "state")), route: "feed", log: silentLogger, signal: ac.signal, hostname: "t" });
  const done = runPolls(ctx, opts, poll);
  const stop = async () => {
    ac.abort();
    await done;
  };
  try {
    await fn(() => ctx.counters.detail, stop);
  } finally {
    await stop();
    await spool.close();
    await rm(dir, { recursive: true, force: true });
  }
}

test("problem: set by the third failure in a row, naming the last error; a success clears it", async () => {
  let polls = 0;
  const failUntil = FAILURES_FOR_PROBLEM + 1;
  const seen: Array<[number, unknown]> = [];
  await withPolls({ intervalMs: 1000, backoffBaseMs: 40, backoffCapMs: 40, random: () => 1 }, async () => {
    polls++;
    if (polls <= failUntil) throw new Error(`HTTP 403 number ${polls}`);
    return "ok";
  }, async (detail, stop) => {
    await until(() => {
      seen.push([detail().consecutive_failures as number, detail().problem]);
      return typeof detail().last_success === "string";
    }, "a success after the failures");
    assert.equal(detail().problem, null);
    for (const [failures, problem] of seen) {
      if (failures < FAILURES_FOR_PROBLEM) assert.equal(problem, null, `after ${failures} failures`);
      else assert.equal(problem, `failed its last ${failures} polls: HTTP 403 number ${failures}`);
    }
    assert.ok(seen.some(([f]) => f === FAILURES_FOR_PROBLEM + 1), "the problem was seen");
    await stop();
    assert.equal(detail().problem, null);
    assert.equal(detail().healthy_until, null, "a stopped loop is judged by its state");
  });
});

test("healthy_until: 3 intervals (of at least 1 s) after the start, moved on by each success, not by failures", async () => {
  let ok = false;
  const t0 = Date.now();
  await withPolls({ intervalMs: 2000, backoffBaseMs: 1, backoffCapMs: 5 }, async () => {
    if (!ok) throw new Error("not yet");
    return "ok";
  }, async (detail) => {
    await until(() => (detail().consecutive_failures as number) >= 2, "two failures");
    const first = Date.parse(String(detail().healthy_until));
    assert.ok(first >= t0 + 6000 && first <= Date.now() + 6000, `healthy_until ${detail().healthy_until}`);
    ok = true;
    await until(() => typeof detail().last_success === "string", "a success");
    const moved = Date.parse(String(detail().healthy_until));
    assert.equal(moved, Date.parse(String(detail().last_success)) + 6000);
  });
});

test("healthy_until counts from a first poll put off on purpose, and a short interval counts as 1 s", async () => {
  const later = Date.now() + 60_000;
  await withPolls({ intervalMs: 10, firstPollAt: later }, async () => "ok", async (detail) => {
    await until(() => detail().healthy_until !== undefined, "detail");
    assert.equal(Date.parse(String(detail().healthy_until)), later + 3000);
    assert.equal(detail().last_poll, null);
  });
});
