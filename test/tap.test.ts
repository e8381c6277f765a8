// The tap's bounds: sampling at the rate asked for, a bounded queue for a slow reader, counted
// skips, JSON events parsed and text lines kept as strings, nothing kept once closed.
import assert from "node:assert/strict";
import { test } from "node:test";
import { TapHub } from "../agent/tap.ts";

const lines = (n: number, prefix = "l") => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

test("nobody taps: the hub is inactive and an offer keeps nothing", () => {
  const hub = new TapHub();
  assert.equal(hub.active, false);
  const sub = hub.subscribe({ inputs: [] });
  assert.equal(hub.active, true);
  sub.close();
  assert.equal(hub.active, false);
  assert.equal(hub.subscribers, 0);
  hub.offer("a", "text", lines(10));
  assert.deepEqual(sub.drain(), []);
});

test("a burst larger than the rate: at most rate events are taken, spread over the burst, the rest counted as skipped", () => {
  const hub = new TapHub();
  const sub = hub.subscribe({ inputs: [], ratePerSecond: 100 });
  hub.offer("a", "text", lines(10_000));
  const got = sub.drain();
  assert.equal(got.length, 100);
  assert.equal(sub.takeSkipped(), 9_900);
  assert.equal(sub.takeSkipped(), 0, "the count starts again after it is taken");
  assert.equal(got[0]!.event, "l0");
  assert.equal(got[99]!.event, "l9900", "the sample reaches the end of the burst");
  assert.ok(got.every((m) => m.input === "a" && !Number.isNaN(Date.parse(m.ts))));
});

test("the rate refills with time", async () => {
  const hub = new TapHub();
  const sub = hub.subscribe({ inputs: [], ratePerSecond: 50 });
  hub.offer("a", "text", lines(50));
  assert.equal(sub.drain().length, 50);
  hub.offer("a", "text", lines(5));
  assert.equal(sub.drain().length, 0, "no tokens left right after a full burst");
  await new Promise((r) => setTimeout(r, 220));
  hub.offer("a", "text", lines(50));
  const n = sub.drain().length;
  assert.ok(n >= 9 && n <= 15, `about 10 tokens after 200 ms at 50/s, got ${n}`);
});

test("a reader that never drains: the queue stops at its limit and the rest is skipped", () => {
  const hub = new TapHub();
  const sub = hub.subscribe({ inputs: [], ratePerSecond: 10_000, queueLimit: 30 });
  for (let i = 0; i < 100; i++) hub.offer("a", "text", ["x"]);
  assert.equal(sub.drain().length, 30);
  assert.equal(sub.takeSkipped(), 70);
});

test("only the inputs asked for; JSON events are objects, text lines strings, a bad JSON line its text", () => {
  const hub = new TapHub();
  const sub = hub.subscribe({ inputs: ["j", "t"] });
  hub.offer("j", "json", ['{"ip":"198.51.100.7"}', "not json"]);
  hub.offer("t", "text", ["a line"]);
  hub.offer("other", "text", ["unseen"]);
  assert.deepEqual(
    sub.drain().map((m) => [m.input, m.event]),
    [["j", { ip: "198.51.100.7" }], ["j", "not json"], ["t", "a line"]],
  );
  assert.equal(sub.takeSkipped(), 0, "events of other inputs are not counted as skipped");
});

test("next() wakes on an event, on close, and after its timeout", async () => {
  const hub = new TapHub();
  const sub = hub.subscribe({ inputs: [] });
  const t0 = Date.now();
  const woken = sub.next(5_000);
  setTimeout(() => hub.offer("a", "text", ["x"]), 20);
  await woken;
  assert.ok(Date.now() - t0 < 1_000);
  sub.drain();
  const t1 = Date.now();
  await sub.next(50);
  assert.ok(Date.now() - t1 >= 40);
  const closing = sub.next(5_000);
  hub.closeAll();
  await closing;
  assert.equal(sub.closed, true);
});
