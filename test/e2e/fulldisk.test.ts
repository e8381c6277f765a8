// A full disk, from outside, with the compiled executable: the data_dir on a real 20 MiB tmpfs.
// The spool stops at spool.min_free instead of filling the disk, a kill -9 on the full disk
// still starts again and delivers everything, a TCP syslog sender loses nothing, a manual post
// is all or nothing, and a stop with a full spool is quick and leaves no duplicates.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { appendFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import type { Receiver } from "../../scripts/receiver.ts";
import { cannotMount, mountSmallDisk, type SmallDisk } from "../testing/tmpfs.ts";
import { until } from "../testing/until.ts";
import {
  agentFolder, Arrivals, assertSameLines, configText, pause, referenceReceiver, settle, skip, startAgent, type RunningAgent,
} from "../testing/e2e.ts";

const MiB = 1 << 20;
const disks: SmallDisk[] = [];
const agents: RunningAgent[] = [];

/** A folder with the executable whose ./data is a fresh tmpfs of `mib` MiB. */
function folderOnSmallDisk(config: string, mib = 20): { dir: string; disk: SmallDisk } {
  const dir = agentFolder(config);
  const disk = mountSmallDisk(mib, join(dir, "data"));
  disks.push(disk);
  return { dir, disk };
}

async function start(dir: string): Promise<RunningAgent> {
  const a = await startAgent(dir);
  agents.push(a);
  return a;
}

async function health(agent: RunningAgent): Promise<{ status: number; body: { status: string; problems?: string[] } }> {
  const res = await fetch(`${agent.url}/health`);
  return { status: res.status, body: (await res.json()) as { status: string; problems?: string[] } };
}

const fileLines = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix} ${String(i).padStart(7, "0")} `.padEnd(100, "."));

describe("a full disk (compiled executable)", { skip: skip || cannotMount }, () => {
  let receiver: Receiver;
  before(async () => {
    receiver = await referenceReceiver();
  });
  after(async () => {
    for (const a of agents) if (a.running()) a.child.kill("SIGKILL");
    await pause(200);
    for (const d of disks) d.unmount();
    await receiver.close();
  });

  it("300,000 lines, API down: the disk keeps min_free; kill -9 on the full disk; started again with the API up, every line arrives", async () => {
    receiver.failFor(3_600_000, 503);
    const { dir, disk } = folderOnSmallDisk(configText(receiver.url, `
[inputs.big]
type = "file"
typetag = "e2e"
paths = ["big.log"]
start_at = "beginning"
`));
    const want = fileLines("big", 300_000);
    writeFileSync(join(dir, "big.log"), want.join("\n") + "\n");
    const first = await start(dir);
    let lowest = Infinity;
    const sampler = setInterval(() => (lowest = Math.min(lowest, disk.free())), 20);
    try {
      // The spool fills the disk down to min_free (5% of 20 MiB) and stops there.
      await until(async () => (await health(first)).body.problems?.some((p) => /spool full: free space/.test(p)) ?? false, "the spool to be full by min_free", 60_000);
      const h = await health(first);
      assert.equal(h.status, 503, "/health says so");
      await pause(1500); // it stays stopped there: inputs wait, nothing keeps writing
    } finally {
      clearInterval(sampler);
    }
    assert.ok(lowest > 0, "the disk never reached 0 free");
    assert.ok(lowest >= 512 * 1024, `free space stayed about min_free (lowest ${lowest} bytes)`);
    first.child.kill("SIGKILL");
    await until(() => !first.running(), "the agent to die");
    // Fill what is left, as another writer on the host would: start-up must not need the space.
    disk.fill(0, "other-writer");
    receiver.failFor(0);
    const arrivals = new Arrivals(receiver, "big");
    const second = await start(dir);
    const short = await settle([[arrivals, want.length]], { ms: 120_000 });
    const got = await arrivals.lines();
    const unique = new Set(got);
    assert.equal(short, "", `every line arrived (${unique.size} distinct of ${want.length}): ${second.log().slice(-1500)}`);
    for (const l of want) assert.ok(unique.has(l), `line ${l.slice(0, 12)} arrived`);
    const duplicates = got.length - unique.size;
    assert.ok(duplicates <= want.length / 100, `duplicates at most 1% (${duplicates})`);
    console.log(`full disk: ${want.length} lines, ${duplicates} duplicates, lowest free ${lowest} bytes`);
    second.child.kill("SIGKILL");
  });

  it("a TCP syslog sender while the disk is full: after space returns, every message it sent arrives", async () => {
    const { dir, disk } = folderOnSmallDisk(configText(receiver.url, `
