// agent.config.schema.json checked the way an editor checks a config file: the TOML as written
// (before ${VAR} substitution) against the JSON schema. No JSON-schema package is a dependency,
// so a small validator of the keywords the generated schema uses does the checking; a keyword
// it does not know fails the test instead of being skipped.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { parse as parseToml } from "smol-toml";
import { configText } from "./testing/e2e.ts";

type Schema = Record<string, any>;

const ANNOTATIONS = new Set(["$schema", "title", "description", "default", "format", "examples"]);
const KNOWN = new Set([
  "type", "properties", "additionalProperties", "required", "enum", "const", "pattern", "anyOf", "oneOf",
  "items", "minimum", "maximum", "exclusiveMinimum", "minLength", "maxLength", "minItems", "propertyNames", "if", "then", "else",
]);

function typeOk(type: string, v: unknown): boolean {
  switch (type) {
    case "string": return typeof v === "string";
    case "number": return typeof v === "number";
    case "integer": return typeof v === "number" && Number.isInteger(v);
    case "boolean": return typeof v === "boolean";
    case "object": return !!v && typeof v === "object" && !Array.isArray(v) && !(v instanceof Date);
    case "array": return Array.isArray(v);
    case "null": return v === null;
    default: throw new Error(`unknown type ${type}`);
  }
}

/** Problems of `v` against `s`, each "path: what". */
export function check(s: Schema | boolean, v: unknown, path = "$"): string[] {
  if (s === true) return [];
  if (s === false) return [`${path}: not allowed`];
  for (const k of Object.keys(s)) if (!KNOWN.has(k) && !ANNOTATIONS.has(k)) throw new Error(`validator does not know keyword ${k} (at ${path})`);
  const out: string[] = [];
  if (s.type !== undefined) {
    const types: string[] = Array.isArray(s.type) ? s.type : [s.type];
    if (!types.some((t) => typeOk(t, v))) return [`${path}: expected ${types.join("|")}, got ${JSON.stringify(v)}`];
  }
  if (s.const !== undefined && v !== s.const) out.push(`${path}: expected ${JSON.stringify(s.const)}`);
  if (s.enum && !s.enum.includes(v)) out.push(`${path}: expected one of ${JSON.stringify(s.enum)}, got ${JSON.stringify(v)}`);
  if (typeof v === "string") {
    if (s.pattern !== undefined && !new RegExp(s.pattern, "u").test(v)) out.push(`${path}: ${JSON.stringify(v)} does not match ${s.pattern}`);
    if (s.minLength !== undefined && [...v].length < s.minLength) out.push(`${path}: shorter than ${s.minLength}`);
    if (s.maxLength !== undefined && [...v].length > s.maxLength) out.push(`${path}: longer than ${s.maxLength}`);
  }
  if (typeof v === "number") {
    if (s.minimum !== undefined && v < s.minimum) out.push(`${path}: below ${s.minimum}`);
    if (s.maximum !== undefined && v > s.maximum) out.push(`${path}: above ${s.maximum}`);
    if (s.exclusiveMinimum !== undefined && v <= s.exclusiveMinimum) out.push(`${path}: not above ${s.exclusiveMinimum}`);
  }
  if (Array.isArray(v)) {
    if (s.minItems !== undefined && v.length < s.minItems) out.push(`${path}: fewer than ${s.minItems} items`);
    if (s.items !== undefined) v.forEach((item, i) => out.push(...check(s.items, item, `${path}[${i}]`)));
  }
  if (typeOk("object", v)) {
    const obj = v as Record<string, unknown>;
    for (const r of s.required ?? []) if (!(r in obj)) out.push(`${path}.${r}: required`);
    for (const [k, val] of Object.entries(obj)) {
      if (s.propertyNames) out.push(...check(s.propertyNames, k, `${path}.${k} (name)`));
      if (s.properties && k in s.properties) out.push(...check(s.properties[k], val, `${path}.${k}`));
      else if (s.additionalProperties !== undefined) out.push(...check(s.additionalProperties, val, `${path}.${k}`));
    }
  }
  if (s.anyOf && !s.anyOf.some((sub: Schema) => check(sub, v, path).length === 0)) out.push(`${path}: matches none of anyOf (${JSON.stringify(v)})`);
  if (s.if !== undefined) {
    const then = check(s.if, v, path).length === 0 ? s.then : s.else;
    if (then !== undefined) out.push(...check(then, v, path));
  }
  if (s.oneOf) {
    const matching = s.oneOf.filter((sub: Schema) => check(sub, v, path).length === 0).length;
    if (matching !== 1) out.push(`${path}: matches ${matching} of oneOf`);
  }
  return out;
}

const schema = JSON.parse(readFileSync(new URL("../agent.config.schema.json", import.meta.url), "utf8")) as Schema;
const API = `[api]\nurl = "\${CYBEXP_API_URL:-http://127.0.0.1:5000}"\ntoken = "\${CYBEXP_API_TOKEN}"\norgid = "org"\n`;
const problemsOf = (toml: string) => check(schema, parseToml(toml));

