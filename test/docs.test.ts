// The options table of every plugin README is the one scripts/docs.ts renders from the plugin's
// schema: a README edited by hand, or a schema changed without `npm run docs`, fails here.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { z } from "zod";
import { pathOption, type InputPlugin } from "../agent/plugin.ts";
import { duration, size } from "../agent/units.ts";
import { inputPlugins } from "../plugins/index.ts";
import { BEGIN_MARKER, END_MARKER, optionRows, optionsBlockOf, optionsTable, readmeUrl, withOptionsTable } from "../scripts/docs.ts";

const pluginOf = (options: z.ZodType): InputPlugin => ({
  type: "example",
  description: "an input made up for the test",
  options,
  create: () => {
    throw new Error("not run");
  },
});

describe("plugin READMEs", () => {
  test("every plugin's options table is the one generated from its schema (regenerate with npm run docs)", () => {
    const plugins = Object.values(inputPlugins);
    assert.ok(plugins.length >= 10, plugins.map((p) => p.type).join(", "));
    for (const plugin of plugins) {
      const file = `plugins/${plugin.type}/README.md`;
      const readme = readFileSync(readmeUrl(plugin), "utf8");
      const block = optionsBlockOf(readme);
      assert.ok(block !== undefined, `${file} (plugin ${plugin.type}) has no ${BEGIN_MARKER} ... ${END_MARKER} block`);
      assert.equal(block, optionsTable(plugin).text, `${file}: the options table of plugin ${plugin.type} differs from its schema; run npm run docs`);
    }
  });

  test("writing the table twice changes nothing more than writing it once", () => {
    for (const plugin of Object.values(inputPlugins)) {
      const readme = readFileSync(readmeUrl(plugin), "utf8");
      const once = withOptionsTable(readme, optionsTable(plugin).text);
      assert.equal(withOptionsTable(once, optionsTable(plugin).text), once, plugin.type);
      assert.equal(optionsBlockOf(once), optionsTable(plugin).text, plugin.type);
    }
  });

  test("only the text between the markers is replaced; a README without them is refused", () => {
    const readme = `# x\n\nprose before\n\n${BEGIN_MARKER}\n| old | table |\n${END_MARKER}\n\nprose after\n`;
    assert.equal(withOptionsTable(readme, "NEW\n"), `# x\n\nprose before\n\n${BEGIN_MARKER}\nNEW\n${END_MARKER}\n\nprose after\n`);
    assert.throws(() => withOptionsTable("# x\n\n| option | default | meaning |\n", "NEW\n"), /options table goes/);
    assert.throws(() => withOptionsTable(`${END_MARKER}\n${BEGIN_MARKER}\n`, "NEW\n"), /options table goes/);
    assert.throws(() => withOptionsTable(readme + readme, "NEW\n"), /options table goes/);
  });
});

describe("the options table", () => {
  const options = z.object({
    url: z.string().describe("Where from"),
    mode: z.enum(["a|b", "c"]).default("c").describe("Pick one | or the other"),
    every: duration().prefault("30s").describe("How often"),
    most: size().prefault("10MiB").describe("At most"),
    count: z.number().int().positive().default(5).describe("How many"),
    share: z.number().min(0).max(1).optional().describe("A fraction"),
    on: z.boolean().default(true),
    globs: z.array(pathOption("glob")).min(1).describe("Files"),
    ca: pathOption("readable").optional().describe("A <PEM> file, *not* a folder"),
    headers: z.record(z.string(), z.string()).default({ Accept: "text/plain" }).describe("Sent as they are"),
    tags: z.array(z.string()).default(["x", "y"]).describe("Tags"),
    window: z
      .object({ start: z.string().describe("From"), length: duration().prefault("1m").describe("How long") })
      .strict()
      .optional()
      .describe("A window"),
  }).strict();

  test("types read as TOML, defaults are TOML values, a table's keys are dotted", () => {
    assert.deepEqual(optionRows(pluginOf(options)), [
      { key: "url", type: "string", default: "required", description: "Where from" },
      { key: "mode", type: 'one of `"a|b"` | `"c"`', default: '"c"', description: "Pick one | or the other" },
      { key: "every", type: "duration", default: '"30s"', description: "How often" },
      { key: "most", type: "size", default: '"10MiB"', description: "At most" },
      { key: "count", type: "integer, at least 1", default: "5", description: "How many" },
      { key: "share", type: "number, 0 to 1", default: "—", description: "A fraction" },
      { key: "on", type: "boolean", default: "true", description: "" },
      { key: "globs", type: "list of globs, at least one", default: "required", description: "Files" },
      { key: "ca", type: "path", default: "—", description: "A <PEM> file, *not* a folder" },
      { key: "headers", type: "table of strings", default: '{ Accept = "text/plain" }', description: "Sent as they are" },
      { key: "tags", type: "list of strings", default: '["x", "y"]', description: "Tags" },
      { key: "window", type: "table", default: "—", description: "A window" },
      { key: "window.start", type: "string", default: "required", description: "From" },
      { key: "window.length", type: "duration", default: '"1m"', description: "How long" },
    ]);
  });

  test("cells escape | and Markdown, the notes explain durations and sizes, and keys without a description are named", () => {
    const { text, undocumented } = optionsTable(pluginOf(options));
    const lines = text.split("\n");
    assert.equal(lines[0], "| key | type | default | description |");
    assert.ok(lines.includes('| `mode` | one of `"a\\|b"` \\| `"c"` | `"c"` | Pick one \\| or the other |'), text);
    assert.ok(lines.includes("| `ca` | path | — | A \\<PEM> file, \\*not\\* a folder |"), text);
    assert.ok(lines.includes("| `on` | boolean | `true` |  |"), text);
    assert.ok(lines.some((l) => l.startsWith("A duration is a string")), text);
    assert.ok(lines.some((l) => l.startsWith("A size is a number of bytes")), text);
    assert.deepEqual(undocumented, ["on"]);
    const plain = optionsTable(pluginOf(z.object({ n: z.number().describe("N") }).strict())).text;
    assert.ok(!/duration|size is/.test(plain), plain);
  });
});
