import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import { starterConfig, starterForInit, wrap } from "../agent/cli.ts";
import { formatStatus, plural } from "../agent/commands/format.ts";
import { isDeno as underDeno } from "../agent/runtime/detect.ts";

const mainTs = fileURLToPath(new URL("../agent/main.ts", import.meta.url));
const isDeno = underDeno();
function cli(args: string[]) {
  const r = spawnSync(process.execPath, [...(isDeno ? ["run", "-A"] : []), mainTs, ...args], { encoding: "utf8", env: { PATH: process.env.PATH } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("cli words", () => {
  test("plural: 1 upload, 2 uploads, 1 retry, 0 retries", () => {
    assert.equal(plural(1, "upload"), "1 upload");
    assert.equal(plural(2, "upload"), "2 uploads");
    assert.equal(plural(0, "event"), "0 events");
    assert.equal(plural(1, "retry"), "1 retry");
    assert.equal(plural(3, "retry"), "3 retries");
  });

  test("status counts in the singular for one", () => {
    const text = formatStatus(
      {
        agent: { version: "0", pid: 1, uptime_s: 5, hostname: "h" },
        inputs: [],
        output: { state: "ok", sent_events: 1, sent_uploads: 1, retries: 1, dead_lettered: 0, last_error: null },
        spool: { events: 1, bytes: 10, max_bytes: 100, oldest_event_age_s: 0, dropped: 0 },
      },
      { pid: 1, url: "http://127.0.0.1:1", token: "t" },
    );
    assert.match(text, /OUTPUT  ok: 1 event in 1 upload, 1 retry, 0 dead-lettered/);
    assert.match(text, /SPOOL   1 event, /);
  });

  test("status shows a poll input's last success and next poll, and each input's problem", () => {
    const at = (s: number) => new Date(Date.now() + s * 1000).toISOString();
    const input = { type: "http_poll", state: "running", events: 0, bytes: 0, errors: 3, restarts: 0, last_event_at: null, last_error: "HTTP 403" };
    const text = formatStatus(
      {
        agent: { version: "0", pid: 1, uptime_s: 5, hostname: "h" },
        inputs: [
          { ...input, name: "feed", last_success: at(-12), next_poll: at(30), problem: "failed its last 3 polls: HTTP 403" },
          { ...input, name: "fresh", last_success: null, next_poll: at(0), problem: null },
          { ...input, name: "desk", type: "manual", errors: 0, last_error: null },
        ],
        output: { state: "ok", sent_events: 0, sent_uploads: 0, retries: 0, dead_lettered: 0, last_error: null },
        spool: { events: 0, bytes: 0, max_bytes: 100, oldest_event_age_s: 0, dropped: 0 },
      },
      { pid: 1, url: "http://127.0.0.1:1", token: "t" },
    );
    assert.match(text, /^POLL    feed: last success 1[23]s ago, next poll in (29|30)s$/m);
    assert.match(text, /^POLL    fresh: last success never, next poll now$/m);
    assert.doesNotMatch(text, /POLL    desk/);
    assert.match(text, /^PROBLEM feed: failed its last 3 polls: HTTP 403$/m);
    assert.doesNotMatch(text, /PROBLEM (fresh|desk)/);
  });

  test("validate counts one input as 1 input", () => {
    const d = mkdtempSync(join(tmpdir(), "cli-"));
    try {
      writeFileSync(join(d, "a.toml"), `[api]\nurl = "http://127.0.0.1:9"\ntoken = "t"\norgid = "o"\n[inputs.desk]\ntype = "manual"\ntypetag = "m"\n`);
      const r = cli(["validate", "-c", join(d, "a.toml")]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /: OK \(1 input, 1 enabled: desk \[manual\]\)/);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  test("wrap folds at word boundaries within the width and keeps every word", () => {
    const text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen";
    const out = wrap(text, "    ", 30);
    for (const l of out.split("\n")) {
      assert.ok(l.length <= 30, l);
      assert.ok(l.startsWith("    "));
    }
    assert.equal(out.split(/\s+/).filter(Boolean).join(" "), text);
  });

  test("--help: each command's usage on a line of its own, its whole description below it", () => {
    const r = cli(["--help"]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split("\n");
    for (const cmd of ["run", "start", "stop", "restart", "status", "reload", "validate", "post", "init", "version"]) {
      const i = lines.findIndex((l) => l.startsWith(`  ${cmd}`));
      assert.ok(i > 0, `${cmd} listed`);
      assert.match(lines[i + 1]!, /^      \S/, `${cmd}: description on the next line`);
      let j = i + 1;
      while (lines[j + 1]?.startsWith("      ")) j++;
      assert.match(lines[j]!, /[.)]$/, `${cmd}: the description ends a sentence: ${lines[j]}`);
    }
    for (const l of lines) assert.ok(l.length <= 92, `short lines: ${l}`);
    const init = cli(["init", "--help"]);
    assert.match(init.stdout.replace(/\n/g, " "), /Never overwrites: an existing FILE is an error/);
  });
});

describe("the starter config", () => {
  test("is packaging/agent.config.toml; init's copy keeps its data in ./data", async () => {
    const packaged = readFileSync(fileURLToPath(new URL("../packaging/agent.config.toml", import.meta.url)), "utf8");
    assert.equal(await starterConfig(), packaged);
    const forInit = starterForInit(packaged);
    const diff = packaged.split("\n").filter((l, i) => forInit.split("\n")[i] !== l);
    assert.deepEqual(diff.map((l) => l.slice(0, 35)), ['data_dir  = "/var/lib/cybexp-agent"']);
    assert.match(forInit, /^data_dir {2}= "\.\/data" {18}# spool/m, "the comment stays in its column");
    assert.throws(() => starterForInit("[agent]\n"), /no data_dir line/);
  });
});