describe("agent.config.schema.json against config files", () => {
  test("the repository's agent.config.toml validates as written (with its ${VAR} references)", () => {
    const text = readFileSync(new URL("../agent.config.toml", import.meta.url), "utf8");
    assert.match(text, /\$\{/);
    assert.deepEqual(problemsOf(text), []);
  });

  test("every plugin's sample.toml validates, under an [api] table", () => {
    const plugins = new URL("../plugins/", import.meta.url);
    const samples = readdirSync(plugins, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name)
      .filter((name) => readdirSync(new URL(`${name}/`, plugins)).includes("sample.toml"));
    assert.ok(samples.length >= 8, samples.join(", "));
    for (const name of samples) {
      const text = readFileSync(new URL(`${name}/sample.toml`, plugins), "utf8");
      assert.deepEqual(problemsOf(API + text), [], `plugins/${name}/sample.toml`);
    }
  });

  test("the end-to-end tests' configs validate", () => {
    const text = configText(
      "http://127.0.0.1:1",
      `[inputs.logs]\ntype = "file"\ntypetag = "t"\npaths = ["logs/*.log"]\nformat = "json"\n` +
        `[inputs.sys]\ntype = "syslog"\ntypetag = "syslog"\nlisten = ["udp://127.0.0.1:0", "tcp://127.0.0.1:0"]\nmax_message_bytes = 4096\n` +
        `[inputs.hand]\ntype = "manual"\ntypetag = "manual"\n[inputs.hand.batch]\nmax_events = 1\n`,
    );
    assert.deepEqual(problemsOf(text), []);
  });

  test("${VAR} references are accepted in string, enum, URL, duration and size fields", () => {
    const text = `[agent]\ndata_dir = "\${STATE_DIRECTORY:-./data}"\nlog_level = "\${LOG_LEVEL:-info}"\n${API}timeout = "\${API_TIMEOUT:-30s}"\n` +
      `[spool]\nmax_bytes = "\${SPOOL_MAX:-1GiB}"\nfsync = "\${FSYNC}"\n` +
      `[inputs.a]\ntype = "syslog"\ntypetag = "\${TAG}"\nlisten = ["\${SYSLOG_LISTEN:-udp://0.0.0.0:514}"]\n`;
    assert.deepEqual(problemsOf(text), []);
  });

  test("durations, sizes, unknown keys, enums, numbers given as ${VAR} strings and a ${VAR} input type are rejected", () => {
    const cases: Array<[string, RegExp]> = [
      [`${API}timeout = "30 seconds"`, /\$\.api\.timeout: matches none/],
      [`${API}timeout = 30`, /\$\.api\.timeout: matches none/],
      [`${API}[spool]\nmax_bytes = "1 parsec"`, /\$\.spool\.max_bytes: matches none/],
      [`${API}[spool]\nmax_bytes = -5`, /\$\.spool\.max_bytes: matches none/],
      [`${API}[spool]\nmin_free = "120"`, /^$/],
      [`${API}[spool]\nwhen_full = "explode"`, /\$\.spool\.when_full: matches none/],
      [`${API}concurrency = "\${CONCURRENCY}"`, /\$\.api\.concurrency: expected integer/],
      [`${API}surprise = 1`, /\$\.api\.surprise: not allowed/],
      [`${API}[inputs.a]\ntype = "\${TYPE}"\ntypetag = "t"`, /\$\.inputs\.a: matches 0 of oneOf/],
      [`${API}[inputs.a]\ntype = "file"\ntypetag = "t"`, /\$\.inputs\.a: matches 0 of oneOf/],
      [`${API}[inputs."bad name"]\ntype = "manual"\ntypetag = "t"`, /bad name \(name\)/],
      [`[agent]\ndata_dir = "d"`, /\$\.api: required/],
      [`[output]\ntype = "nats"\n[output.nats]\nservers = ["nats://127.0.0.1:4222"]`, /^$/],
      [`[output]\ntype = "nats"`, /\$\.output\.nats: required/],
      [`[output]\ntype = "kafka"\n${API}`, /\$\.output\.type: matches none of anyOf/],
    ];
    for (const [text, want] of cases) {
      const p = problemsOf(text);
      if (want.source === "^$") assert.deepEqual(p, [], text);
      else assert.ok(p.some((l) => want.test(l)), `${text}\n→ ${p.join("\n") || "(accepted)"}`);
    }
  });

  test("the duration and size patterns agree with the loader's parsers", async () => {
    const { DURATION_PATTERN, SIZE_PATTERN } = await import("../scripts/schema.ts");
    const { parseDuration, parseSize } = await import("../agent/units.ts");
    for (const s of ["500ms", "30s", "5m", "1h", "7d", "1.5s", " 2 m ", "30", "1w", "s", "-1s", "1 S"])
      assert.equal(new RegExp(DURATION_PATTERN).test(s), parseDuration(s) !== undefined, s);
    for (const s of ["512KiB", "1MiB", "1GiB", "1gb", "10k", "100", "1.5M", "2 B", "1TiB", "1ki", "x", "1MiBs"])
      assert.equal(new RegExp(SIZE_PATTERN).test(s), parseSize(s) !== undefined, s);
  });
});
