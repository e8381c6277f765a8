// Relative paths in the config follow the config file, not the working directory: the compiled
// executable started from "/" with -c <folder>/agent.config.toml tails <folder>/logs/*.log and
// keeps its data in <folder>/data. Runs when CYBEXP_E2E_BINARY names the executable.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { until } from "../testing/until.ts";
import { Arrivals, agentFolder, assertSameLines, configText, referenceReceiver, settleOrFail, skip } from "../testing/e2e.ts";

const ENV = { PATH: "/usr/bin:/bin" };

function cliFromRoot(binary: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    execFile(binary, args, { cwd: "/", env: ENV, timeout: 60_000 }, (err, stdout, stderr) =>
      res({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
}

describe("paths against the config folder (compiled executable)", { skip }, () => {
  test("started from / with -c <folder>/agent.config.toml: logs/*.log and data are the folder's", async () => {
    const receiver = await referenceReceiver();
    const inputs =
      `[inputs.logs]\ntype = "file"\ntypetag = "t"\npaths = ["logs/*.log"]\nexclude = ["logs/skip-*.log"]\n`;
    const dir = agentFolder(configText(receiver.url, inputs).replace('data_dir = "./data"', 'data_dir = "data"'));
    const config = join(dir, "agent.config.toml");
    const binary = join(dir, "cybexp-agent");
    let stderr = "";
    const child = spawn(binary, ["run", "-c", config], { cwd: "/", env: ENV, stdio: ["ignore", "ignore", "pipe"] });
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    child.stderr!.on("data", (b: Buffer) => (stderr = (stderr + b.toString("utf8")).slice(-8000)));
    try {
      assert.ok(readFileSync(config, "utf8").includes('paths = ["logs/*.log"]'));
      mkdirSync(join(dir, "logs"));
      const before = ["a one", "a two"];
      writeFileSync(join(dir, "logs", "a.log"), before.map((l) => l + "\n").join(""));
      writeFileSync(join(dir, "logs", "skip-me.log"), "excluded line\n");
      writeFileSync(join(dir, "logs", "notes.txt"), "not a .log file\n");

      const validated = await cliFromRoot(binary, ["validate", "-c", config]);
      assert.equal(validated.code, 0, validated.stderr);
      assert.ok(validated.stdout.includes(`data_dir = ${join(dir, "data")}`), validated.stdout);
      assert.ok(validated.stdout.includes(`inputs.logs.paths = ${JSON.stringify([join(dir, "logs/*.log")])}`), validated.stdout);
      assert.ok(validated.stdout.includes(`inputs.logs.exclude = ${JSON.stringify([join(dir, "logs/skip-*.log")])}`), validated.stdout);

      const rcPath = join(dir, "data", "runningconfig");
      await until(() => {
        if (child.exitCode !== null) assert.fail(`the agent exited during start-up: ${stderr}`);
        if (!existsSync(rcPath)) return false;
        try {
          return JSON.parse(readFileSync(rcPath, "utf8")).pid === child.pid;
        } catch {
          return false;
        }
      }, "the runningconfig in <folder>/data", 30_000);

      const later = ["b one", "b two", "b three"];
      writeFileSync(join(dir, "logs", "b.log"), later.map((l) => l + "\n").join(""));
      appendFileSync(join(dir, "logs", "a.log"), "a three\n");
      const want = [...before, ...later, "a three"];
      const arrivals = new Arrivals(receiver, "logs");
      await settleOrFail([[arrivals, want.length]], () => `lines of <folder>/logs/*.log (agent log: ${stderr.slice(-1500)})`);
      assertSameLines(await arrivals.lines(), want, "the lines of <folder>/logs/*.log");

      assert.ok(!existsSync("/data/runningconfig"), "nothing written under the working directory");
      child.kill("SIGTERM");
      await exited;
      assert.ok(!existsSync(rcPath), `runningconfig removed on a clean stop: ${stderr.slice(-1500)}`);
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await exited;
      }
      await receiver.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
