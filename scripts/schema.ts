// Writes agent.config.schema.json (JSON Schema of the config file, for editors) from the zod schemas.
//
// The file is checked by editors before ${VAR} substitution, so every string field also
// accepts a value holding a ${VAR} or ${VAR:-default} reference. Numbers and booleans do not:
// the loader substitutes text before parsing TOML, so a quoted "${PORT}" stays a string and
// is rejected for a number field (unquoted ${PORT} works, but is not TOML an editor accepts).
import { writeFileSync } from "node:fs";
import { z } from "zod";
import { coreSchema, inputSchemaFor } from "../agent/config.ts";
import { inputPlugins } from "../plugins/index.ts";

/** A string that holds a ${VAR} or ${VAR:-default} reference somewhere. */
export const ENV_REFERENCE = "\\$\\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\\}";
/** What agent/units.ts parseDuration accepts. */
export const DURATION_PATTERN = "^\\s*\\d+(\\.\\d+)?\\s*(ms|s|m|h|d)\\s*$";
/** What agent/units.ts parseSize accepts as a string (units in any case). */
export const SIZE_PATTERN = "^\\s*\\d+(\\.\\d+)?\\s*([bB]|[kKmMgG]([iI][bB]|[bB])?)?\\s*$";
const PERCENT_PATTERN = "^\\s*\\d+(\\.\\d+)?\\s*%\\s*$";

const sizeNode = (extra: Record<string, unknown>[] = []) => ({
  anyOf: [{ type: "integer", minimum: 0 }, { type: "string", pattern: SIZE_PATTERN }, ...extra],
});

/**
 * Durations and sizes are zod transforms (text in, a number out), which JSON Schema cannot
 * express; they are recognised by what they accept, so that every duration() and size()
 * option of every plugin gets its pattern without being listed here.
 */
function unitNode(schema: z.ZodType): Record<string, unknown> | undefined {
  const def = (schema as any)._zod.def;
  if (def.type !== "pipe" || def.out?._zod?.def?.type !== "transform") return undefined;
  const accepts = (v: unknown) => schema.safeParse(v).success;
  const gives = (v: unknown, want: unknown) => {
    const r = schema.safeParse(v);
    return r.success && r.data === want;
  };
  const isDuration = gives("30s", 30_000) && gives("500ms", 500) && !accepts("30");
  // min_free's size turns into an object ({bytes}), so a size is known by what it accepts.
  const isSize = accepts("1MiB") && accepts(2048) && !accepts("1x") && !accepts("30s");
  if (isDuration && accepts("always") && accepts("never"))
    return { anyOf: [{ enum: ["always", "never"] }, { type: "string", pattern: DURATION_PATTERN }] };
  if (isDuration) return { type: "string", pattern: DURATION_PATTERN };
  if (isSize && accepts("5%")) return sizeNode([{ type: "string", pattern: PERCENT_PATTERN }]);
  if (isSize) return sizeNode();
  return undefined;
}

/**
 * The JSON Schema of what the config file may hold for `schema` (its input side: defaults as
 * written, durations and sizes as text). scripts/docs.ts renders the plugins' options tables
 * from it too; its `annotate` adds keys of its own to a node (called after the unit patterns).
 */
export function toJson(
  schema: z.ZodType,
  annotate?: (zodSchema: z.ZodType, node: Record<string, unknown>) => void,
): Record<string, any> {
  return z.toJSONSchema(schema, {
    io: "input",
    unrepresentable: "any",
    override: (ctx) => {
      const zodSchema = ctx.zodSchema as unknown as z.ZodType;
      const node = unitNode(zodSchema);
      if (node) {
        const keep = { description: ctx.jsonSchema.description, default: ctx.jsonSchema.default };
        for (const k of Object.keys(ctx.jsonSchema)) delete (ctx.jsonSchema as any)[k];
        Object.assign(ctx.jsonSchema, node);
        for (const [k, v] of Object.entries(keep)) if (v !== undefined) (ctx.jsonSchema as any)[k] = v;
      }
      annotate?.(zodSchema, ctx.jsonSchema as Record<string, unknown>);
    },
  }) as Record<string, any>;
}

const envString = { type: "string", pattern: ENV_REFERENCE, description: "Replaced from the environment when the file is loaded" };

/** Every node that takes a string also takes one with a ${VAR} reference (the input `type` excepted). */
function allowEnv(node: any): any {
  if (Array.isArray(node)) return node.map(allowEnv);
  if (!node || typeof node !== "object") return node;
  const out: Record<string, any> = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === "properties") out[k] = Object.fromEntries(Object.entries(v as object).map(([p, s]) => [p, allowEnv(s)]));
    else if (k === "default" || k === "examples" || k === "const" || k === "enum") out[k] = v;
    else out[k] = allowEnv(v);
  }
  if (Array.isArray(out.anyOf)) out.anyOf = flattenEnv(out.anyOf);
  const takesString =
    out.type === "string" ||
    (Array.isArray(out.enum) && out.enum.every((e: unknown) => typeof e === "string")) ||
    typeof out.const === "string";
  if (!takesString || out.pattern === ENV_REFERENCE) return out;
  const { description, default: dflt, ...rest } = out;
  const wrapped: Record<string, any> = { anyOf: [rest, envString] };
  if (description !== undefined) wrapped.description = description;
  if (dflt !== undefined) wrapped.default = dflt;
  return wrapped;
}

/** anyOf [a, anyOf [b, env]] is anyOf [a, b, env]: one ${VAR} alternative per choice, listed last. */
function flattenEnv(choices: any[]): any[] {
  const isWrapper = (c: any) =>
    c && Object.keys(c).length === 1 && Array.isArray(c.anyOf) && c.anyOf.some((x: any) => x === envString);
  const flat = choices.flatMap((c) => (isWrapper(c) ? c.anyOf : [c])).filter((c) => c !== envString);
  return flat.length < choices.flatMap((c) => (isWrapper(c) ? c.anyOf : [c])).length ? [...flat, envString] : flat;
}

export function configJsonSchema(): Record<string, unknown> {
  const core = allowEnv(toJson(coreSchema));
  const variants = Object.values(inputPlugins).map((p) => {
    const s = allowEnv(toJson(inputSchemaFor(p)));
    delete s.$schema;
    // Set after allowEnv: `type` picks the variant, so it is never a ${VAR}.
    s.properties.type = { const: p.type, description: p.description };
    return s;
  });
  core.properties.inputs = {
    type: "object",
    description: "One table per input; the table's key is the input's name.",
    propertyNames: { pattern: "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$" },
    additionalProperties: { oneOf: variants },
  };
  // [api] is where uploads go unless the output is nats, which needs [output.nats] instead.
  core.if = { properties: { output: { properties: { type: { const: "nats" } }, required: ["type"] } }, required: ["output"] };
  core.then = { properties: { output: { required: ["nats"] } } };
  core.else = { required: ["api"] };
  core.title = "cybexp-agent configuration";
  return core;
}

if (import.meta.main) {
  writeFileSync("agent.config.schema.json", JSON.stringify(configJsonSchema(), null, 2) + "\n");
  console.log("wrote agent.config.schema.json");
}
