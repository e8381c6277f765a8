import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInputContext, type CoreInputContext } from "../../agent/context.ts";
import { HttpClient } from "./http.ts";
import { PollSchedule, WaitError, runPolls, type PollFunction, type PollOptions } from "./poll.ts";
import { createLogger } from "../../agent/log.ts";
import { FatalInputError } from "../../agent/plugin.ts";
import { Spool } from "../../agent/spool/index.ts";
import { StateStore } from "../../agent/state.ts";
import { drainSpool } from "../../test/testing/plugin-harness.ts";
import { until } from "../../test/testing/until.ts";

interface LogLine {
  level: string;
  msg: string;
  [k: string]: unknown;
}

interface Run {
  ctx: CoreInputContext<{ polls: number }>;
  logs: LogLine[];
  detail(): Record<string, unknown>;
  /** Abort the input's signal; resolves when runPolls has returned, with the time that took. */
  stop(): Promise<number>;
  done: Promise<void>;
}

/** runPolls against a real context (spool, state store) in a temp dir. */
type TestPoll = (signal: AbortSignal, ctx: CoreInputContext<{ polls: number }>) => ReturnType<PollFunction>;

async function withPolls(opts: PollOptions, poll: TestPoll, fn: (run: Run, spool: Spool, state: StateStore) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "poll-"));
  const logs: LogLine[] = [];
  const log = createLogger("debug", { write: (l) => logs.push(JSON.parse(l)) });
  const spool = await Spool.open({ dir: join(dir, "spool"), maxBytes: 8 << 20, whenFull: "block", fsync: 5, log });
  const state = new StateStore(join(dir, "state"));
  const ac = new AbortController();
  const ctx = createInputContext<{ polls: number }>({ name: "feed", spool, state, route: "feed", log, signal: ac.signal, hostname: "test" });
  const done = runPolls(ctx, opts, (signal) => poll(signal, ctx));
  done.catch(() => {});
  const run: Run = {
    ctx,
    logs,
    detail: () => ctx.counters.detail,
    done,
    async stop() {
      const started = Date.now();
      ac.abort();
      await done.catch(() => {});
      return Date.now() - started;
    },
  };
  try {
    await fn(run, spool, state);
  } finally {
    await run.stop();
    await ctx.settled();
    await spool.close();
    await rm(dir, { recursive: true, force: true });
  }
}

async function neverAnswering(): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer(() => {});
  server.on("connection", (s: Socket) => sockets.add(s));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}/feed.txt`,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

test("first poll at start, then every interval; detail shows the schedule", async () => {
  const started = Date.now();
  const polls: number[] = [];
  await withPolls({ intervalMs: 150 }, () => {
    polls.push(Date.now());
    return Promise.resolve(`${polls.length} new records`);
  }, async (run) => {
    await until(() => polls.length >= 3, "three polls");
    assert.ok(polls[0]! - started < 1000, `first poll after ${polls[0]! - started} ms`);
    assert.ok(polls[1]! - polls[0]! >= 149 && polls[2]! - polls[1]! >= 149);
    await until(() => typeof run.detail().last_success === "string" && run.detail().next_poll !== null, "detail after a success");
    const d = run.detail();
    assert.equal(d.consecutive_failures, 0);
    assert.match(String(d.last_status), /^\d+ new records$/);
    // The next poll is due `interval` after the last one started.
    assert.equal(Date.parse(String(d.next_poll)) - Date.parse(String(d.last_poll)), 150);
    assert.equal(run.ctx.counters.errors, 0);
  });
});

test("a poll emits into the spool and checkpoints through the context", async () => {
  let n = 0;
  await withPolls({ intervalMs: 50 }, async (_signal, ctx) => {
    n++;
    await ctx.emitText([`https://phish-${n}.example/`]);
    void ctx.checkpoint({ polls: n });
  }, async (run, spool, state) => {
    await until(() => n >= 2, "two polls");
    await run.stop();
    await run.ctx.settled();
    const events = drainSpool(spool, []).map((e) => e.event);
    assert.deepEqual(events, Array.from({ length: n }, (_, i) => `https://phish-${i + 1}.example/`));
    assert.deepEqual(await state.load("feed"), { polls: n });
  });
});

