// Where a CPU profile (.cpuprofile, e.g. from `bun --cpu-prof`, see logs.ts --cpu-prof) spends
// its time: functions by self and by total (inclusive) time, and source files by self time.
//
//   bun scripts/bench/cpuprofile-top.ts PROFILE.cpuprofile [--top 25]
//
// Time is counted per sample, each worth at most two sampling intervals: the profiler stamps
// an idle stretch onto the first sample after it, which `--cpu-prof-md` reports as the self
// time of whatever function happened to run next.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: "string", default: "25" } },
});
if (positionals.length !== 1) {
  console.error("usage: bun scripts/bench/cpuprofile-top.ts PROFILE.cpuprofile [--top 25]");
  process.exit(2);
}
const top = Number(values.top);
const profile = JSON.parse(readFileSync(positionals[0]!, "utf8")) as Profile;

const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parentOf = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parentOf.set(c, n.id);

const sorted = [...profile.timeDeltas].filter((d) => d > 0).sort((a, b) => a - b);
const interval = sorted[sorted.length >> 1] ?? 1000;

function label(n: ProfileNode): string {
  const f = n.callFrame;
  const file = f.url ? f.url.replace(/^.*\/(agent|plugins|scripts|node_modules)\//, "$1/") : "[native]";
  return `${f.functionName || "(anonymous)"} ${file}${f.lineNumber >= 0 && f.url ? `:${f.lineNumber + 1}` : ""}`;
}

const self = new Map<string, number>();
const total = new Map<string, number>();
const files = new Map<string, number>();
let sum = 0;
for (let i = 0; i < profile.samples.length; i++) {
  const us = Math.min(profile.timeDeltas[i + 1] ?? interval, 2 * interval);
  const leaf = byId.get(profile.samples[i]!)!;
  const name = leaf.callFrame.functionName;
  if (name === "(idle)" || name === "(root)" || name === "(program)") continue;
  sum += us;
  self.set(label(leaf), (self.get(label(leaf)) ?? 0) + us);
  // Native leaves are charged to the nearest script frame's file.
  let owner: ProfileNode | undefined = leaf;
  while (owner && !owner.callFrame.url) owner = byId.get(parentOf.get(owner.id) ?? -1);
  const file = owner ? label(owner).split(" ")[1]!.replace(/:\d+$/, "") : "[native]";
  files.set(file, (files.get(file) ?? 0) + us);
  const onStack = new Set<string>();
  for (let n: ProfileNode | undefined = leaf; n; n = byId.get(parentOf.get(n.id) ?? -1)) onStack.add(label(n));
  for (const l of onStack) total.set(l, (total.get(l) ?? 0) + us);
}

function print(title: string, m: Map<string, number>, n: number): void {
  console.log(`\n${title}`);
  for (const [k, us] of [...m].sort((a, b) => b[1] - a[1]).slice(0, n)) {
    console.log(`${((100 * us) / sum).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(6)} ms  ${k}`);
  }
}

console.log(`${positionals[0]}: ${(sum / 1000).toFixed(0)} ms of JS-thread samples (interval ${interval} µs)`);
print("self time by function", self, top);
print("total time by function (incl. callees)", total, top);
print("self time by source file (native code charged to its caller's file)", files, Math.min(top, 15));
