import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import plugin from "./index.ts";
import { InputError } from "../../agent/plugin.ts";
import { Spool } from "../../agent/spool/index.ts";
import { StateStore } from "../../agent/state.ts";
import { createInputContext } from "../../agent/context.ts";
import { silentLogger } from "../../agent/log.ts";
import { controlApp, type ControlApi } from "../../agent/control.ts";
import { serve } from "../../agent/serve.ts";
import { MAX_JSON_DEPTH, parseSubmission } from "./body.ts";
import { drainSpool, runInput } from "../../test/testing/plugin-harness.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const TOKEN = "manual-test-token";

async function withManualInput(raw: Record<string, unknown>, fn: (env: {
  input: ReturnType<typeof plugin.create>;
  spool: Spool;
  events: () => Array<{ kind: string; event: string }>;
  stop: () => Promise<void>;
}) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), "manual-input-"));
  // A one-minute fsync interval: only the submit's own sync makes its events durable at once.
  const spool = await Spool.open({ dir: join(dir, "spool"), maxBytes: 64 << 20, whenFull: "block", fsync: 60_000, log: silentLogger });
  let input!: ReturnType<typeof plugin.create>;
  const { stop } = runInput((signal) => {
    const ctx = createInputContext({
      name: "hand", spool, state: new StateStore(join(dir, "state")), route: "hand",
      log: silentLogger, signal, hostname: "test",
    });
    input = plugin.create(plugin.options.parse(raw), ctx);
    return input.run();
  });
  // the events handed over since the last call
  const events = () => drainSpool(spool, []);
  try {
    await fn({ input, spool, events, stop });
  } finally {
    await stop();
    await spool.close();
    await rm(dir, { recursive: true, force: true });
  }
}

test("options: max_body_bytes defaults to 10MiB, full_wait to 10s, unknown keys are refused", () => {
  assert.equal(plugin.type, "manual");
  assert.deepEqual(plugin.options.parse({}), { max_body_bytes: 10 * 1024 * 1024, full_wait: 10_000 });
  assert.equal(plugin.options.parse({ max_body_bytes: "1KiB" }).max_body_bytes, 1024);
  assert.equal(plugin.options.safeParse({ paths: ["x"] }).success, false);
});

test("submissions of each shape are spooled as their events", async () => {
  await withManualInput({}, async ({ input, events }) => {
    assert.deepEqual(await input.submit!(enc('{"indicator":"1.2.3.4","type":"ip"}'), "application/json"), { accepted: 1 });
    assert.deepEqual(await input.submit!(enc('{"a":1}\n{"b":2}\n'), "application/x-ndjson"), { accepted: 2 });
    assert.deepEqual(await input.submit!(enc("evil.example\r\nbad.example\r\n"), null), { accepted: 2 });
    assert.deepEqual(events(), [
      { kind: "json", event: '{"indicator":"1.2.3.4","type":"ip"}' },
      { kind: "json", event: '{"a":1}' },
      { kind: "json", event: '{"b":2}' },
      { kind: "text", event: "evil.example" },
      { kind: "text", event: "bad.example" },
    ]);
  });
});

test("the answer comes only once the events are durable", async () => {
  await withManualInput({}, async ({ input, spool }) => {
    await input.submit!(enc('[{"a":1},{"a":2}]'), "application/json");
    // With a one-minute fsync interval, only a sync append explains an already durable spool.
    let settled = false;
    void spool.whenDurable().then(() => { settled = true; });
    await new Promise((r) => setTimeout(r, 0));
    assert.ok(settled);
  });
});

test("a bad body is refused whole: nothing of it is spooled", async () => {
  await withManualInput({}, async ({ input, events }) => {
    await assert.rejects(input.submit!(enc('{"a":1}\n{"b":2}\n{"c":'), "application/x-ndjson"),
      (err: unknown) => err instanceof InputError && err.status === 400 && /^line 3: /.test(err.message));
    await assert.rejects(input.submit!(enc(""), "text/plain"), (err: unknown) => err instanceof InputError && err.status === 400);
    assert.deepEqual(events(), []);
  });
});

test("a body over max_body_bytes is refused with 413", async () => {
  await withManualInput({ max_body_bytes: 100 }, async ({ input, events }) => {
    await assert.rejects(input.submit!(enc("x".repeat(101)), "text/plain"),
      (err: unknown) => err instanceof InputError && err.status === 413 && /max_body_bytes/.test(err.message));
    assert.deepEqual(await input.submit!(enc("y".repeat(100)), "text/plain"), { accepted: 1 });
    assert.equal(events().length, 1);
  });
});

