// The layout rules README.md states, checked on the source: a plugin imports only the plugin
// API and plugins/common/, never another plugin or core internals; the core never imports a
// plugin (agent/main.ts wires them in); the files of one plugin import each other without cycles.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * The modules of agent/ that make up the plugin API. plugin.ts is the contract between the core
 * and an input; the others are small rule modules that inputs and the core share, each the one
 * home of its rule (units, backoff and Retry-After, redaction, network error text, error text,
 * byte concatenation, runtime detection, the version for User-Agent, NATS connections and the
 * message format the `nats` output and input share).
 */
export const PLUGIN_API = [
  "agent/plugin.ts",
  "agent/units.ts",
  "agent/backoff.ts",
  "agent/redact.ts",
  "agent/neterrors.ts",
  "agent/errortext.ts",
  "agent/bytes.ts",
  "agent/runtime/detect.ts",
  "agent/version.ts",
  "agent/nats.ts",
];

/** Test code may reach into the core (harnesses build real spools and contexts). */
function isTestFile(rel: string): boolean {
  return /\.test\.ts$|\.testutil\.ts$/.test(rel) || rel.split("/").some((part) => part === "testing" || part === "testdata");
}

function tsFiles(dir: string, root: string, out: string[] = []): string[] {
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    if (name === "node_modules") continue;
    const path = join(dir, name);
    if (statSync(path).isDirectory()) tsFiles(path, root, out);
    else if (name.endsWith(".ts")) out.push(relative(root, path).split(sep).join("/"));
  }
  return out;
}

/**
 * Source without comments and without the text of strings that are not module specifiers (an
 * import named in a comment or a message is not an import).
 */
function withoutComments(src: string): string {
  let out = "";
  for (let i = 0; i < src.length; i++) {
    const c = src[i]!;
    if (c === '"' || c === "'" || c === "`") {
      const start = i;
      for (i++; i < src.length && src[i] !== c; i++) if (src[i] === "\\") i++;
      const specifier = /(?:\bfrom|\bimport|\bimport\s*\()\s*$/.test(out);
      out += specifier ? src.slice(start, i + 1) : `${c}${c}`;
    } else if (c === "/" && src[i + 1] === "/") {
      while (i < src.length && src[i] !== "\n") i++;
      out += "\n";
    } else if (c === "/" && src[i + 1] === "*") {
      i = src.indexOf("*/", i + 2);
      if (i < 0) break;
      i++;
    } else out += c;
  }
  return out;
}

const IMPORT_PATTERNS = [
  /\bimport\s+(?:type\s+)?[\w*{}\s,$]+?\s+from\s*["']([^"']+)["']/g,
  /\bexport\s+(?:type\s+)?(?:\*(?:\s+as\s+\w+)?|\{[^}]*\})\s+from\s*["']([^"']+)["']/g,
  /\bimport\s*["']([^"']+)["']/g,
  /\bimport\s*\(\s*["']([^"']+)["']/g,
];

/** Every module specifier a file imports (static, re-export, side-effect and dynamic). */
export function importsOf(src: string): string[] {
  const code = withoutComments(src);
  const found = new Set<string>();
  for (const re of IMPORT_PATTERNS) for (const m of code.matchAll(re)) found.add(m[1]!);
  return [...found];
}

/** The repository-relative path a relative specifier names, or null for a package / node: import. */
function target(fromRel: string, spec: string): string | null {
  if (!spec.startsWith(".")) return null;
  return join(dirname(fromRel), spec).split(sep).join("/");
}

/** Breaches of the layout rules in the tree at `root`, one line each ("file: imports x (why)"). */
export function boundaryProblems(root: string): string[] {
  const problems: string[] = [];
  const pluginFiles = tsFiles(join(root, "plugins"), root);
  for (const file of pluginFiles) {
    if (isTestFile(file)) continue;
    const own = file.split("/").length > 2 ? file.split("/").slice(0, 2).join("/") + "/" : null;
    const src = readFileSync(join(root, file), "utf8");
    for (const spec of importsOf(src)) {
      const to = target(file, spec);
      if (to === null) continue;
      if (own === null) {
        // plugins/index.ts, the registry: the entry module of each plugin and the plugin API.
        if (/^plugins\/[^/]+\/index\.ts$/.test(to) || to === "agent/plugin.ts") continue;
        problems.push(`${file}: imports ${spec} (the registry lists plugins/<type>/index.ts only)`);
      } else if (to.startsWith(own) || to.startsWith("plugins/common/")) continue;
      else if (to.startsWith("plugins/")) problems.push(`${file}: imports ${spec} (another plugin: share code through plugins/common/)`);
      else if (to.startsWith("agent/")) {
        if (!PLUGIN_API.includes(to)) problems.push(`${file}: imports ${spec} (core internals, not the plugin API: see PLUGIN_API in test/plugin-boundary.test.ts)`);
      } else problems.push(`${file}: imports ${spec} (outside agent/ and plugins/)`);
    }
  }
  for (const file of tsFiles(join(root, "agent"), root)) {
    if (file === "agent/main.ts") continue;
    for (const spec of importsOf(readFileSync(join(root, file), "utf8"))) {
      const to = target(file, spec);
      if (to?.startsWith("plugins/")) problems.push(`${file}: imports ${spec} (only agent/main.ts wires plugins in)`);
    }
  }
  problems.push(...cycleProblems(root, pluginFiles));
  return problems;
}

/** Import cycles among the files of one plugin folder (Tarjan's strongly connected components). */
function cycleProblems(root: string, files: string[]): string[] {
  const edges = new Map<string, string[]>();
  for (const file of files) {
    const folder = file.split("/").slice(0, 2).join("/") + "/";
    const tos = importsOf(readFileSync(join(root, file), "utf8"))
      .map((spec) => target(file, spec))
      .filter((to): to is string => to !== null && to.startsWith(folder) && files.includes(to));
    edges.set(file, tos);
  }
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const problems: string[] = [];
  let next = 0;
  const visit = (v: string) => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || edges.get(v)!.includes(v)) problems.push(`import cycle: ${component.sort().join(" <-> ")}`);
    }
  };
  for (const file of files) if (!index.has(file)) visit(file);
  return problems;
}