test("backoff grows with each failure, resets after a success; failures are counted and logged", async () => {
  // Failures, a success, then failures again: the retry delays (jitter fixed at its ceiling)
  // double from the base and start over after the success.
  const plan = ["fail", "fail", "fail", "ok", "fail", "fail"];
  let k = 0;
  await withPolls({ intervalMs: 60_000, backoffBaseMs: 20, random: () => 1 }, async (signal) => {
    const step = plan[k++] ?? "hang";
    if (step === "ok") return { status: "ok", nextPollInMs: 0 };
    if (step === "fail") throw new Error(`poll ${k} failed`);
    await new Promise((r) => signal.addEventListener("abort", r));
  }, async (run) => {
    await until(() => run.logs.filter((l) => l.msg === "poll failed").length === 5, "five failures");
    const delays = run.logs.filter((l) => l.msg === "poll failed").map((l) => [l.retry_in_ms, l.consecutive_failures]);
    assert.deepEqual(delays, [[20, 1], [40, 2], [80, 3], [20, 1], [40, 2]]);
    assert.equal(run.ctx.counters.errors, 5);
    assert.equal(run.ctx.counters.last_error, "poll 6 failed");
    await until(() => k > plan.length, "the last poll to start");
    assert.equal(run.detail().consecutive_failures, 2);
    assert.equal(run.detail().last_status, "error: poll 6 failed");
  });
});