[inputs.sys]
type = "syslog"
typetag = "e2e"
listen = ["tcp://127.0.0.1:0"]
`), 8);
    const agent = await start(dir);
    let port = 0;
    await until(async () => {
      const listening = ((await agent.input("sys")).listening ?? []) as string[];
      port = Number(/^tcp:\/\/127\.0\.0\.1:(\d+)$/.exec(listening[0] ?? "")?.[1] ?? 0);
      return port > 0;
    }, "the syslog listener's port in /status", 10_000);
    const filler = disk.fill(0, "other-writer"); // another process fills the disk
    const sent: string[] = [];
    const sockets = await Promise.all(Array.from({ length: 10 }, () => new Promise<ReturnType<typeof connect>>((res, rej) => {
      const s = connect(port, "127.0.0.1", () => res(s));
      s.once("error", rej);
    })));
    sockets.forEach((s, c) => {
      let frame = "";
      for (let i = 0; i < 1000; i++) {
        const msg = `conn ${c} message ${i}`;
        sent.push(msg);
        frame += `<13>1 2026-12-02T10:00:00Z host app - - - ${msg}\n`;
      }
      s.write(frame);
    });
    await pause(2000);
    assert.ok(agent.running(), "alive with a full disk");
    const arrivals = new Arrivals(receiver, "sys");
    assert.equal(arrivals.count(), 0, "nothing could be spooled yet");
    spawnSync("rm", ["-f", filler]);
    const short = await settle([[arrivals, sent.length]], { ms: 60_000 });
    for (const s of sockets) s.end();
    const messages = (await arrivals.lines()).map((l) => (JSON.parse(l) as { message: string }).message);
    assert.equal(short, "", `every message after space returned: ${agent.log().slice(-1500)}`);
    assertSameLines(messages, sent, "syslog messages");
    agent.child.kill("SIGKILL");
  });

  it("a manual post of 5,000 events while the disk is full is refused whole (503, Retry-After), and taken whole once there is room", async () => {
    const { dir, disk } = folderOnSmallDisk(configText(receiver.url, `
[inputs.hand]
type = "manual"
typetag = "e2e"
full_wait = "1s"
`), 8);
    const agent = await start(dir);
    const filler = disk.fill(200 * 1024, "other-writer");
    const events = Array.from({ length: 5000 }, (_, i) => JSON.stringify({ indicator: `198.51.100.${i % 250}`, n: i, pad: "p".repeat(150) }));
    const post = () => fetch(`${agent.url}/inputs/hand/events`, {
      method: "POST",
      headers: { authorization: `Bearer ${agent.token}`, "content-type": "application/x-ndjson" },
      body: events.join("\n") + "\n",
    });
    const refused = await post();
    assert.equal(refused.status, 503, await refused.clone().text());
    assert.ok(Number(refused.headers.get("retry-after")) > 0, "Retry-After");
    await pause(1500);
    const arrivals = new Arrivals(receiver, "hand");
    assert.equal(arrivals.count(), 0, "nothing of the refused post was taken");
    spawnSync("rm", ["-f", filler]);
    await until(async () => (await health(agent)).status === 200, "the spool to have room", 10_000);
    const taken = await post();
    assert.equal(taken.status, 202);
    assert.deepEqual(await taken.json(), { accepted: 5000 });
    const short = await settle([[arrivals, 5000]], { ms: 30_000 });
    assert.equal(short, "");
    assertSameLines(await arrivals.lines(), events, "the second post, once");
    agent.child.kill("SIGKILL");
  });

  it("stop with the spool full and the API down: within 10 s, no duplicates after the restart", async () => {
    receiver.failFor(3_600_000, 503);
    const dir = agentFolder(configText(receiver.url, `
[inputs.tail]
type = "file"
typetag = "e2e"
paths = ["tail.log"]
start_at = "beginning"
[inputs.hand]
type = "manual"
typetag = "e2e"
`).replace("[spool]\n", `[spool]\nmax_bytes = "1MiB"\n`));
    const want = fileLines("tail", 50_000);
    writeFileSync(join(dir, "tail.log"), want.join("\n") + "\n");
    const first = await start(dir);
    await until(async () => (await health(first)).body.problems?.some((p) => /spool full: spool.max_bytes/.test(p)) ?? false, "the spool to be full", 30_000);
    const posting = fetch(`${first.url}/inputs/hand/events`, {
      method: "POST", headers: { authorization: `Bearer ${first.token}`, "content-type": "text/plain" }, body: "203.0.113.1\n",
    });
    await pause(200);
    const t0 = Date.now();
    const how = await first.stop();
    const took = Date.now() - t0;
    const answer = await posting;
    assert.ok(took < 10_000, `stopped in ${took} ms (${how})`);
    assert.ok(!/did not stop in time/.test(first.log()), "every input stopped in time");
    assert.equal(answer.status, 503, "a manual post waiting at shutdown gets 503, not 500");
    appendFileSync(join(dir, "tail.log"), "");
    receiver.failFor(0);
    const arrivals = new Arrivals(receiver, "tail");
    const second = await start(dir);
    const short = await settle([[arrivals, want.length]], { ms: 60_000 });
    assert.equal(short, "");
    assertSameLines(await arrivals.lines(), want, "after a graceful stop with a full spool");
    await second.stop();
  });
});
