// The .deb of `npm run package`: built from the compiled executable, installed with dpkg -i,
// its unit accepted by systemd-analyze verify, its config validated, removed again.
// Changes the host (a package, a system user): runs as root only, where dpkg-deb exists, and
// not where a cybexp-agent package is installed already. Needs CYBEXP_E2E_BINARY (npm run test:e2e, .ci/run).
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createServer } from "node:net";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, describe, test } from "node:test";
import { until } from "../testing/until.ts";
import { BINARY, skip } from "../testing/e2e.ts";

/** Whether 127.0.0.1:port can be listened on now (the packaged config's control port). */
function portFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const srv = createServer();
    srv.once("error", () => res(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => res(true)));
  });
}

const has = (cmd: string) => spawnSync("sh", ["-c", `command -v ${cmd}`]).status === 0;
const installedAlready = () => spawnSync("dpkg-query", ["-W", "-f=${Status}", "cybexp-agent"], { encoding: "utf8" }).stdout.includes("installed");
const why: string | false =
  skip ||
  (process.getuid?.() !== 0 ? "the package test installs a .deb: run as root (CI does)" : false) ||
  (!has("dpkg-deb") || !has("dpkg") ? "dpkg-deb and dpkg are needed (Debian)" : false) ||
  (installedAlready() ? "a cybexp-agent package is installed on this host already; not touching it" : false);
