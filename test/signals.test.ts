// Signals of `run` under the runtime running this suite (Bun under bun test, Deno under deno
// test): the source, a real process, real signals. The compiled executable: test/e2e/service.test.ts.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import { until } from "./testing/until.ts";
import { isDeno as underDeno } from "../agent/runtime/detect.ts";

const mainTs = fileURLToPath(new URL("../agent/main.ts", import.meta.url));
const isDeno = underDeno();

test(`run under ${isDeno ? "Deno" : "Bun"}: SIGHUP reloads (also during start-up), SIGUSR2/SIGQUIT/SIGPIPE${isDeno ? "" : "/SIGUSR1"} leave it running, SIGTERM stops it gracefully`, async () => {
  const d = mkdtempSync(join(tmpdir(), "signals-"));
  const config = join(d, "agent.config.toml");
  writeFileSync(config, `[agent]\ndata_dir = "data"\nlog_format = "text"\nlog_level = "debug"\n[control]\nlisten = "127.0.0.1:0"\n[api]\nurl = "http://127.0.0.1:9"\ntoken = "t"\norgid = "o"\n[inputs.desk]\ntype = "manual"\ntypetag = "m"\n`);
  const child = spawn(process.execPath, [...(isDeno ? ["run", "-A"] : []), mainTs, "run", "-c", config], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr!.on("data", (b: Buffer) => (log += b.toString("utf8")));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  // by pid: Deno's child_process records a signal it sent as the way the child ended
  let ended = false;
  void exited.then(() => (ended = true));
  const running = () => {
    if (ended) return false;
    try {
      process.kill(child.pid!, 0);
      return true;
    } catch {
      return false;
    }
  };
  const seen = (what: string) => until(() => log.includes(what) || !running(), what, 30_000).then(() => assert.ok(running(), `running after ${what}: ${log}`));
  try {
    await seen("DEBUG agent starting");
    process.kill(child.pid!, "SIGHUP"); // most likely still starting: carried out once it is up
    await seen("INFO  configuration reloaded");
    assert.ok(log.indexOf("agent started") < log.indexOf("configuration reloaded"), log);

    appendFileSync(config, `[inputs.desk2]\ntype = "manual"\ntypetag = "m"\n`);
    process.kill(child.pid!, "SIGHUP");
    await seen('configuration reloaded started=["desk2"]');
    appendFileSync(config, "oops = [\n");
    process.kill(child.pid!, "SIGHUP");
    await seen("ERROR reload on SIGHUP failed; the running configuration stays");

    const quiet: string[] = ["SIGUSR2", "SIGQUIT", ...(isDeno ? [] : ["SIGUSR1"])];
    for (const sig of quiet) {
      process.kill(child.pid!, sig);
      await seen(`received ${sig}`);
    }
    process.kill(child.pid!, "SIGPIPE");
    process.kill(child.pid!, "SIGUSR2");
    await until(() => log.split("received SIGUSR2").length === 3 || !running(), "the line after SIGPIPE");
    assert.ok(running(), `alive after SIGPIPE: ${log}`);

    process.kill(child.pid!, "SIGTERM");
    await exited;
    assert.match(log, /INFO  agent stopped/);
  } finally {
    if (running()) process.kill(child.pid!, "SIGKILL");
    rmSync(d, { recursive: true, force: true });
  }
});
