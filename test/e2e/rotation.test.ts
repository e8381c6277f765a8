// Fast rotation against the compiled executable: a writer appends 5,000 lines to app.log and
// renames it out of the glob, four times 10-100 ms apart, then copies and truncates it once, and
// a late file appears; glob_interval is far longer than all of it, so only the watched
// directory's events can find each new file in time. Every line must reach the reference
// receiver exactly once. Runs when CYBEXP_E2E_BINARY names the executable.
import { appendFileSync, copyFileSync, mkdirSync, readdirSync, renameSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { until } from "../testing/until.ts";
import { Arrivals, assertSameLines, pause, referenceReceiver, runAgent, settle, skip } from "../testing/e2e.ts";

const line = (file: string, i: number) =>
  `2026-11-27T10:00:00Z app[42]: ${file} seq=${String(i).padStart(6, "0")} GET /api/v1/items/${i % 977} status=200 bytes=${(i * 37) % 65536}`;

/** `n` lines for `file`, written in five appends (a logger writes as it goes). */
function writeLines(path: string, file: string, n: number): string[] {
  const ls = Array.from({ length: n }, (_, i) => line(file, i));
  const step = n / 5;
  for (let i = 0; i < n; i += step) appendFileSync(path, ls.slice(i, i + step).join("\n") + "\n");
  return ls;
}

describe("e2e: fast rotation", { skip }, () => {
  for (const apart of [100, 50, 10]) test(`file: four rename rotations ${apart} ms apart after 5,000 lines each, one copytruncate, a late file, glob_interval 60s: every line arrives once`, async () => {
    const receiver = await referenceReceiver();
    const agent = await runAgent(receiver, `[inputs.app]
type = "file"
typetag = "app-log"
paths = ["./logs/*.log"]
glob_interval = "60s"
`, (dir) => mkdirSync(join(dir, "logs")));
    try {
      const logs = join(agent.dir, "logs");
      const app = join(logs, "app.log");
      await until(async () => (await agent.input("app")).state === "running", "the file input running", 30_000);
      await pause(300); // its first listing is done: from now on only events find files
      const arrivals = new Arrivals(receiver, "app");
      const written: string[] = [];
      for (let r = 1; r <= 4; r++) {
        written.push(...writeLines(app, `rename${r}`, 5000));
        renameSync(app, `${app}.${r}`);
        await pause(apart);
      }
      written.push(...writeLines(app, "copytruncate", 5000));
      copyFileSync(app, `${app}.5`);
      truncateSync(app, 0);
      await pause(apart);
      const late = Array.from({ length: 1000 }, (_, i) => line("late", i));
      writeFileSync(join(logs, "late.log"), late.join("\n") + "\n");
      const expected = [...written, ...late];

      const short = await settle([[arrivals, expected.length]], { ms: 60_000 });
      const got = await arrivals.lines();
      assertSameLines(got, expected, `${short || "all arrived"}; files: ${readdirSync(logs).sort().join(" ")}`);
    } finally {
      await agent.stop();
      await receiver.close();
    }
  });
});
