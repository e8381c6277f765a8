// The config files a user copies from are loaded by the real config loader with the real
// plugin registry: every plugin's sample.toml (with a minimal [api] table), the repository's
// agent.config.toml and the .deb's packaging/agent.config.toml. test/config-schema.test.ts
// checks the same files against the JSON schema an editor uses; this checks what `validate`
// and the agent would say.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import { ConfigError, parseConfig, type AgentConfig } from "../agent/config.ts";
import { inputPlugins } from "../plugins/index.ts";

const API = `[api]\nurl = "http://127.0.0.1:5000"\ntoken = "t"\norgid = "org"\n`;

/**
 * Every ${VAR} without a default the text names, set: the files name secrets they leave to
 * the environment (a variable that is not set is a config error of its own).
 */
function envFor(text: string): Record<string, string> {
  const names = [...text.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g)].map((m) => m[1]!);
  return Object.fromEntries(names.map((name) => [name, `value-of-${name}`]));
}

/** The loaded config, or a failure naming the file and listing every problem the loader found. */
function load(text: string, file: string, label: string): AgentConfig {
  try {
    return parseConfig(text, file, inputPlugins, envFor(text));
  } catch (err) {
    if (err instanceof ConfigError) assert.fail(`${label} does not load:\n  ${err.problems.join("\n  ")}`);
    throw err;
  }
}

const inputTablesOf = (text: string) => [...text.matchAll(/^\[inputs\.([A-Za-z0-9_.-]+?)\]\s*(#.*)?$/gm)].map((m) => m[1]!);

describe("config files load with the config loader", () => {
  test("every plugin's sample.toml, with an [api] table", () => {
    const pluginsDir = new URL("../plugins/", import.meta.url);
    const samples = readdirSync(pluginsDir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name)
      .filter((name) => readdirSync(new URL(`${name}/`, pluginsDir)).includes("sample.toml"));
    // Every input type has a sample, and each sample is in the folder of the type it shows.
    assert.deepEqual(samples.sort(), Object.keys(inputPlugins).sort());
    for (const name of samples) {
      const url = new URL(`${name}/sample.toml`, pluginsDir);
      const text = readFileSync(url, "utf8");
      // [api] after the sample, so the line numbers in the problems are the sample's own.
      const config = load(`${text}\n${API}`, fileURLToPath(url), `plugins/${name}/sample.toml`);
      const tables = inputTablesOf(text).filter((t) => !t.includes("."));
      assert.ok(tables.length > 0, `plugins/${name}/sample.toml has no [inputs.<name>] table`);
      assert.deepEqual([...config.inputs.keys()], tables, `plugins/${name}/sample.toml`);
      for (const input of config.inputs.values()) assert.equal(input.type, name, `plugins/${name}/sample.toml: input ${input.key}`);
    }
  });

  test("a file the loader refuses fails with the file's name and every problem", () => {
    const text = `${API}[inputs.a]\ntype = "manual"\ntypetag = "t"\nfull_wait = "soon"\nsurprise = 1\n`;
    assert.throws(
      () => load(text, "/etc/cybexp-agent/sample.toml", "plugins/manual/sample.toml"),
      (err: Error) =>
        err instanceof assert.AssertionError &&
        /^plugins\/manual\/sample\.toml does not load:\n/.test(err.message) &&
        /sample\.toml:8: inputs\.a\.full_wait: expected a duration/.test(err.message) &&
        /sample\.toml:9: inputs\.a\.surprise: unknown key/.test(err.message),
    );
  });

  for (const path of ["agent.config.toml", "packaging/agent.config.toml"]) {
    test(`${path}`, () => {
      const url = new URL(`../${path}`, import.meta.url);
      const text = readFileSync(url, "utf8");
      const config = load(text, fileURLToPath(url), path);
      assert.ok(config.inputs.size >= 2, `${path}: ${[...config.inputs.keys()].join(", ")}`);
    });
  }
});