test("plugins import only the plugin API and plugins/common/; only agent/main.ts imports plugins/; no cycles inside a plugin", () => {
  assert.deepEqual(boundaryProblems(ROOT), []);
});

/** Every repository file `file` loads, directly or through other files (relative imports only). */
export function importClosure(root: string, file: string): Set<string> {
  const seen = new Set<string>();
  const visit = (f: string) => {
    if (seen.has(f) || !existsSync(join(root, f))) return;
    seen.add(f);
    for (const spec of importsOf(readFileSync(join(root, f), "utf8"))) {
      const to = target(f, spec);
      if (to !== null) visit(to);
    }
  };
  visit(file);
  return seen;
}

test("inputs that make no HTTP calls do not load the HTTP client, decompression or bzip2", () => {
  for (const plugin of ["database", "misp_file"]) {
    const loaded = importClosure(ROOT, `plugins/${plugin}/index.ts`);
    assert.ok(loaded.has("plugins/common/poll.ts"), `${plugin} polls`);
    for (const heavy of ["plugins/common/http.ts", "plugins/common/decompress.ts", "plugins/common/bzip2.ts"]) {
      assert.equal(loaded.has(heavy), false, `plugins/${plugin}/index.ts loads ${heavy}: ${[...loaded].join(", ")}`);
    }
  }
});

test("agent/helpers/ is gone and plugins/common/ holds the shared input toolkit", () => {
  assert.equal(existsSync(join(ROOT, "agent", "helpers")), false);
  for (const name of ["poll.ts", "http.ts", "feed.ts", "seen.ts", "jsonstream.ts", "decompress.ts", "bzip2.ts", "misp.ts"]) {
    assert.ok(existsSync(join(ROOT, "plugins", "common", name)), `plugins/common/${name}`);
  }
  for (const name of PLUGIN_API) assert.ok(existsSync(join(ROOT, name)), `${name} is named as plugin API but does not exist`);
});

test("the boundary check catches each kind of breach", () => {
  const root = mkdtempSync(join(tmpdir(), "boundary-"));
  try {
    const put = (rel: string, text: string) => {
      mkdirSync(dirname(join(root, rel)), { recursive: true });
      writeFileSync(join(root, rel), text);
    };
    put("agent/plugin.ts", "export const x = 1;\n");
    put("agent/spool/index.ts", "export class Spool {}\n");
    put("agent/main.ts", 'import "../plugins/index.ts";\n');
    put("agent/cli.ts", 'import { inputPlugins } from "../plugins/index.ts";\n');
    put("plugins/index.ts", 'import a from "./a/index.ts";\nimport helper from "./a/worker.ts";\n');
    put("plugins/a/index.ts", 'import { Spool } from "../../agent/spool/index.ts";\nimport type { X } from "../../agent/plugin.ts";\nimport { w } from "./worker.ts";\n');
    put("plugins/a/worker.ts", 'import { b } from "../b/thing.ts";\nimport { i } from "./index.ts";\n// import { z } from "../../agent/config.ts";\nconst later = () => import("../../agent/state.ts");\n');
    put("plugins/a/a.test.ts", 'import { Spool } from "../../agent/spool/index.ts";\n');
    put("plugins/a/input.testutil.ts", 'import { Spool } from "../../agent/spool/index.ts";\n');
    put("plugins/b/thing.ts", 'export { b } from "../common/c.ts";\n');
    put("plugins/common/c.ts", "export const b = 1;\n");
    const problems = boundaryProblems(root);
    assert.deepEqual(problems.sort(), [
      "agent/cli.ts: imports ../plugins/index.ts (only agent/main.ts wires plugins in)",
      "import cycle: plugins/a/index.ts <-> plugins/a/worker.ts",
      "plugins/a/index.ts: imports ../../agent/spool/index.ts (core internals, not the plugin API: see PLUGIN_API in test/plugin-boundary.test.ts)",
      "plugins/a/worker.ts: imports ../../agent/state.ts (core internals, not the plugin API: see PLUGIN_API in test/plugin-boundary.test.ts)",
      "plugins/a/worker.ts: imports ../b/thing.ts (another plugin: share code through plugins/common/)",
      "plugins/index.ts: imports ./a/worker.ts (the registry lists plugins/<type>/index.ts only)",
    ].sort());
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("imports are read in every form and not from comments", () => {
  const src = [
    'import a from "./a.ts";',
    'import type { B } from "./b.ts";',
    "import {\n  c,\n  d,\n} from './c.ts';",
    'import * as e from "./e.ts";',
    'export { f } from "./f.ts";',
    'export * from "./g.ts";',
    'import "./h.ts";',
    'const i = await import("./i.ts");',
    '// import j from "./j.ts";',
    '/* import k from "./k.ts"; */',
    'const s = "import l from \'./l.ts\'";',
  ].join("\n");
  assert.deepEqual(importsOf(src).sort(), ["./a.ts", "./b.ts", "./c.ts", "./e.ts", "./f.ts", "./g.ts", "./h.ts", "./i.ts"]);
});
