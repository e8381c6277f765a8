// npm run bench: every benchmark in this folder, one after another, each printing one JSON line.
import { spawnSync } from "node:child_process";

const benches = [
  ["scripts/bench/pipeline.ts"],
  ["scripts/bench/pipeline.ts", "--store"],
  ["scripts/bench/spool.ts"],
  ["scripts/bench/phishtank.ts"],
];
let failed = 0;
for (const args of benches) {
  console.log(`# bun ${args.join(" ")}`);
  const r = spawnSync(process.execPath, args, { stdio: "inherit" });
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
