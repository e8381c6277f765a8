// End to end with the compiled executable, as a new user would run it: copied alone into an
// empty folder, driven through its CLI, posting to the strict reference receiver.
// Runs when CYBEXP_E2E_BINARY names the executable (npm run test:e2e, .ci/run).
import assert from "node:assert/strict";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Receiver } from "../../scripts/receiver.ts";
import { until } from "../testing/until.ts";
import { agentFolder, Arrivals, configText as agentConfig, pause, referenceReceiver, skip, startAgent, type RunningAgent, alive, cli } from "../testing/e2e.ts";




/** A file input and a manual one, `extra` after them (in [inputs.desk]). */
function configText(receiverUrl: string, extra = ""): string {
  return agentConfig(receiverUrl, `[inputs.honeypot]
type = "file"
typetag = "cowrie-text"
paths = ["./logs/*.log"]
[inputs.desk]
type = "manual"
typetag = "manual-ti"
name = "analyst"
${extra}`, { timezone: "Asia/Tokyo" });
}

describe("compiled binary", { skip }, () => {
  let receiver: Receiver;
  const dirs: string[] = [];
  const freshFolder = () => {
    const d = agentFolder();
    dirs.push(d);
    mkdirSync(join(d, "logs"));
    return d;
  };

  before(async () => {
    receiver = await referenceReceiver();
  });
  after(async () => {
    await receiver.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  test("validate, start, post, status --json, stop in an empty folder; 10,000 lines arrive", async () => {
    const d = freshFolder();
    writeFileSync(join(d, "agent.config.toml"), configText(receiver.url));
    await pause(50);

    const v = await cli(d, ["validate"]);
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stdout, /OK \(2 inputs/);

    // a runningconfig left by a daemon that died is stale and replaced
    mkdirSync(join(d, "data"));
    writeFileSync(join(d, "data", "runningconfig"), JSON.stringify({ pid: 4_000_000, url: "http://127.0.0.1:1", token: "old" }));
    const s = await cli(d, ["start"]);
    assert.equal(s.code, 0, s.stderr);
    const rcPath = join(d, "data", "runningconfig");
    assert.equal(statSync(rcPath).mode & 0o777, 0o600);
    const rc = JSON.parse(readFileSync(rcPath, "utf8"));
    assert.match(rc.url, /^http:\/\/127\.0\.0\.1:\d+$/, "control server on loopback only");
    assert.ok(alive(rc.pid));

    // control server: /health open, /reload needs the token
    assert.equal((await fetch(`${rc.url}/health`)).status, 200);
    assert.equal((await fetch(`${rc.url}/reload`, { method: "POST" })).status, 401);

    const lines: string[] = [];
    for (let i = 0; i < 10_000; i++) lines.push(`2026-11-27T10:00:00Z sshd[${1000 + (i % 50)}]: Failed password for root from 203.0.113.${i % 250} port ${40000 + i} ssh2 seq=${i}`);
    for (let i = 0; i < 10; i++) appendFileSync(join(d, "logs", "auth.log"), lines.slice(i * 1000, (i + 1) * 1000).join("\n") + "\n");

    const p = await cli(d, ["post", "--input", "desk", "-"], JSON.stringify({ indicator: "evil.example.net", type: "domain", confidence: 80 }));
    assert.equal(p.code, 0, p.stderr);
    assert.match(p.stdout, /accepted 1 event/);

    const honeypot = new Arrivals(receiver, "honeypot");
    await until(() => honeypot.count() >= 10_000 && receiver.uploads.some((u) => u.name === "analyst"), "10,000 lines and the post");
    const got = await honeypot.lines();
    // concurrent uploads may arrive in any order; each line must arrive exactly once
    assert.equal(got.length, lines.length, "no line twice");
    assert.deepEqual([...got].sort(), [...lines].sort(), "every line");
    for (const u of receiver.uploads.filter((u) => u.name === "honeypot")) {
      assert.deepEqual([u.typetag, u.orgid, u.timezone, u.filename], ["cowrie-text", "org-e2e", "Asia/Tokyo", "honeypot.txt"]);
    }
    const post = receiver.uploads.find((u) => u.name === "analyst")!;
    assert.deepEqual([post.typetag, post.filename], ["manual-ti", "desk.ndjson"]);
    assert.deepEqual(JSON.parse(new TextDecoder().decode(await receiver.file(post.seq))), { indicator: "evil.example.net", type: "domain", confidence: 80 });

    const st = await cli(d, ["status", "--json"]);
    assert.equal(st.code, 0, st.stderr);
    const status = JSON.parse(st.stdout);
    assert.equal(status.inputs.find((i: { name: string }) => i.name === "honeypot").events, 10_000);
    assert.equal(status.output.state, "ok");
    const table = await cli(d, ["status"]);
    assert.match(table.stdout, /honeypot\s+file\s+running\s+10000/);

    // a truncated JSON post: 400, nothing forwarded; an unknown input: refused
    const before = receiver.uploads.length;
    const bad = await cli(d, ["post", "--input", "desk", "--content-type", "application/json", "-"], '[{"indicator":"a"},{"indicator":');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /JSON/);
    const unknown = await cli(d, ["post", "--input", "nobody", "-"], "{}");
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no input named "nobody"/);

    const stop = await cli(d, ["stop"]);
    assert.equal(stop.code, 0, stop.stderr);
    assert.equal(existsSync(rcPath), false, "runningconfig removed on stop");
    assert.equal(alive(rc.pid), false, "the daemon is gone");
    assert.equal(receiver.uploads.length, before, "nothing of the refused posts arrived");
    const none = await cli(d, ["status"]);
    assert.equal(none.code, 3);
  });

  test("config errors: broken TOML names the line, unknown key and type are named, public control without token refused", async () => {
    const d = freshFolder();
    const check = async (text: string, pattern: RegExp) => {
      writeFileSync(join(d, "agent.config.toml"), text);
      const r = await cli(d, ["validate"]);
      assert.equal(r.code, 1, text);
      assert.match(r.stderr, pattern);
      assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
      const s = await cli(d, ["start"]);
      assert.equal(s.code, 1);
      assert.match(s.stderr, pattern);
    };
    await check(configText(receiver.url).replace("[inputs.desk]", "[inputs.desk"), /agent\.config\.toml:\d+: TOML syntax error/);
    await check(configText(receiver.url, "colour = 3\n"), /inputs\.desk\.colour: unknown key/);
    await check(configText(receiver.url).replace('type = "manual"', 'type = "manuel"'), /inputs\.desk\.type: unknown input type "manuel"/);
    await check(configText(receiver.url).replace('listen = "127.0.0.1:0"', 'listen = "0.0.0.0:0"'), /control\.token: required when control\.listen/);
    // a daemon that cannot come up: start says why and exits 1
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, "127.0.0.1", r));
    const port = (busy.address() as AddressInfo).port;
    writeFileSync(join(d, "agent.config.toml"), configText(receiver.url).replace('listen = "127.0.0.1:0"', `listen = "127.0.0.1:${port}"`));
    const failed = await cli(d, ["start"]);
    busy.close();
    assert.equal(failed.code, 1);
    assert.match(failed.stderr, /exited during start-up: .*cannot listen on 127\.0\.0\.1:\d+/);
    assert.equal((await cli(d, ["frobnicate"])).code, 2);
    assert.equal((await cli(d, ["post"])).code, 2);
    const help = await cli(d, ["status", "--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Usage: cybexp-agent status/);
  });

  test("an API outage and kill -9 mid-stream lose nothing of 50,000 lines", async () => {
    const d = freshFolder();
    writeFileSync(join(d, "agent.config.toml"), configText(receiver.url).replace("[inputs.honeypot]", "[inputs.honeypot]\nbatch.max_events = 500"));
    const name = "honeypot";
    receiver.uploads.length = 0;
    const arrivals = new Arrivals(receiver, name);
    receiver.failFor(3000, 503);
    const s = await cli(d, ["start"]);
    assert.equal(s.code, 0, s.stderr);
    const pid1 = JSON.parse(readFileSync(join(d, "data", "runningconfig"), "utf8")).pid;

    const total = 50_000;
    const writer = (async () => {
      for (let i = 0; i < total; i += 1000) {
        const chunk: string[] = [];
        for (let j = i; j < i + 1000; j++) chunk.push(`event seq=${j} src=198.51.100.${j % 250} proto=tcp dport=${j % 65535} honeypot=cowrie-01`);
        appendFileSync(join(d, "logs", "stream.log"), chunk.join("\n") + "\n");
        await new Promise((r) => setTimeout(r, 40));
      }
    })();
    // kill -9 once the API is back and uploads are flowing, with lines still being written
    await until(() => receiver.uploads.filter((u) => u.name === name).length >= 5, "uploads after the outage");
    process.kill(pid1, "SIGKILL");
    await until(() => !alive(pid1), "the daemon to die");
    const restarted = await cli(d, ["start"]);
    assert.equal(restarted.code, 0, restarted.stderr);
    await writer;

    await until(async () => arrivals.count() >= total && new Set(await arrivals.lines()).size >= total, "all 50,000 lines", 120_000);
    const got = await arrivals.lines();
    const unique = new Set(got);
    assert.equal(unique.size, total, "every line arrived");
    for (const l of unique) assert.match(l, /^event seq=\d+ /);
    const duplicates = got.length - unique.size;
    console.log(`kill -9 during delivery: ${total} lines delivered, ${duplicates} duplicates`);
    // duplicates come only from the window between the last durable checkpoint/ack and the kill
    assert.ok(duplicates <= 5000, `duplicates ${duplicates} beyond the documented window`);
    assert.equal((await cli(d, ["stop"])).code, 0);
  });
});