test("run() returns when the input is stopped; a stopped input takes nothing", async () => {
  await withManualInput({}, async ({ input, stop, events }) => {
    await stop();
    await assert.rejects(input.submit!(enc("x"), "text/plain"), (err: unknown) => err instanceof InputError && err.status === 503);
    assert.deepEqual(events(), []);
  });
});

// ---- submissions over HTTP, as people make them ---------------------------------------------

/** The real control server on 127.0.0.1 in front of a manual input named "hand". */
async function withControlServer(fn: (env: {
  post: (body: BodyInit, contentType?: string) => Promise<{ status: number; json: any }>;
  url: string;
  events: () => Array<{ kind: string; event: string }>;
}) => Promise<void>) {
  await withManualInput({}, async ({ input, events }) => {
    const api: ControlApi = {
      health: () => ({ problems: [] }),
      status: () => ({}),
      metrics: () => "",
      inputAction: async () => {},
      reload: async () => ({}) as never,
      shutdown: () => {},
      submit: (name, body, contentType) => {
        assert.equal(name, "hand");
        return input.submit!(body, contentType);
      },
      preview: (_name, body, contentType) => input.preview!(body, contentType),
      tap: () => assert.fail("no tap here"),
    };
    let port = 0;
    const app = controlApp(api, { tokens: () => [TOKEN], maxBodyBytes: () => 64 << 20, listenHost: "127.0.0.1", port: () => port });
    const server = await serve((req) => app.fetch(req), { hostname: "127.0.0.1", port: 0 });
    port = server.port;
    const url = `http://127.0.0.1:${server.port}/inputs/hand/events`;
    try {
      await fn({
        url,
        events,
        async post(body, contentType) {
          const headers: Record<string, string> = { authorization: `Bearer ${TOKEN}` };
          if (contentType) headers["content-type"] = contentType;
          // fetch labels a string body text/plain; bytes go without a Content-Type.
          else if (typeof body === "string") body = enc(body);
          const res = await fetch(url, { method: "POST", body, headers });
          return { status: res.status, json: await res.json() };
        },
      });
    } finally {
      await server.close();
    }
  });
}

const SIX_IOCS = "203.0.113.9\nevil.example\nhttp://bad.example/x\n198.51.100.7\n" +
  "44d88612fea8a8f36de796f40c2ea7d3\nphish.example\n";

function assertNoFraming(events: Array<{ event: string }>) {
  for (const { event } of events) {
    assert.doesNotMatch(event, /^--|Content-Disposition|Content-Type|form-data/i, `multipart framing in an event: ${event}`);
  }
}

test("multipart: a file part of six lines (what curl -F file=@iocs.txt sends) is six text events, no framing", async () => {
  await withControlServer(async ({ post, events }) => {
    const form = new FormData();
    form.append("file", new Blob([SIX_IOCS], { type: "text/plain" }), "iocs.txt");
    assert.deepEqual(await post(form), { status: 202, json: { accepted: 6 } });
    const got = events();
    assertNoFraming(got);
    assert.deepEqual(got.map((e) => e.event), SIX_IOCS.trimEnd().split("\n"));
    assert.ok(got.every((e) => e.kind === "text"));
  });
});

test("multipart: file parts follow their Content-Type or are sniffed; a data field is a body; other fields are ignored", async () => {
  await withControlServer(async ({ post, events }) => {
    const form = new FormData();
    form.append("note", "ignored: not a file, not data");
    form.append("report", new Blob(['[{"ip":"203.0.113.9"},{"ip":"198.51.100.7"}]'], { type: "application/json" }), "report.json");
    // application/octet-stream says nothing: sniffed, here NDJSON.
    form.append("more", new Blob(['{"url":"http://bad.example/"}\r\n{"url":"http://evil.example/"}\r\n'], { type: "application/octet-stream" }), "more.ndjson");
    form.append("data", '{"domain":"phish.example"}');
    assert.deepEqual(await post(form), { status: 202, json: { accepted: 5 } });
    assert.deepEqual(events(), [
      { kind: "json", event: '{"ip":"203.0.113.9"}' },
      { kind: "json", event: '{"ip":"198.51.100.7"}' },
      { kind: "json", event: '{"url":"http://bad.example/"}' },
      { kind: "json", event: '{"url":"http://evil.example/"}' },
      { kind: "json", event: '{"domain":"phish.example"}' },
    ]);

    // A browser form: a text area named data and a file input left empty.
    const browser = new FormData();
    browser.append("data", "10.0.0.1\r\n10.0.0.2\r\n");
    browser.append("file", new Blob([], { type: "application/octet-stream" }), "");
    browser.append("submit", "Send");
    assert.deepEqual(await post(browser), { status: 202, json: { accepted: 2 } });
    assert.deepEqual(events(), [{ kind: "text", event: "10.0.0.1" }, { kind: "text", event: "10.0.0.2" }]);
  });
});