test("a source that asks to wait (real 429 with Retry-After) is waited for, as told", async () => {
  const server = createServer((_req, res) => res.writeHead(429, { "retry-after": "2" }).end("rate limited"));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/events/restSearch`;
  const http = new HttpClient();
  let polls = 0;
  try {
    await withPolls({ intervalMs: 3_600_000, random: () => 1 }, async (signal) => {
      polls++;
      await http.request(url, { signal });
    }, async (run) => {
      await until(() => run.logs.some((l) => l.msg === "the source asks to wait"), "the wait");
      const line = run.logs.find((l) => l.msg === "the source asks to wait")!;
      assert.equal(line.retry_in_ms, 2000);
      assert.match(String(run.detail().last_status), /^waiting: HTTP 429 from http:\/\/127\.0\.0\.1:\d+\/events\/restSearch: rate limited$/);
      const d = run.detail();
      const wait = Date.parse(String(d.next_poll)) - Date.parse(String(d.last_poll));
      assert.ok(wait >= 2000 && wait < 3000, `next poll ${wait} ms after the last`);
      assert.equal(polls, 1);
    });
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
  }
});

test("a failed poll is reported as one line without secrets", async () => {
  await withPolls({ intervalMs: 60_000, secrets: ["TOPSECRETVALUE"] }, () => {
    return Promise.reject(new Error("GET https://bob:hunter2@misp.example/events?apikey=K1&page=2 failed\n  answer: bad key TOPSECRETVALUE"));
  }, async (run) => {
    await until(() => run.ctx.counters.errors === 1, "the failure");
    const expected = "GET https://***@misp.example/events?apikey=***&page=2 failed answer: bad key ***";
    assert.equal(run.ctx.counters.last_error, expected);
    assert.equal(run.detail().last_status, `error: ${expected}`);
    const all = JSON.stringify(run.logs) + JSON.stringify(run.detail());
    for (const secret of ["hunter2", "K1&", "TOPSECRETVALUE"]) assert.ok(!all.includes(secret), secret);
  });
});

test("a FatalInputError ends the loop with it", async () => {
  let polls = 0;
  await withPolls({ intervalMs: 10 }, () => {
    polls++;
    return Promise.reject(new FatalInputError("MISP refused the API key (HTTP 403)"));
  }, async (run) => {
    await assert.rejects(run.done, (err: unknown) => err instanceof FatalInputError);
    assert.equal(polls, 1);
    assert.equal(run.detail().last_status, "failed: MISP refused the API key (HTTP 403)");
  });
});

test("stop within a second: between polls, during an HTTP request, and with a poll that ignores its signal", async () => {
  await withPolls({ intervalMs: 3_600_000 }, () => Promise.resolve("ok"), async (run) => {
    await until(() => run.detail().last_status === "ok", "the first poll");
    const took = await run.stop();
    assert.ok(took < 1000, `stopped after ${took} ms`);
    assert.equal(run.detail().next_poll, null);
  });

  const server = await neverAnswering();
  try {
    const http = new HttpClient({ timeoutMs: 30_000 });
    let requested = false;
    await withPolls({ intervalMs: 3_600_000 }, async (signal) => {
      requested = true;
      await http.request(server.url, { signal });
    }, async (run) => {
      await until(() => requested, "the request");
      await new Promise((r) => setTimeout(r, 50));
      const took = await run.stop();
      assert.ok(took < 1000, `stopped after ${took} ms`);
      assert.equal(run.ctx.counters.errors, 0);
    });
  } finally {
    await server.close();
  }

  let hang: ReturnType<typeof setTimeout> | undefined;
  try {
    await withPolls({ intervalMs: 3_600_000, stopGraceMs: 300 }, async () => {
      await new Promise((r) => (hang = setTimeout(r, 10_000)));
    }, async (run) => {
      await until(() => hang !== undefined, "the poll");
      const took = await run.stop();
      assert.ok(took >= 250 && took < 1000, `stopped after ${took} ms`);
      assert.ok(run.logs.some((l) => l.msg === "a poll was still running at stop; not waiting for it"));
    });
  } finally {
    clearTimeout(hang);
  }
});

test("firstPollAt in the future delays the first poll; nextPollInMs polls again sooner", async () => {
  const at = Date.now() + 60_000;
  let polls = 0;
  await withPolls({ intervalMs: 10, firstPollAt: at }, () => Promise.resolve(void polls++), async (run) => {
    await until(() => run.detail().next_poll !== undefined, "detail");
    assert.equal(run.detail().next_poll, new Date(at).toISOString());
    assert.equal(polls, 0);
  });
  let pages = 0;
  await withPolls({ intervalMs: 3_600_000 }, () => {
    pages++;
    return Promise.resolve(pages < 4 ? { status: `page ${pages}`, nextPollInMs: 0 } : { status: "done" });
  }, async (run) => {
    await until(() => run.detail().last_status === "done", "all pages");
    assert.equal(pages, 4);
  });
});

test("PollSchedule: defaults and bounds", () => {
  const hourly = new PollSchedule({ intervalMs: 3_600_000, random: () => 1 });
  assert.equal(hourly.backoffCapMs, 3_600_000);
  assert.equal(hourly.maxWaitMs, 3_600_000);
  const daily = new PollSchedule({ intervalMs: 86_400_000, random: () => 1 });
  assert.equal(daily.backoffCapMs, 3_600_000); // capped at 1 h
  assert.equal(daily.maxWaitMs, 86_400_000);
  const fast = new PollSchedule({ intervalMs: 5000, random: () => 1 });
  assert.deepEqual([1, 2, 3, 4, 5].map(() => fast.afterFailure(new Error("x"))), [1000, 2000, 4000, 5000, 5000]);
  assert.equal(fast.consecutiveFailures, 5);
  assert.equal(fast.afterSuccess(10_000, 10_300), 4700);
  assert.equal(fast.consecutiveFailures, 0);
  assert.equal(fast.afterFailure(new Error("x")), 1000);
  assert.equal(fast.afterSuccess(10_000, 99_000), 0); // overran the interval: next one at once
  assert.equal(fast.afterSuccess(10_000, 10_300, 0), 0);
  // Waits: as asked, at least 1 s, at most maxWaitMs; unstated: the backoff cap.
  assert.equal(hourly.afterFailure(new WaitError("rate limited", 90_000)), 90_000);
  assert.equal(hourly.afterFailure(new WaitError("rate limited", 5)), 1000);
  assert.equal(hourly.afterFailure(new WaitError("rate limited", 10 * 86_400_000)), 3_600_000);
  assert.equal(hourly.afterFailure(new WaitError("509", null)), 3_600_000);
  assert.equal(fast.afterFailure(new WaitError("509", null)), 5000);
});
