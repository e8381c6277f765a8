// Paths in the config resolve against the config file's folder, never the working directory;
// validate lists every problem of a file in one run.
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { pathToFileURL } from "node:url";
import { describeResolvedPaths, loadConfig, parseConfig, readDataDir } from "../agent/config.ts";
import { resolveConfigPath } from "../agent/plugin.ts";
import { inputPlugins } from "../plugins/index.ts";
import { expandGlobs } from "../plugins/file/glob.ts";
import { API, configProblems } from "./testing/config.ts";

const FILE = "/etc/cybexp/agent.config.toml";

function parse(text: string, file = FILE) {
  return parseConfig(text, file, inputPlugins, {});
}

function problems(text: string, file = FILE): string[] {
  return configProblems(text, inputPlugins, { file });
}

describe("paths in the config", () => {
  test("file paths and excludes resolve against the config folder; absolute ones and file-name excludes stay", () => {
    const c = parse(
      `${API}[inputs.logs]\ntype = "file"\ntypetag = "t"\npaths = ["logs/*.log", "/var/log/auth.log", "../shared/**/x.json", "./{a,b}/*.log"]\n` +
        `exclude = ["*.gz", "logs/old/*", "/var/log/skip.log"]\n`,
    );
    const o = c.inputs.get("logs")!.options;
    assert.deepEqual(o.paths, ["/etc/cybexp/logs/*.log", "/var/log/auth.log", "/etc/shared/**/x.json", "/etc/cybexp/{a,b}/*.log"]);
    assert.deepEqual(o.exclude, ["*.gz", "/etc/cybexp/logs/old/*", "/var/log/skip.log"]);
  });

  test("the data dir, misp_file path and a SQLite dsn resolve; a postgres URL stays", () => {
    const c = parse(
      `[agent]\ndata_dir = "data"\n${API}` +
        `[inputs.drop]\ntype = "misp_file"\ntypetag = "misp"\npath = "drop"\n` +
        `[inputs.db]\ntype = "database"\ntypetag = "t"\ndriver = "sqlite"\ndsn = "db/events.sqlite"\nquery = "SELECT * FROM e WHERE id > $1 ORDER BY id"\ncursor_column = "id"\n` +
        `[inputs.dburl]\ntype = "database"\ntypetag = "t"\ndriver = "sqlite"\ndsn = "file:db/e.sqlite?mode=ro"\nquery = "SELECT * FROM e WHERE id > $1 ORDER BY id"\ncursor_column = "id"\n` +
        `[inputs.pg]\ntype = "database"\ntypetag = "t"\ndriver = "postgres"\ndsn = "postgres://u:p@db:5432/logs"\nquery = "SELECT * FROM e WHERE id > $1 ORDER BY id"\ncursor_column = "id"\n`,
    );
    assert.equal(c.agent.dataDir, "/etc/cybexp/data");
    assert.equal(c.inputs.get("drop")!.options.path, "/etc/cybexp/drop");
    assert.equal(c.inputs.get("db")!.options.dsn, "/etc/cybexp/db/events.sqlite");
    assert.equal(c.inputs.get("dburl")!.options.dsn, "file:///etc/cybexp/db/e.sqlite?mode=ro");
    assert.equal(c.inputs.get("pg")!.options.dsn, "postgres://u:p@db:5432/logs");
  });

  test("dsn forms: sqlite: URLs become paths, absolute file: URLs stay", () => {
    assert.equal(resolveConfigPath("sqlite:rel.db", "/cfg", "dsn"), "/cfg/rel.db");
    assert.equal(resolveConfigPath("sqlite:///abs/x.db", "/cfg", "dsn"), "/abs/x.db");
    assert.equal(resolveConfigPath("file:///abs/x.db", "/cfg", "dsn"), "file:///abs/x.db");
    assert.equal(resolveConfigPath("/abs/x.db", "/cfg", "dsn"), "/abs/x.db");
  });

  test("~ and ~/ are the home folder; ~name is an ordinary relative name", () => {
    assert.equal(resolveConfigPath("~", "/cfg"), homedir());
    assert.equal(resolveConfigPath("~/logs/*.log", "/cfg", "glob"), join(homedir(), "logs/*.log"));
    assert.equal(resolveConfigPath("~other/x", "/cfg"), "/cfg/~other/x");
  });

  test("a glob whose folder does not exist yet is not an error", () => {
    const c = parse(`${API}[inputs.later]\ntype = "file"\ntypetag = "t"\npaths = ["not-made-yet/*.log"]\n`);
    assert.deepEqual(c.inputs.get("later")!.options.paths, ["/etc/cybexp/not-made-yet/*.log"]);
  });

  test("resolved globs match the files of the config folder whatever the working directory", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cfg-paths-"));
    mkdirSync(join(dir, "logs"));
    writeFileSync(join(dir, "logs", "a.log"), "x\n");
    writeFileSync(join(dir, "logs", "b.log.gz"), "x\n");
    writeFileSync(join(dir, "agent.config.toml"), `${API}[inputs.l]\ntype = "file"\ntypetag = "t"\npaths = ["logs/*"]\nexclude = ["*.gz"]\n`);
    assert.notEqual(process.cwd(), dir);
    const c = await loadConfig(join(dir, "agent.config.toml"), inputPlugins, {});
    const o = c.inputs.get("l")!.options as { paths: string[]; exclude: string[] };
    assert.deepEqual(await expandGlobs(o.paths, o.exclude), [join(dir, "logs", "a.log")]);
    assert.equal(readDataDir(join(dir, "agent.config.toml"), {}), join(dir, "data"));
  });

  test("TLS and CA files resolve and must be readable: a missing one names the key path and the resolved path", () => {
    const dir = mkdtempSync(join(tmpdir(), "cfg-tls-"));
    writeFileSync(join(dir, "ca.pem"), "-----BEGIN CERTIFICATE-----\n");
    const file = join(dir, "agent.config.toml");
    const ok = parse(`${API}[inputs.feed]\ntype = "openphish"\ntypetag = "t"\nca_file = "ca.pem"\n`, file);
    assert.equal(ok.inputs.get("feed")!.options.ca_file, join(dir, "ca.pem"));

    const p = problems(
      `${API}[inputs.feed]\ntype = "http_poll"\ntypetag = "t"\nurl = "https://x.example/"\nca_file = "certs/missing-ca.pem"\n` +
        `[inputs.sys]\ntype = "syslog"\ntypetag = "s"\nlisten = ["tls://127.0.0.1:0"]\ntls_cert = "server.pem"\ntls_key = "/nonexistent/server.key"\ntls_ca = "."\n`,
      file,
    );
    const expect = [
      [`:9: inputs.feed.ca_file: cannot read ${join(dir, "certs/missing-ca.pem")} (ENOENT)`],
      [`:14: inputs.sys.tls_cert: cannot read ${join(dir, "server.pem")} (ENOENT)`],
      [`:15: inputs.sys.tls_key: cannot read /nonexistent/server.key (ENOENT)`],
      [`:16: inputs.sys.tls_ca: cannot read ${dir} (not a regular file)`],
    ];
    for (const [want] of expect) assert.ok(p.some((l) => l.includes(want!)), `${want} in\n${p.join("\n")}`);
    assert.equal(p.length, 4, p.join("\n"));
  });

  test("an unreadable certificate is named too", { skip: process.getuid?.() === 0 ? "root reads any file" : false }, () => {
    const dir = mkdtempSync(join(tmpdir(), "cfg-tls-"));
    writeFileSync(join(dir, "key.pem"), "secret");
    chmodSync(join(dir, "key.pem"), 0o000);
    const p = problems(`${API}[inputs.f]\ntype = "openphish"\ntypetag = "t"\nca_file = "key.pem"\n`, join(dir, "a.toml"));
    assert.match(p[0]!, /inputs\.f\.ca_file: cannot read .*key\.pem \(EACCES\)/);
  });

  test("validate's lines show the data dir and the path options each input sets, resolved", () => {
    const c = parse(`[agent]\ndata_dir = "d"\n${API}[inputs.l]\ntype = "file"\ntypetag = "t"\npaths = ["logs/*.log"]\n[inputs.m]\ntype = "manual"\ntypetag = "t"\n`);
    assert.deepEqual(describeResolvedPaths(c), [
      "data_dir = /etc/cybexp/d",
      'inputs.l.paths = ["/etc/cybexp/logs/*.log"]',
    ]);
  });

  test("an input's paths are resolved the same way when the file is read again (reload)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cfg-reload-"));
    const file = join(dir, "agent.config.toml");
    writeFileSync(file, `${API}[inputs.a]\ntype = "manual"\ntypetag = "t"\n`);
    await loadConfig(file, inputPlugins, {});
    writeFileSync(file, `${API}[inputs.a]\ntype = "manual"\ntypetag = "t"\n[inputs.b]\ntype = "misp_file"\ntypetag = "m"\npath = "${"drop"}"\n`);
    const again = await loadConfig(pathToFileURL(file).pathname, inputPlugins, {});
    assert.equal(again.inputs.get("b")!.options.path, join(dir, "drop"));
  });
});