if (why) console.log(`package test skipped: ${why}`);

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" }) {
  const r = spawnSync(cmd, args, { encoding: "utf8", env, timeout: 240_000, maxBuffer: 16 << 20 });
  return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}${r.error ? String(r.error) : ""}` };
}

describe("the .deb package", { skip: why }, () => {
  const out = mkdtempSync(join(tmpdir(), "deb-"));
  const userBefore = run("getent", ["passwd", "cybexp-agent"]).code === 0;
  after(() => {
    if (installedAlready()) run("dpkg", ["--purge", "cybexp-agent"]);
    if (!userBefore && run("getent", ["passwd", "cybexp-agent"]).code === 0) {
      run("userdel", ["cybexp-agent"]);
      run("groupdel", ["cybexp-agent"]);
    }
    rmSync(out, { recursive: true, force: true });
  });

  test("npm run package builds it; dpkg -i installs the executable, the unit, the config and the user; the config validates; the agent runs as its user; dpkg -r removes it", async () => {
    const built = run(process.execPath, [resolve("scripts/package.ts"), "--binary", BINARY, "--out", out], { ...process.env });
    assert.equal(built.code, 0, built.out);
    const version = (JSON.parse(readFileSync("package.json", "utf8")) as { version: string }).version;
    const deb = join(out, `cybexp-agent_${version}_amd64.deb`);
    assert.ok(existsSync(deb), built.out);

    const info = run("dpkg-deb", ["-f", deb, "Package", "Version", "Architecture", "Depends"]);
    assert.match(info.out, new RegExp(`Package: cybexp-agent\\nVersion: ${version.replace(/\./g, "\\.")}\\nArchitecture: amd64\\nDepends: libc6`));
    const listing = run("dpkg-deb", ["-c", deb]).out;
    for (const f of ["./usr/bin/cybexp-agent", "./lib/systemd/system/cybexp-agent.service", "./etc/cybexp-agent/agent.config.toml"]) assert.ok(listing.includes(f), `${f} in the package`);
    assert.equal(run("dpkg-deb", ["-I", deb, "conffiles"]).out.trim(), "/etc/cybexp-agent/agent.config.toml");

    const inst = run("dpkg", ["-i", deb]);
    assert.equal(inst.code, 0, `dpkg -i: ${inst.out}`);
    assert.equal(run("/usr/bin/cybexp-agent", ["version"]).out.trim(), `cybexp-agent ${version}`);
    assert.equal(run("getent", ["passwd", "cybexp-agent"]).code, 0, "the system user");
    const st = statSync("/var/lib/cybexp-agent");
    assert.equal(st.mode & 0o777, 0o700);
    assert.equal(st.uid, Number(run("id", ["-u", "cybexp-agent"]).out.trim()), "the state folder belongs to the user");
    assert.equal(statSync("/etc/cybexp-agent/agent.config.toml").mode & 0o777, 0o640);

    const unit = readFileSync("/lib/systemd/system/cybexp-agent.service", "utf8");
    assert.match(unit, /^ExecStart=\/usr\/bin\/cybexp-agent run -c \/etc\/cybexp-agent\/agent\.config\.toml$/m);
    assert.match(unit, /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
    if (has("systemd-analyze")) {
      const v = run("systemd-analyze", ["verify", "/lib/systemd/system/cybexp-agent.service"]);
      assert.equal(v.code, 0, `systemd-analyze verify: ${v.out}`);
      assert.equal(v.out.trim(), "", "no warnings");
    } else console.log("package test: systemd-analyze not installed; the unit was not verified");

    const valid = run("/usr/bin/cybexp-agent", ["validate", "-c", "/etc/cybexp-agent/agent.config.toml"], { PATH: "/usr/bin:/bin", CYBEXP_API_TOKEN: "t0k" });
    assert.equal(valid.code, 0, valid.out);
    assert.match(valid.out, /agent\.config\.toml: OK/);
    // as the service's user too: it can read its config
    if (has("runuser")) {
      const asUser = run("runuser", ["-u", "cybexp-agent", "--", "/usr/bin/env", "CYBEXP_API_TOKEN=t0k", "/usr/bin/cybexp-agent", "validate", "-c", "/etc/cybexp-agent/agent.config.toml"]);
      assert.equal(asUser.code, 0, `validate as cybexp-agent: ${asUser.out}`);
    }

    // the installed agent as the unit runs it (user cybexp-agent, data in /var/lib/cybexp-agent),
    // with an API address that takes nothing, so that nothing leaves the host
    if (has("runuser") && (await portFree(8765))) {
      const agent = spawn("runuser", ["-u", "cybexp-agent", "--", "/usr/bin/env", "CYBEXP_API_TOKEN=t0k", "CYBEXP_API_URL=http://127.0.0.1:9", "/usr/bin/cybexp-agent", "run", "-c", "/etc/cybexp-agent/agent.config.toml"], { stdio: ["ignore", "ignore", "pipe"] });
      let log = "";
      agent.stderr!.on("data", (b: Buffer) => (log += b.toString("utf8")));
      const ended = new Promise<void>((r) => agent.once("exit", () => r()));
      try {
        await until(() => existsSync("/var/lib/cybexp-agent/runningconfig") || agent.exitCode !== null, "the installed agent's runningconfig", 30_000);
        assert.ok(existsSync("/var/lib/cybexp-agent/runningconfig"), `the installed agent runs: ${log}`);
        assert.equal(statSync("/var/lib/cybexp-agent/runningconfig").uid, st.uid, "written by the service's user");
        const status = run("/usr/bin/cybexp-agent", ["status", "-c", "/etc/cybexp-agent/agent.config.toml"], { PATH: "/usr/bin:/bin", CYBEXP_API_TOKEN: "t0k" });
        assert.equal(status.code, 0, status.out);
        assert.match(status.out, /analyst\s+manual\s+running/);
        const pid = (JSON.parse(readFileSync("/var/lib/cybexp-agent/runningconfig", "utf8")) as { pid: number }).pid;
        process.kill(pid, "SIGTERM");
        await ended;
        assert.match(log, /"msg":"agent stopped"/);
      } finally {
        // runuser passes signals on; the agent's own pid is in the runningconfig
        if (agent.exitCode === null) {
          try {
            process.kill((JSON.parse(readFileSync("/var/lib/cybexp-agent/runningconfig", "utf8")) as { pid: number }).pid, "SIGKILL");
          } catch {}
          agent.kill("SIGKILL");
        }
      }
    } else console.log("package test: runuser missing or port 8765 taken; the installed agent was not run");

    const rm = run("dpkg", ["-r", "cybexp-agent"]);
    assert.equal(rm.code, 0, `dpkg -r: ${rm.out}`);
    assert.equal(existsSync("/usr/bin/cybexp-agent"), false);
    assert.equal(existsSync("/lib/systemd/system/cybexp-agent.service"), false);
    assert.ok(existsSync("/etc/cybexp-agent/agent.config.toml"), "a conffile stays until purge");
    const purge = run("dpkg", ["--purge", "cybexp-agent"]);
    assert.equal(purge.code, 0, `dpkg --purge: ${purge.out}`);
    assert.equal(existsSync("/etc/cybexp-agent/agent.config.toml"), false);
    assert.equal(existsSync("/var/lib/cybexp-agent"), false);
  });
});
