import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { ConfigError, loadConfig, parseConfig, substituteEnv } from "../agent/config.ts";
import { parseDuration, parseSize } from "../agent/units.ts";
import { inputPlugins } from "../plugins/index.ts";
import { API, configProblems } from "./testing/config.ts";

function problems(text: string, env: Record<string, string> = {}): string[] {
  return configProblems(text, inputPlugins, { env });
}

describe("config", () => {
  test("a full config resolves defaults, overrides and data_dir relative to the file", () => {
    const c = parseConfig(
      `[agent]\ndata_dir = "spool-here"\n${API}timezone = "America/New_York"\n[api.batch]\nmax_events = 500\nmax_wait = "250ms"\n` +
        `[spool]\nmax_bytes = "64MiB"\nwhen_full = "drop_oldest"\nfsync = "always"\n` +
        `[inputs.auth]\ntype = "file"\ntypetag = "syslog"\npaths = ["/var/log/auth.log"]\n` +
        `[inputs.hand]\ntype = "manual"\ntypetag = "manual"\nname = "analyst-desk"\norgid = "org2"\nbatch.max_events = 1\n`,
      "/etc/cybexp/agent.toml",
      inputPlugins,
      {},
    );
    assert.equal(c.agent.dataDir, "/etc/cybexp/spool-here");
    assert.equal(c.spool.maxBytes, 64 * 1024 * 1024);
    assert.equal(c.spool.fsync, "always");
    assert.equal(c.spool.whenFull, "drop_oldest");
    assert.deepEqual(c.control.listen, { host: "127.0.0.1", port: 8765 });
    const auth = c.inputs.get("auth")!;
    assert.equal(auth.uploadName, "auth");
    assert.equal(auth.orgid, "org1");
    assert.equal(auth.timezone, "America/New_York");
    assert.deepEqual(auth.batch, { maxEvents: 500, maxBytes: 1024 * 1024, maxWaitMs: 250 });
    const hand = c.inputs.get("hand")!;
    assert.equal(hand.uploadName, "analyst-desk");
    assert.equal(hand.orgid, "org2");
    assert.equal(hand.batch.maxEvents, 1);
  });

  test("broken TOML names the line", () => {
    const p = problems(`${API}[inputs.a\ntype = "file"\n`);
    assert.equal(p.length, 1);
    assert.match(p[0]!, /^\/etc\/agent\.toml:5: TOML syntax error/);
  });

  test("unknown keys and unknown input types are named by key path and line", () => {
    const p = problems(`${API}colour = "blue"\n[inputs.auth]\ntype = "fiel"\ntypetag = "x"\n[inputs.b]\ntype = "file"\ntypetag = "x"\npaths = ["/x"]\nbogus = 1\n`);
    assert.ok(p.some((l) => /:5: api\.colour: unknown key/.test(l)), p.join("\n"));
    assert.ok(p.some((l) => /:7: inputs\.auth\.type: unknown input type "fiel" \(known: .*file.*manual/.test(l)), p.join("\n"));
    assert.ok(p.some((l) => /:13: inputs\.b\.bogus: unknown key/.test(l)), p.join("\n"));
  });

  test("wrong types name the element and what is expected", () => {
    const p = problems(`${API}[inputs.auth]\ntype = "file"\ntypetag = "syslog"\npaths = [42]\nstart_at = "middle"\n`);
    assert.ok(p.some((l) => /inputs\.auth\.paths\[0\]: .*string/.test(l)), p.join("\n"));
    assert.ok(p.some((l) => /inputs\.auth\.start_at: .*"beginning"/.test(l)), p.join("\n"));
  });

  test("typetag is required on every input", () => {
    const p = problems(`${API}[inputs.hand]\ntype = "manual"\n`);
    assert.ok(p.some((l) => /inputs\.hand\.typetag: required/.test(l)), p.join("\n"));
  });

  test("durations and sizes are checked", () => {
    const p = problems(`${API}timeout = "soon"\n[spool]\nmax_bytes = "lots"\nfsync = "sometimes"\n`);
    assert.ok(p.some((l) => /api\.timeout: expected a duration/.test(l)), p.join("\n"));
    assert.ok(p.some((l) => /spool\.max_bytes: expected a size/.test(l)), p.join("\n"));
    assert.ok(p.some((l) => /spool\.fsync: expected "always", "never" or a duration/.test(l)), p.join("\n"));
    assert.equal(parseDuration("1.5s"), 1500);
    assert.equal(parseDuration("5m"), 300_000);
    assert.equal(parseSize("512KiB"), 512 * 1024);
    assert.equal(parseSize("1GiB"), 1024 ** 3);
    assert.equal(parseSize(4096), 4096);
    assert.equal(parseSize("12 parsecs"), undefined);
  });

  test("a plugin's checks across its options are config errors naming the key", () => {
    const p = problems(`${API}[inputs.tls]\ntype = "syslog"\ntypetag = "syslog"\nlisten = ["tls://127.0.0.1:6514"]\n`);
    assert.ok(p.some((l) => /:5: inputs\.tls\.tls_cert: .*tls:\/\//.test(l)), p.join("\n"));
    assert.ok(p.some((l) => /inputs\.tls\.tls_key: /.test(l)), p.join("\n"));
  });

  test("a non-loopback control address needs a token", () => {
    const p = problems(`[control]\nlisten = "0.0.0.0:8765"\n${API}`);
    assert.ok(p.some((l) => /control\.token: required when control\.listen \(0\.0\.0\.0:8765\) is not a loopback address/.test(l)), p.join("\n"));
    const ok = parseConfig(`[control]\nlisten = "0.0.0.0:8765"\ntoken = "s3cret"\n${API}`, "/x.toml", inputPlugins, {});
    assert.equal(ok.control.token, "s3cret");
    parseConfig(`[control]\nlisten = "[::1]:0"\n${API}`, "/x.toml", inputPlugins, {});
  });

  test("${VAR} and ${VAR:-default} come from the environment; comments are left alone", () => {
    const c = parseConfig(
      `# token = "\${NOT_SET_ANYWHERE}"\n[api]\nurl = "\${API_URL:-http://127.0.0.1:9}"\ntoken = "\${TOKEN}"\norgid = "o"\n`,
      "/x.toml",
      inputPlugins,
      { TOKEN: 'with "quotes" \\ and backslash' },
    );
    assert.equal(c.api!.url, "http://127.0.0.1:9");
    assert.equal(c.api!.token, 'with "quotes" \\ and backslash');
    const p = problems(`[api]\nurl = "http://x"\ntoken = "\${MISSING_TOKEN}"\norgid = "o"\n`);
    assert.match(p[0]!, /:3: environment variable MISSING_TOKEN is not set/);
    assert.equal(substituteEnv("a = \"$${LITERAL}\"", {}).text, 'a = "${LITERAL}"');
  });

  test("every problem is reported, not just the first", () => {
    const p = problems(`[api]\nurl = "not a url"\n[inputs.a]\ntype = "file"\ntypetag = "t"\n[inputs.b]\ntype = "nope"\ntypetag = "t"\n`);
    assert.ok(p.length >= 2, p.join("\n"));
  });

  test("fingerprints change only when an input's settings change", () => {
    const base = `${API}[inputs.a]\ntype = "manual"\ntypetag = "t"\n[inputs.b]\ntype = "manual"\ntypetag = "u"\n`;
    const one = parseConfig(base, "/x.toml", inputPlugins, {});
    const two = parseConfig(base.replace('typetag = "u"', 'typetag = "v"'), "/x.toml", inputPlugins, {});
    assert.equal(one.inputs.get("a")!.fingerprint, two.inputs.get("a")!.fingerprint);
    assert.notEqual(one.inputs.get("b")!.fingerprint, two.inputs.get("b")!.fingerprint);
  });

  test("loadConfig reports an unreadable file in one line", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cfg-"));
    await assert.rejects(loadConfig(join(dir, "missing.toml"), inputPlugins), (e: ConfigError) => /cannot read the config file \(ENOENT\)/.test(e.problems[0]!));
    writeFileSync(join(dir, "ok.toml"), API);
    const c = await loadConfig(join(dir, "ok.toml"), inputPlugins);
    assert.equal(c.agent.dataDir, join(dir, "data"));
  });

  test("the repository's agent.config.toml is valid", async () => {
    const c = await loadConfig(new URL("../agent.config.toml", import.meta.url).pathname, inputPlugins, {});
    assert.ok(c.inputs.size >= 2);
  });
});

describe("[output]", () => {
  const NATS = `[output]\ntype = "nats"\n[output.nats]\nservers = ["nats://127.0.0.1:4222", "tls://nats2.example:4222"]\n`;

  test("the default output is the Cybex-P API; without [api] that is an error naming [api]", () => {
    const c = parseConfig(API, "/x.toml", inputPlugins, {});
    assert.equal(c.output.type, "cybexp_api");
    assert.deepEqual(c.output.batch, { maxEvents: 1000, maxBytes: 1024 * 1024, maxWaitMs: 1000 });
    const p = problems(`[agent]\ndata_dir = "d"\n`);
    assert.equal(p.length, 1);
    assert.match(p[0]!, /^api: required: the \[api\] table says where uploads go/);
  });

  test("type = nats needs no [api]: defaults, [output.batch], and inputs without an orgid send none", () => {
    const c = parseConfig(`${NATS}[output.batch]\nmax_events = 200\n[inputs.hand]\ntype = "manual"\ntypetag = "t"\n[inputs.mine]\ntype = "manual"\ntypetag = "u"\norgid = "org9"\n[inputs.mine.batch]\nmax_events = 5\n`, "/etc/a/x.toml", inputPlugins, {});
    assert.equal(c.api, undefined);
    assert.equal(c.output.type, "nats");
    const n = c.output.nats!;
    assert.deepEqual(n.servers, ["nats://127.0.0.1:4222", "tls://nats2.example:4222"]);
    assert.equal(n.stream, "CYBEXP_RAW");
    assert.equal(n.subjectPrefix, "cybexp.raw");
    assert.equal(n.createStream, false);
    assert.equal(n.replicas, 1);
    assert.equal(n.duplicateWindowMs, 120_000);
    assert.equal(n.timeout, 10_000);
    assert.equal(c.output.batch.maxEvents, 200);
    assert.equal(c.inputs.get("hand")!.orgid, "");
    assert.equal(c.inputs.get("hand")!.timezone, "UTC");
    assert.equal(c.inputs.get("hand")!.batch.maxEvents, 200);
    assert.equal(c.inputs.get("mine")!.orgid, "org9");
    assert.equal(c.inputs.get("mine")!.batch.maxEvents, 5);
  });

  test("[api.batch] is the output's batch when there is no [output.batch]", () => {
    const c = parseConfig(`${NATS}${API}[api.batch]\nmax_events = 300\n[inputs.hand]\ntype = "manual"\ntypetag = "t"\n`, "/x.toml", inputPlugins, {});
    assert.equal(c.output.batch.maxEvents, 300);
    assert.equal(c.inputs.get("hand")!.orgid, "org1");
  });

  test("a wrong servers URL, a missing [output.nats], an unknown type and a bad stream name are errors naming the key and line", () => {
    const bad = problems(`[output]\ntype = "nats"\n[output.nats]\nservers = ["http://127.0.0.1:4222", "127.0.0.1:4222"]\nstream = "a.b"\n`);
    assert.ok(bad.some((l) => /:4: output\.nats\.servers\[0\]: expected a nats:\/\/ or tls:\/\/ URL, got "http:\/\/127\.0\.0\.1:4222" \(http:\/\/\)/.test(l)), bad.join("\n"));
    assert.ok(bad.some((l) => /output\.nats\.servers\[1\]: expected a nats:\/\/ or tls:\/\/ URL/.test(l)), bad.join("\n"));
    assert.ok(bad.some((l) => /:5: output\.nats\.stream: /.test(l)), bad.join("\n"));
    const missing = problems(`[output]\ntype = "nats"\n`);
    assert.ok(missing.some((l) => /output\.nats: required with \[output\] type = "nats"/.test(l)), missing.join("\n"));
    const kafka = problems(`${API}[output]\ntype = "kafka"\n`);
    assert.ok(kafka.some((l) => /output\.type: /.test(l)), kafka.join("\n"));
    const creds = problems(`[output]\ntype = "nats"\n[output.nats]\nservers = ["nats://h:4222"]\ncreds_file = "missing.creds"\nuser = "u"\n`);
    assert.ok(creds.some((l) => /output\.nats\.creds_file: cannot read \/etc\/missing\.creds \(ENOENT\)/.test(l)), creds.join("\n"));
    assert.ok(creds.some((l) => /output\.nats\.password: required with user/.test(l)), creds.join("\n"));
    const userinfo = problems(`[output]\ntype = "nats"\n[output.nats]\nservers = ["nats://me:secret@h:4222"]\n`);
    assert.ok(userinfo.some((l) => /not in the URL/.test(l) && !l.includes("secret")), userinfo.join("\n"));
  });
});

describe("agent.config.schema.json", () => {
  test("matches the zod schemas (regenerate with npm run schema)", async () => {
    const { configJsonSchema } = await import("../scripts/schema.ts");
    const committed = JSON.parse(readFileSync(new URL("../agent.config.schema.json", import.meta.url), "utf8"));
    assert.deepEqual(committed, JSON.parse(JSON.stringify(configJsonSchema())));
  });
});
