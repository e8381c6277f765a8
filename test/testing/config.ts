// Config test helpers: the [api] table a test config needs, and the problems the loader lists
// for a config it refuses.
import assert from "node:assert/strict";
import { ConfigError, parseConfig } from "../../agent/config.ts";
import type { InputPlugins } from "../../agent/plugin.ts";

/** A minimal valid [api] table. */
export const API = `[api]\nurl = "http://127.0.0.1:5000"\ntoken = "t"\norgid = "org1"\n`;

/** The problems parseConfig lists for `text`; fails the test when the config is accepted. */
export function configProblems(
  text: string,
  plugins: InputPlugins,
  opts: { file?: string; env?: Record<string, string> } = {},
): string[] {
  try {
    parseConfig(text, opts.file ?? "/etc/agent.toml", plugins, opts.env ?? {});
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
    return err.problems;
  }
  assert.fail("the config was accepted");
}