describe("from source under Deno", { skip: skip || !process.env.CYBEXP_E2E_DENO ? "set CYBEXP_E2E_DENO to the deno executable" : false }, () => {
  test("the same file-to-API flow runs with deno run -A agent/main.ts run", async () => {
    const receiver = await referenceReceiver();
    const d = mkdtempSync(join(tmpdir(), "e2e-deno-"));
    mkdirSync(join(d, "logs"));
    writeFileSync(join(d, "agent.config.toml"), configText(receiver.url));
    const lines = Array.from({ length: 2000 }, (_, i) => `deno line ${i}`);
    writeFileSync(join(d, "logs", "a.log"), lines.join("\n") + "\n");
    const command = [resolve(process.env.CYBEXP_E2E_DENO!), "run", "-A", resolve("agent/main.ts"), "run", "-c", join(d, "agent.config.toml")];
    const honeypot = new Arrivals(receiver, "honeypot");
    let agent: RunningAgent | undefined;
    try {
      agent = await startAgent(d, { command, env: process.env });
      await until(() => honeypot.count() >= 2000, `2000 lines from the Deno agent (${agent!.log().slice(-500)})`);
      assert.deepEqual(await honeypot.lines(), lines);
    } finally {
      await agent?.stop();
      await receiver.close();
      rmSync(d, { recursive: true, force: true });
    }
    assert.match(agent.log(), /agent stopped/);
  });
});
