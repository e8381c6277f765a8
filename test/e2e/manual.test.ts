// End to end with the compiled executable: hand submissions as people make them, with the real
// curl (-F file=@..., --data-urlencode, -d) and what arrives at the reference receiver.
// Runs when CYBEXP_E2E_BINARY names the executable (npm run test:e2e, .ci/run).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Receiver } from "../../scripts/receiver.ts";
import { Arrivals, referenceReceiver, runAgent, settleOrFail, skip, stopGracefully, type RunningAgent } from "../testing/e2e.ts";

const IOCS = ["203.0.113.9", "evil.example", "http://bad.example/login.php", "198.51.100.7",
  "44d88612fea8a8f36de796f40c2ea7d3", "phish.example"];

interface CurlAnswer {
  status: number;
  body: any;
}

/** Runs the real curl against the agent's events endpoint of input "desk", in the agent's folder. */
function curl(agent: RunningAgent, args: string[]): Promise<CurlAnswer> {
  return new Promise((res, rej) => {
    execFile("curl", ["-sS", "-w", "\n%{http_code}", "-H", `Authorization: Bearer ${agent.token}`, ...args, `${agent.url}/inputs/desk/events`],
      { cwd: agent.dir, timeout: 60_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
        if (err) return rej(new Error(`curl ${args.join(" ")}: ${stderr || err.message}`));
        const cut = stdout.lastIndexOf("\n");
        res({ status: Number(stdout.slice(cut + 1)), body: JSON.parse(stdout.slice(0, cut)) });
      });
  });
}

describe("manual submissions with curl", { skip }, () => {
  let receiver: Receiver;
  let agent: RunningAgent;

  before(async () => {
    receiver = await referenceReceiver();
    agent = await runAgent(receiver, `[inputs.desk]
type = "manual"
typetag = "manual-ti"
`, (dir) => {
      writeFileSync(join(dir, "iocs.txt"), IOCS.join("\n") + "\n");
      writeFileSync(join(dir, "report.json"), JSON.stringify([{ indicator: "203.0.113.10" }, { indicator: "203.0.113.11" }]));
      writeFileSync(join(dir, "deep.json"), "[".repeat(200_000) + "]".repeat(200_000));
      writeFileSync(join(dir, "cr.txt"), "10.0.0.1\r10.0.0.2\r\n10.0.0.3\n");
    });
  });
  after(async () => {
    if (agent) await stopGracefully(agent);
    await receiver?.close();
  });

  test("curl -F file=@iocs.txt (six lines): {\"accepted\":6}, six text events, no multipart framing in any upload", async () => {
    const arrivals = new Arrivals(receiver, "desk");
    assert.deepEqual(await curl(agent, ["-F", "file=@iocs.txt"]), { status: 202, body: { accepted: 6 } });
    await settleOrFail([[arrivals, 6]], () => `the six lines of iocs.txt: ${agent.log().slice(-1500)}`);
    assert.deepEqual(await arrivals.lines(), IOCS);
    assert.deepEqual(arrivals.kinds(), [["manual-ti", "desk.txt"]]);
    for (const u of receiver.uploads) {
      const text = new TextDecoder().decode(await receiver.file(u.seq));
      assert.doesNotMatch(text, /Content-Disposition|form-data|^--/im, `upload ${u.seq} holds multipart framing`);
    }
  });

  test("forms: a JSON file part with a data field, --data-urlencode data@FILE, a lone \\r; refused: curl -d, no usable part, 200k-deep JSON", async () => {
    const arrivals = new Arrivals(receiver, "desk");
    const before = (await arrivals.lines()).length;

    assert.deepEqual(await curl(agent, ["-F", "report=@report.json;type=application/json", "-F", 'data={"indicator":"203.0.113.12"}', "-F", "comment=seen twice"]),
      { status: 202, body: { accepted: 3 } });
    assert.deepEqual(await curl(agent, ["--data-urlencode", "data@iocs.txt"]), { status: 202, body: { accepted: 6 } });
    assert.deepEqual(await curl(agent, ["-H", "Content-Type: text/plain", "--data-binary", "@cr.txt"]), { status: 202, body: { accepted: 3 } });

    // curl -d drops the file's line breaks and sends it as an urlencoded form without a data field.
    const dashD = await curl(agent, ["-d", "@iocs.txt"]);
    assert.equal(dashD.status, 415);
    assert.match(dashD.body.error, /"data" field.*--data-binary/);
    const noUsable = await curl(agent, ["-F", "ioc=203.0.113.13"]);
    assert.equal(noUsable.status, 400);
    assert.match(noUsable.body.error, /no file part and no "data" field \(fields: "ioc"\)/);
    const deep = await curl(agent, ["-H", "Content-Type: application/json", "--data-binary", "@deep.json"]);
    assert.equal(deep.status, 400);
    assert.match(deep.body.error, /nests deeper than 1000 levels/);
    const deepPart = await curl(agent, ["-F", "file=@deep.json"]);
    assert.equal(deepPart.status, 400);
    assert.match(deepPart.body.error, /^part 1 \("file", deep\.json\): the JSON nests deeper than 1000 levels/);

    const want = ['{"indicator":"203.0.113.10"}', '{"indicator":"203.0.113.11"}', '{"indicator":"203.0.113.12"}', ...IOCS, "10.0.0.1", "10.0.0.2", "10.0.0.3"];
    await settleOrFail([[arrivals, before + want.length]], () => `the accepted forms: ${agent.log().slice(-1500)}`);
    const got = await arrivals.since(before);
    assert.deepEqual([...got].sort(), [...want].sort());
    assert.ok(agent.running(), "the agent still runs");
    assert.equal((await agent.input("desk")).events, IOCS.length + want.length);
  });
});
