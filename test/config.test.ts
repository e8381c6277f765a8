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
    assert.equal(c.api.url, "http://127.0.0.1:9");
    assert.equal(c.api.token, 'with "quotes" \\ and backslash');
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

describe("agent.config.schema.json", () => {
  test("matches the zod schemas (regenerate with npm run schema)", async () => {
    const { configJsonSchema } = await import("../scripts/schema.ts");
    const committed = JSON.parse(readFileSync(new URL("../agent.config.schema.json", import.meta.url), "utf8"));
    assert.deepEqual(committed, JSON.parse(JSON.stringify(configJsonSchema())));
  });
});
