// The output seen from outside: the compiled agent against an API that refuses everything it
// is sent, through GET /health and /status, and back to healthy once the API accepts again.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { appendFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startReceiver } from "../../scripts/receiver.ts";
import { until } from "../testing/until.ts";
import { healthUntil, pause, referenceReceiver, runAgent, skip, stopGracefully, TOKEN } from "../testing/e2e.ts";

const lines = (from: number, n: number) => Array.from({ length: n }, (_, i) => `app line ${from + i}`).join("\n") + "\n";

/** Polls GET /health until it answers `status`; resolves to that answer. */
const healthBecomes = (url: string, status: number, ms: number) => healthUntil(url, (h) => h.status === status, `GET /health ${status}`, ms);

describe("output health (compiled executable)", { skip }, () => {
  test("an API answering 400 to everything: GET /health 503 naming the output within 15 s, 200 once the API accepts again", async () => {
    const receiver = await referenceReceiver();
    receiver.failFor(3_600_000, 400);
    const agent = await runAgent(
      receiver,
      `[inputs.app]
type = "file"
paths = ["./app.log"]
typetag = "app"
[inputs.app.batch]
max_events = 5
`,
      (dir) => writeFileSync(join(dir, "app.log"), lines(0, 50)),
    );
    try {
      const t0 = Date.now();
      const failing = await healthBecomes(agent.url, 503, 15_000);
      const took = Date.now() - t0;
      assert.equal(failing.body.status, "degraded");
      const problem = failing.body.problems?.find((p) => p.startsWith("output "));
      assert.match(
        problem ?? "",
        /^output failing: the API rejected \d+ of the last \d+ uploads \(moved to dead letters\); last error: HTTP 400 from http:\/\/127\.0\.0\.1:\d+\/raw: /,
        `problems: ${JSON.stringify(failing.body.problems)}`,
      );
      process.stderr.write(`/health 503 ${took} ms after the agent started\n`);

      const res = await fetch(`${agent.url}/status`, { headers: { authorization: `Bearer ${agent.token}` } });
      const output = (await res.json()).output;
      assert.equal(output.state, "failing");
      assert.ok(output.dead_lettered >= 3, `dead_lettered ${output.dead_lettered}`);
      assert.ok(output.dead_letter_bytes > 0, `dead_letter_bytes ${output.dead_letter_bytes}`);
      assert.equal(output.dead_letter_removed, 0);
      assert.ok(readdirSync(join(agent.dir, "data", "dead-letter")).some((n) => n.endsWith(".txt")), "dead letters on disk");
      assert.equal(receiver.uploads.length, 0);

      // The API accepts again: new lines are delivered and the output turns healthy.
      receiver.failFor(0);
      appendFileSync(join(agent.dir, "app.log"), lines(50, 50));
      await healthBecomes(agent.url, 200, 30_000);
      await until(() => receiver.totalLines() === 50, "the new lines delivered", 30_000);
    } finally {
      await stopGracefully(agent);
      await receiver.close();
    }
  });

  test("an API away for a minute: the first upload comes within 30 s of its return (the backoff ceiling is past 60 s by then)", async () => {
    // The API's port, closed: connections are refused until a receiver listens there again.
    const away = await referenceReceiver();
    await away.close();
    const port = away.port;
    const agent = await runAgent(
      away,
      `[inputs.app]
type = "file"
paths = ["./app.log"]
typetag = "app"
`,
      (dir) => writeFileSync(join(dir, "app.log"), lines(0, 20)),
    );
    let back: Awaited<ReturnType<typeof startReceiver>> | undefined;
    try {
      const status = async () =>
        (await (await fetch(`${agent.url}/status`, { headers: { authorization: `Bearer ${agent.token}` } })).json()).output;
      await until(async () => /^network error/.test((await status()).last_error ?? ""), "a network error", 15_000);
      await pause(60_000);
      const before = await status();
      assert.notEqual(before.state, "ok");
      assert.equal(before.sent_events, 0);
      back = await startReceiver({ port, hostname: "127.0.0.1", token: TOKEN, keepFiles: true });
      const returned = Date.now();
      await until(() => back!.uploads.length > 0, "an upload after the API's return", 40_000);
      const after = back.uploads[0]!.receivedAt - returned;
      const probed = agent.log().includes('"msg":"the API answers again; retrying now"');
      process.stderr.write(`first upload ${after} ms after the API's return (${before.retries} retries during the outage; ${probed ? "a probe noticed it" : "the backoff ran out first"})\n`);
      assert.ok(after <= 30_000, `first upload ${after} ms after the API's return`);
      await until(() => back!.totalLines() === 20, "all lines", 30_000);
    } finally {
      await stopGracefully(agent);
      await back?.close();
    }
  });
});