test("multipart: no usable part, bad framing, a bad part or mixed kinds are 400s naming why, and nothing is taken", async () => {
  await withControlServer(async ({ post, events }) => {
    const B = "xYzBoundary42";
    const ct = `multipart/form-data; boundary=${B}`;
    const file = (name: string, content: string, type = "text/plain") =>
      `--${B}\r\nContent-Disposition: form-data; name="${name}"; filename="${name}.txt"\r\nContent-Type: ${type}\r\n\r\n${content}\r\n`;
    const expect400 = async (body: BodyInit, contentType: string | undefined, pattern: RegExp) => {
      const r = await post(body, contentType);
      assert.equal(r.status, 400, JSON.stringify(r.json));
      assert.match(r.json.error, pattern);
    };

    const onlyFields = new FormData();
    onlyFields.append("ioc", "203.0.113.9");
    onlyFields.append("comment", "seen twice");
    await expect400(onlyFields, undefined, /no file part and no "data" field \(fields: "ioc", "comment"\)/);
    await expect400(`--${B}--\r\n`, ct, /the multipart body has no parts/);
    await expect400(file("file", "1.2.3.4") + `--${B}--\r\n`, "multipart/form-data", /no boundary parameter/);
    await expect400(file("file", "1.2.3.4") + `--${B}--\r\n`, "multipart/form-data; boundary=other", /holds no boundary line "--other"/);
    await expect400(file("file", "1.2.3.4") + `--${B}--\r\n`, `multipart/form-data; boundary="${"b".repeat(71)}"`, /not a valid boundary/);
    // Cut off before the closing boundary: the first part is whole, yet nothing is taken.
    await expect400(file("a", "1.2.3.4") + file("b", "5.6.7.8"), ct, /ends before its closing boundary/);
    await expect400(file("a", "  \r\n") + `--${B}--\r\n`, ct, /has no events: part 1 \("a", a\.txt\) is empty/);
    await expect400(`--${B}\r\nContent-Type: text/plain\r\n\r\n1.2.3.4\r\n--${B}--\r\n`, ct, /part 1: no "Content-Disposition: form-data" header/);
    await expect400(file("a", '{"a":1}', "application/x-ndjson") + file("b", '{"b":2}\n{"c":', "application/x-ndjson") + `--${B}--\r\n`, ct,
      /^part 2 \("b", b\.txt\): line 2: /);
    await expect400(file("a", '{"a":1}', "application/json") + file("b", "1.2.3.4") + `--${B}--\r\n`, ct,
      /part 2 \("b", b\.txt\) holds text events but part 1 \("a", a\.txt\) holds json events; one submission holds one kind/);
    assert.deepEqual(events(), []);

    // The same framing, whole: taken.
    assert.deepEqual(await post(`preamble\r\n` + file("a", "1.2.3.4") + file("b", "5.6.7.8\r\n") + `--${B}--\r\nepilogue`, ct),
      { status: 202, json: { accepted: 2 } });
    assert.deepEqual(events().map((e) => e.event), ["1.2.3.4", "5.6.7.8"]);
  });
});