describe("validate lists every problem in one run", () => {
  test("problems of all sections, of inputs and the checks across keys come together, each naming its line and key", () => {
    const p = problems(
      [
        `[agent]`,
        `log_level = "loud"`, // 2
        `[control]`,
        `listen = "0.0.0.0:8765"`, // no token: named at the [control] line
        `[api]`,
        `url = "not a url"`, // 6
        `token = "t"`,
        `orgid = "o"`,
        `timeout = "soon"`, // 9
        `[spool]`,
        `when_full = "explode"`, // 11
        `[inputs.a]`,
        `type = "file"`,
        `typetag = "t"`, // no paths
        `[inputs.b]`,
        `type = "nope"`, // 16
        `typetag = "t"`,
        `[inputs.c]`,
        `type = "syslog"`,
        `typetag = "t"`,
        `listen = ["tls://127.0.0.1:0"]`, // no tls_cert/tls_key: named at the [inputs.c] line
        `bogus = 1`, // 22
        `[extra]`, // 23
      ].join("\n") + "\n",
    );
    const want = [
      /:2: agent\.log_level: /,
      /:3: control\.token: required when control\.listen \(0\.0\.0\.0:8765\) is not a loopback address/,
      /:6: api\.url: /,
      /:9: api\.timeout: expected a duration/,
      /:11: spool\.when_full: /,
      /:12: inputs\.a\.paths: required/,
      /:16: inputs\.b\.type: unknown input type "nope"/,
      /:18: inputs\.c\.tls_cert: required when listen has a tls:\/\/ address/,
      /:18: inputs\.c\.tls_key: required when listen has a tls:\/\/ address/,
      /:22: inputs\.c\.bogus: unknown key/,
      /:23: extra: unknown key/,
    ];
    for (const re of want) assert.ok(p.some((l) => re.test(l)), `${re} in\n${p.join("\n")}`);
    assert.equal(p.length, want.length, p.join("\n"));
    for (const line of p) assert.ok(!line.includes("\n") && line.startsWith(`${FILE}:`), line);
  });

  test("a variable that is not set is one problem, listed with the others", () => {
    const p = problems(`[api]\nurl = "http://x"\ntoken = "\${UNSET_TOKEN_FOR_TEST}"\norgid = "o"\n[spool]\nwhen_full = "x"\n`);
    assert.equal(p.length, 2, p.join("\n"));
    assert.match(p[0]!, /:3: environment variable UNSET_TOKEN_FOR_TEST is not set/);
    assert.match(p[1]!, /:6: spool\.when_full: /);
  });

  test("a missing [api] is named along with input problems", () => {
    const p = problems(`[inputs.a]\ntype = "manual"\n`);
    assert.ok(p.some((l) => /(^|: )api: required/.test(l)), p.join("\n"));
    assert.ok(p.some((l) => /inputs\.a\.typetag: required/.test(l)), p.join("\n"));
  });
});