test("multipart from the real curl -F file=@iocs.txt", { skip: curlMissing() }, async () => {
  await withControlServer(async ({ url, events }) => {
    const dir = await mkdtemp(join(tmpdir(), "manual-curl-"));
    try {
      await writeFile(join(dir, "iocs.txt"), SIX_IOCS);
      const out = await run("curl", ["-sS", "-H", `Authorization: Bearer ${TOKEN}`, "-F", `file=@${join(dir, "iocs.txt")}`, url]);
      assert.deepEqual(JSON.parse(out), { accepted: 6 });
      const got = events();
      assertNoFraming(got);
      assert.deepEqual(got.map((e) => e.event), SIX_IOCS.trimEnd().split("\n"));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

test("application/x-www-form-urlencoded: the data field is a body; without one 415 naming what is accepted", async () => {
  await withControlServer(async ({ post, events }) => {
    assert.deepEqual(await post(new URLSearchParams({ data: "203.0.113.9\nevil.example", other: "x" })), { status: 202, json: { accepted: 2 } });
    assert.deepEqual(await post("data=%7B%22a%22%3A1%7D%0A%7B%22b%22%3A2%7D", "application/x-www-form-urlencoded"), { status: 202, json: { accepted: 2 } });
    assert.deepEqual(events(), [
      { kind: "text", event: "203.0.113.9" }, { kind: "text", event: "evil.example" },
      { kind: "json", event: '{"a":1}' }, { kind: "json", event: '{"b":2}' },
    ]);
    // What `curl -d @iocs.txt` sends: the file's lines run together, no data field.
    const noData = await post("203.0.113.9evil.example", "application/x-www-form-urlencoded");
    assert.equal(noData.status, 415);
    assert.match(noData.json.error, /"data" field.*text\/plain, application\/json or application\/x-ndjson.*multipart\/form-data/);
    const badEscape = await post("data=1.2.3.4%ZZ", "application/x-www-form-urlencoded");
    assert.equal(badEscape.status, 400);
    assert.match(badEscape.json.error, /field 1 \("data"\): a "%" not followed by two hex digits/);
    const badUtf8 = await post("data=%FF%FE", "application/x-www-form-urlencoded");
    assert.equal(badUtf8.status, 400);
    assert.match(badUtf8.json.error, /field 1 \("data"\): the body is not valid UTF-8/);
    assert.deepEqual(events(), []);
  });
});

test(`JSON nested 200,000 levels deep is a 400 naming the limit (${MAX_JSON_DEPTH}), in every path`, async () => {
  await withControlServer(async ({ post, events }) => {
    const deepArray = "[".repeat(200_000) + "]".repeat(200_000);
    const deepObject = '{"a":'.repeat(200_000) + "1" + "}".repeat(200_000);
    const cases: Array<[string, string | undefined]> = [
      [deepArray, "application/json"], [deepObject, "application/json"], [deepObject, undefined],
      [`{"ok":1}\n${deepObject}\n`, "application/x-ndjson"], [deepArray, undefined],
    ];
    for (const [body, type] of cases) {
      const r = await post(body, type);
      assert.equal(r.status, 400, `${type}: ${JSON.stringify(r.json)}`);
      assert.match(r.json.error, new RegExp(`deeper than ${MAX_JSON_DEPTH} levels`));
    }
    const form = new FormData();
    form.append("data", deepObject);
    const r = await post(form);
    assert.equal(r.status, 400);
    assert.match(r.json.error, /^part 1 \("data" field\): the JSON nests deeper than 1000 levels/);
    assert.deepEqual(events(), []);
  });
});

test("the nesting limit: 1000 levels are taken, 1001 refused; brackets inside strings do not count", () => {
  const nested = (levels: number) => '{"a":'.repeat(levels - 1) + "{}" + "}".repeat(levels - 1);
  assert.equal(parseSubmission(enc(nested(MAX_JSON_DEPTH)), "application/json").events.length, 1);
  assert.throws(() => parseSubmission(enc(nested(MAX_JSON_DEPTH + 1)), "application/json"),
    (err: unknown) => err instanceof InputError && err.status === 400 && /^the JSON nests deeper than 1000 levels .*, at line 1$/.test(err.message));
  assert.throws(() => parseSubmission(enc(`{"a":1}\n{"b":2}\n${nested(1001)}`), "application/x-ndjson"),
    (err: unknown) => err instanceof InputError && /^line 3: nests deeper than 1000 levels/.test(err.message));
  const brackets = JSON.stringify({ s: "[{".repeat(5000) + '\\"' });
  assert.deepEqual(parseSubmission(enc(brackets), "application/json").events, [brackets]);
});

test("a lone \\r ends a line in text and NDJSON alike, as \\n and \\r\\n do", async () => {
  await withControlServer(async ({ post, events }) => {
    assert.deepEqual(await post("203.0.113.9\revil.example\r\nbad.example\n\rlast", "text/plain"), { status: 202, json: { accepted: 4 } });
    assert.deepEqual(await post("1.1.1.1\r2.2.2.2\r"), { status: 202, json: { accepted: 2 } });
    assert.deepEqual(await post('{"a":1}\r{"b":2}\r\n{"c":3}', "application/x-ndjson"), { status: 202, json: { accepted: 3 } });
    assert.deepEqual(events().map((e) => e.event), [
      "203.0.113.9", "evil.example", "bad.example", "last", "1.1.1.1", "2.2.2.2", '{"a":1}', '{"b":2}', '{"c":3}',
    ]);
    // Inside a JSON array of strings a \r is a line break too: refused rather than split.
    const r = await post('["a\\rb"]', "application/json");
    assert.equal(r.status, 400);
    assert.match(r.json.error, /element 0: a text event cannot contain a line break/);
  });
});

function curlMissing(): string | false {
  try {
    execFileSync("curl", ["--version"], { stdio: "ignore" });
    return false;
  } catch {
    return "curl is not installed";
  }
}

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((res, rej) => {
    execFile(cmd, args, { timeout: 30_000 }, (err, stdout, stderr) => (err ? rej(new Error(`${cmd}: ${stderr || err.message}`)) : res(stdout)));
  });
}
