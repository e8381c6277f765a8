// The configuration file: TOML with ${VAR} substitution, validated by zod schemas (the core's
// and each plugin's own). Every problem is reported as one line naming where it is.
import { closeSync, fstatSync, openSync, readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { hostname as osHostname } from "node:os";
import { dirname, resolve } from "node:path";
import { parse as parseToml, TomlError } from "smol-toml";
import { z } from "zod";
import { pathKindOf, resolveConfigPath, type InputPlugin } from "./plugin.ts";
import { duration, parseSize, size } from "./units.ts";
import { NATS_DEFAULTS, natsConnectionShape, type NatsConnectionConfig } from "./nats.ts";
import { errorMessage } from "./errortext.ts";

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join("\n"));
    this.name = "ConfigError";
  }
}

const logLevel = z.enum(["debug", "info", "warn", "error"]);

const batchSchema = z
  .object({
    max_events: z.number().int().min(1).max(1_000_000).default(1000).describe("Events per upload at most"),
    max_bytes: size().prefault("1MiB").describe("Upload file size at most"),
    max_wait: duration().prefault("1s").describe("Send a partial batch after this long"),
  })
  .strict();

/** [output.nats]: where and how the nats output publishes (README "Fleets"). */
const natsOutputSchema = z
  .object({
    ...natsConnectionShape,
    stream: z.string().regex(/^[^\s.*>]+$/, "a stream name has no spaces, '.', '*' or '>'").default(NATS_DEFAULTS.stream).describe("The JetStream stream that stores the batches"),
    subject_prefix: z
      .string()
      .regex(/^[^\s*>]+$/, "a subject prefix has no spaces, '*' or '>'")
      .refine((v) => !v.startsWith(".") && !v.endsWith(".") && !v.includes(".."), "a subject prefix has no empty tokens")
      .default(NATS_DEFAULTS.subjectPrefix)
      .describe("Batches are published on <subject_prefix>.<orgid>.<typetag>"),
    create_stream: z.boolean().default(false).describe("Create the stream (subjects <subject_prefix>.>) when it does not exist, with the options below"),
    replicas: z.number().int().min(1).max(5).default(1).describe("With create_stream: copies of each message in the cluster (3 for a 3-node cluster)"),
    max_bytes: size().optional().describe("With create_stream: the stream's size limit (the oldest messages go beyond it); default none"),
    max_age: duration().optional().describe("With create_stream: how long the stream keeps a message; default for ever"),
    duplicate_window: duration().prefault("2m").describe("With create_stream: how long JetStream remembers a message id, so that a batch sent again after a crash is stored once"),
  })
  .strict()
  .describe("The nats output");

export const coreSchema = z
  .object({
    agent: z
      .object({
        data_dir: z.string().min(1).default("./data").describe("Spool, state, runningconfig and dead letters; relative to the config file"),
        log_level: logLevel.default("info").describe("debug | info | warn | error; logs are JSON lines on stderr"),
        hostname: z.string().min(1).optional().describe("Default: the host's name"),
        log_format: z.enum(["json", "text"]).default("json").describe("json: one JSON object per line; text: one readable line per record"),
        log_max_bytes: size().prefault("10MiB").describe("The daemon's agent.log is rotated when it would grow past this"),
        log_keep: z.number().int().min(0).max(100).default(3).describe("Rotated agent.log files kept (agent.log.1 is the newest)"),
      })
      .strict()
      .prefault({}),
    control: z
      .object({
        listen: z.string().default("127.0.0.1:8765").describe("host:port of the control server; port 0 picks a free port"),
        token: z.string().min(1).optional().describe("Bearer token; required when listen is not a loopback address"),
        max_body_bytes: size().prefault("10MiB").describe("Largest request body accepted"),
      })
      .strict()
      .prefault({}),
    api: z
      .object({
        url: z.url({ protocol: /^https?$/ }).describe("Cybex-P API Module base URL; uploads go to POST {url}/raw"),
        token: z.string().min(1).describe("Bearer token for the API"),
        orgid: z.string().min(1).describe("Organisation id sent with every upload"),
        timezone: z.string().min(1).default("UTC").describe("Timezone sent with every upload"),
        timeout: duration().prefault("30s").describe("Timeout of one upload"),
        concurrency: z.number().int().min(1).max(64).default(4).describe("Uploads in flight at once"),
        tls_verify: z.boolean().default(true).describe("Verify the API's TLS certificate"),
        batch: batchSchema.prefault({}),
      })
      .strict()
      .optional()
      .describe("The Cybex-P API: where uploads go (the default output), and the orgid and timezone inputs send unless they set their own"),
    output: z
      .object({
        type: z.enum(["cybexp_api", "nats"]).default("cybexp_api").describe('"cybexp_api": upload to [api]; "nats": publish to NATS JetStream ([output.nats]) for relays to upload'),
        batch: batchSchema.optional().describe("Batch limits of the output; default [api.batch] (the same keys; an input's batch table overrides either)"),
        nats: natsOutputSchema.optional(),
      })
      .strict()
      .prefault({}),
    spool: z
      .object({
        max_bytes: size().prefault("1GiB").describe("Bound on spooled, undelivered data"),
        min_free: z
          .union([z.number(), z.string()])
          .default("5%")
          .transform((v, ctx) => {
            const parsed = parseMinFree(v);
            if (parsed) return parsed;
            ctx.addIssue({ code: "custom", message: `expected a size like "512MiB" or a percentage like "5%", got ${JSON.stringify(v)}` });
            return z.NEVER;
          })
          .describe('Free space kept on the data_dir\'s filesystem: a size, or a percentage of the filesystem (a percentage is capped at 1GiB); below it the spool is full'),
        when_full: z.enum(["block", "drop_oldest"]).default("block").describe("block pauses inputs; drop_oldest discards the oldest events"),
        fsync: z
          .string()
          .default("1s")
          .transform((s, ctx) => {
            if (s === "always" || s === "never") return s;
            const ms = duration().safeParse(s);
            if (ms.success) return ms.data;
            ctx.addIssue({ code: "custom", message: `expected "always", "never" or a duration like "1s", got "${s}"` });
            return z.NEVER;
          })
          .describe('"always", "never" or a duration: how often the spool is flushed to disk'),
      })
      .strict()
      .prefault({}),
    dead_letter: z
      .object({
        max_bytes: size().prefault("256MiB").describe("Bound on the dead-letter folder; the oldest files are removed beyond it (counted)"),
      })
      .strict()
      .prefault({}),
    inputs: z.record(z.string(), z.record(z.string(), z.unknown())).default({}),
  })
  .strict();

/** Free space to keep: a fixed number of bytes, or a fraction of the filesystem's size. */
export type MinFree = { bytes: number } | { percent: number; capBytes: number };

/** A percentage is capped: 5% of a 20 TB volume is more than any spool needs kept free. */
export const MIN_FREE_PERCENT_CAP = 1024 ** 3;

export function parseMinFree(v: string | number): MinFree | undefined {
  if (typeof v === "string") {
    const m = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(v);
    if (m) {
      const percent = Number(m[1]);
      return percent < 100 ? { percent, capBytes: MIN_FREE_PERCENT_CAP } : undefined;
    }
  }
  const bytes = parseSize(v);
  return bytes === undefined ? undefined : { bytes };
}

/** Keys every input has, whatever its type. */
export const commonInputSchema = z.object({
  type: z.string().describe("Input type"),
  typetag: z.string().min(1).describe("Cybex-P typetag of this input's data (required)"),
  name: z.string().min(1).optional().describe("Name sent to the API; default: the input's table key"),
  orgid: z.string().min(1).optional().describe("Overrides [api] orgid"),
  timezone: z.string().min(1).optional().describe("Overrides [api] timezone"),
  enabled: z.boolean().default(true).describe("false keeps the input configured but off"),
  batch: z
    .object({
      max_events: z.number().int().min(1).max(1_000_000).optional(),
      max_bytes: size().optional(),
      max_wait: duration().optional(),
    })
    .strict()
    .optional()
    .describe("Overrides [api.batch] for this input"),
});

export function inputSchemaFor(plugin: InputPlugin) {
  const own = plugin.options as unknown as z.ZodObject<z.ZodRawShape>;
  const merged = commonInputSchema.extend(own.shape).strict();
  // extend() takes the shape only: a plugin's refinements across options (e.g. tls_cert
  // required by a tls:// listener) are carried over so they fail at config time too.
  const checks = (own._zod.def.checks ?? []) as z.core.$ZodCheck<Record<string, unknown>>[];
  return checks.length > 0 ? merged.check(...checks) : merged;
}

/** When a batch is cut into an upload ([api.batch] or an input's batch table): the forwarder reads these. */
export interface BatchLimits {
  maxEvents: number;
  maxBytes: number;
  maxWaitMs: number;
}

export interface InputConfig {
  /** The table key: how the agent, the CLI and the control API name the input. */
  key: string;
  type: string;
  typetag: string;
  /** Sent as the upload's `name` part. */
  uploadName: string;
  orgid: string;
  timezone: string;
  enabled: boolean;
  batch: BatchLimits;
  /** The plugin's own options, validated and defaulted. */
  options: Record<string, unknown>;
  /** Canonical text of the input's resolved settings: equal fingerprints mean reload leaves it alone. */
  fingerprint: string;
  /** The path options as resolved against the config file's folder (what `validate` shows). */
  paths: Record<string, string | string[]>;
}

export interface ListenAddress {
  host: string;
  port: number;
}

export interface AgentConfig {
  file: string;
  agent: {
    dataDir: string;
    logLevel: z.infer<typeof logLevel>;
    hostname: string;
    logFormat: "json" | "text";
    logMaxBytes: number;
    logKeep: number;
  };
  control: { listen: ListenAddress; token?: string; maxBodyBytes: number };
  /** Absent when the output is nats and the file has no [api] table. */
  api?: {
    url: string;
    token: string;
    orgid: string;
    timezone: string;
    timeoutMs: number;
    concurrency: number;
    tlsVerify: boolean;
    batch: BatchLimits;
  };
  output: {
    type: "cybexp_api" | "nats";
    /** The batch limits inputs default to: [output.batch], else [api.batch], else the defaults. */
    batch: BatchLimits;
    nats?: NatsOutputConfig;
  };
  spool: { maxBytes: number; minFree: MinFree; whenFull: "block" | "drop_oldest"; fsync: "always" | "never" | number };
  deadLetter: { maxBytes: number };
  inputs: Map<string, InputConfig>;
}

export interface NatsOutputConfig extends NatsConnectionConfig {
  stream: string;
  subjectPrefix: string;
  createStream: boolean;
  replicas: number;
  maxBytes?: number;
  maxAgeMs?: number;
  duplicateWindowMs: number;
}

const DEFAULT_BATCH: BatchLimits = { maxEvents: 1000, maxBytes: 1024 * 1024, maxWaitMs: 1000 };

export function defaultConfigPath(env: Record<string, string | undefined> = process.env): string {
  return env.CYBEXP_AGENT_CONFIG || "./agent.config.toml";
}

export async function loadConfig(
  file: string,
  plugins: Record<string, InputPlugin>,
  env: Record<string, string | undefined> = process.env,
): Promise<AgentConfig> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError([`${file}: cannot read the config file (${code ?? errorMessage(err)})`]);
  }
  return parseConfig(text, resolve(file), plugins, env);
}

/** data_dir of a config file that may not validate (the CLI still needs to find the daemon). */
export function readDataDir(file: string, env: Record<string, string | undefined> = process.env): string | undefined {
  try {
    const text = substituteEnv(readFileSync(file, "utf8"), env).text;
    const raw = parseToml(text) as { agent?: { data_dir?: unknown } };
    const dir = typeof raw.agent?.data_dir === "string" ? raw.agent.data_dir : "./data";
    return resolveConfigPath(dir, dirname(resolve(file)));
  } catch {
    return undefined;
  }
}

export function parseConfig(
  text: string,
  file: string,
  plugins: Record<string, InputPlugin>,
  env: Record<string, string | undefined> = process.env,
): AgentConfig {
  const where = (line: number) => `${file}:${line}`;
  const configDir = dirname(file);
  const substituted = substituteEnv(text, env);
  const problems: string[] = substituted.problems.map((p) => `${where(p.line)}: ${p.message}`);
  // A variable that is not set leaves its value empty: the problem is the variable, so the
  // schema's complaint about the empty value on the same line is not repeated.
  const envLines = new Set(substituted.problems.map((p) => p.line));

  let raw: Record<string, unknown>;
  try {
    raw = parseToml(substituted.text) as Record<string, unknown>;
  } catch (err) {
    if (err instanceof TomlError) {
      const first = err.message.split("\n")[0]!.replace(/^Invalid TOML document: /, "");
      throw new ConfigError([...problems, `${where(err.line)}: TOML syntax error: ${first} (line ${err.line}, column ${err.column})`]);
    }
    throw err;
  }

  const lines = keyLines(text);
  const report = (path: PropertyKey[], message: string) => {
    const line = lineOf(lines, path);
    if (line && envLines.has(line)) return;
    problems.push(`${line ? where(line) + ": " : ""}${formatPath(path)}: ${message}`);
  };

  // Each section on its own, so that one run of validate lists the problems of all of them
  // and the checks across keys of the sections that are valid.
  const shape = coreSchema.shape;
  const sections: Record<string, any> = {};
  for (const key of Object.keys(raw)) if (!(key in shape)) report([key], "unknown key");
  for (const [key, schema] of Object.entries(shape)) {
    if (key === "inputs") continue;
    const parsed = (schema as z.ZodType).safeParse(raw[key]);
    if (parsed.success) sections[key] = parsed.data;
    else for (const issue of parsed.error.issues) reportIssue(issue, [key], report);
  }
  const c = sections as z.output<typeof coreSchema>;

  const control = c.control ? parseListen(c.control.listen) : undefined;
  if (c.control && !control) report(["control", "listen"], `expected "host:port" (e.g. "127.0.0.1:8765"), got "${c.control.listen}"`);
  else if (control && !isLoopback(control.host) && !c.control.token)
    report(["control", "token"], `required when control.listen (${c.control.listen}) is not a loopback address`);

  const limitsOf = (b: z.output<typeof batchSchema>): BatchLimits => ({ maxEvents: b.max_events, maxBytes: b.max_bytes, maxWaitMs: b.max_wait });
  const apiBatch: BatchLimits | undefined = c.api && limitsOf(c.api.batch);
  const outputBatch: BatchLimits | undefined = c.output && (c.output.batch ? limitsOf(c.output.batch) : (apiBatch ?? DEFAULT_BATCH));
  if (c.output && raw.api === undefined && c.output.type === "cybexp_api")
    report(["api"], 'required: the [api] table says where uploads go (or publish to NATS with [output] type = "nats")');
  if (c.output?.type === "nats" && !c.output.nats) report(["output", "nats"], 'required with [output] type = "nats": servers = ["nats://..."] at least');
  const natsOutput = c.output?.nats && natsOutputConfig(c.output.nats, configDir, report);

  const inputs = new Map<string, InputConfig>();
  const rawInputs = raw.inputs ?? {};
  if (!rawInputs || typeof rawInputs !== "object" || Array.isArray(rawInputs)) report(["inputs"], "expected a table of inputs ([inputs.<name>])");
  else
    for (const [key, table] of Object.entries(rawInputs as Record<string, unknown>)) {
      if (!table || typeof table !== "object" || Array.isArray(table)) {
        report(["inputs", key], "expected a table ([inputs." + key + "])");
        continue;
      }
      const checked = checkInput(key, table as Record<string, unknown>, plugins, configDir, report);
      if (!checked || !outputBatch) continue;
      const { type, typetag, name, orgid, timezone, enabled, batch, ...options } = checked.options as Record<string, any>;
      const resolved: Omit<InputConfig, "fingerprint" | "paths"> = {
        key,
        type,
        typetag,
        uploadName: name ?? key,
        // Without [api] (a nats edge) an input without an orgid sends none: the relay adds its own.
        orgid: orgid ?? c.api?.orgid ?? "",
        timezone: timezone ?? c.api?.timezone ?? "UTC",
        enabled,
        batch: {
          maxEvents: batch?.max_events ?? outputBatch.maxEvents,
          maxBytes: batch?.max_bytes ?? outputBatch.maxBytes,
          maxWaitMs: batch?.max_wait ?? outputBatch.maxWaitMs,
        },
        options,
      };
      inputs.set(key, { ...resolved, fingerprint: stableJson(resolved), paths: checked.paths });
    }
  if (problems.length) throw new ConfigError(problems);

  return {
    file,
    agent: {
      dataDir: resolveConfigPath(c.agent.data_dir, configDir),
      logLevel: c.agent.log_level,
      hostname: c.agent.hostname ?? osHostname(),
      logFormat: c.agent.log_format,
      logMaxBytes: c.agent.log_max_bytes,
      logKeep: c.agent.log_keep,
    },
    control: { listen: control!, token: c.control.token, maxBodyBytes: c.control.max_body_bytes },
    api: c.api && {
      url: c.api.url.replace(/\/+$/, ""),
      token: c.api.token,
      orgid: c.api.orgid,
      timezone: c.api.timezone,
      timeoutMs: c.api.timeout,
      concurrency: c.api.concurrency,
      tlsVerify: c.api.tls_verify,
      batch: apiBatch!,
    },
    output: { type: c.output.type, batch: outputBatch!, nats: natsOutput },
    spool: { maxBytes: c.spool.max_bytes, minFree: c.spool.min_free, whenFull: c.spool.when_full, fsync: c.spool.fsync },
    deadLetter: { maxBytes: c.dead_letter.max_bytes },
    inputs,
  };
}

/** [output.nats] as the agent uses it: its files resolved against the config's folder and checked. */
function natsOutputConfig(
  n: NonNullable<z.output<typeof coreSchema>["output"]["nats"]>,
  configDir: string,
  report: (path: PropertyKey[], msg: string) => void,
): NatsOutputConfig {
  const file = (key: "creds_file" | "tls_ca"): string | undefined => {
    if (n[key] === undefined) return undefined;
    const abs = resolveConfigPath(n[key]!, configDir, "readable");
    const problem = unreadable(abs);
    if (problem) report(["output", "nats", key], `cannot read ${abs} (${problem})`);
    return abs;
  };
  if (n.user && !n.password) report(["output", "nats", "password"], "required with user");
  return {
    servers: n.servers,
    creds_file: file("creds_file"),
    token: n.token,
    user: n.user,
    password: n.password,
    tls_ca: file("tls_ca"),
    timeout: n.timeout,
    stream: n.stream,
    subjectPrefix: n.subject_prefix,
    createStream: n.create_stream,
    replicas: n.replicas,
    maxBytes: n.max_bytes,
    maxAgeMs: n.max_age,
    duplicateWindowMs: n.duplicate_window,
  };
}

/** What `validate` shows besides "OK": where the agent keeps its data and the paths each input resolved to. */
export function describeResolvedPaths(config: AgentConfig): string[] {
  const out = [`data_dir = ${config.agent.dataDir}`];
  for (const input of config.inputs.values())
    for (const [key, value] of Object.entries(input.paths))
      out.push(`inputs.${input.key}.${key} = ${Array.isArray(value) ? JSON.stringify(value) : value}`);
  return out;
}

/**
 * The input's path options resolved against the config file's folder (a copy of the table),
 * and each file the input must read at start checked. Problems are reported; the table's
 * other values are left for the schema to judge.
 */
function resolvePaths(
  table: Record<string, unknown>,
  plugin: InputPlugin,
  configDir: string,
  at: PropertyKey[],
  report: (path: PropertyKey[], msg: string) => void,
): { table: Record<string, unknown>; paths: Record<string, string | string[]> } {
  const shape = (plugin.options as unknown as z.ZodObject<z.ZodRawShape>).shape ?? {};
  const out = { ...table };
  const paths: Record<string, string | string[]> = {};
  for (const [key, schema] of Object.entries(shape)) {
    const marked = pathKindOf(schema as z.ZodType);
    const value = table[key];
    if (!marked || value === undefined) continue;
    const one = (v: unknown, path: PropertyKey[]): unknown => {
      if (typeof v !== "string" || v === "") return v;
      const abs = resolveConfigPath(v, configDir, marked.kind);
      if (marked.kind === "readable") {
        const problem = unreadable(abs);
        if (problem) report(path, `cannot read ${abs} (${problem})`);
      }
      return abs;
    };
    if (marked.array && Array.isArray(value)) out[key] = value.map((v, i) => one(v, [...at, key, i]));
    else if (!marked.array) out[key] = one(value, [...at, key]);
    const resolved = out[key];
    if (typeof resolved === "string" || (Array.isArray(resolved) && resolved.every((v) => typeof v === "string")))
      paths[key] = resolved as string | string[];
  }
  return { table: out, paths };
}

/** Why a file the agent must read cannot be read, or undefined. */
function unreadable(path: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? errorMessage(err);
  }
  try {
    return fstatSync(fd).isFile() ? undefined : "not a regular file";
  } finally {
    closeSync(fd);
  }
}

/** Validates one input table against its plugin's schema; undefined (with problems reported) if invalid. */
function checkInput(
  key: string,
  table: Record<string, unknown>,
  plugins: Record<string, InputPlugin>,
  configDir: string,
  report: (path: PropertyKey[], msg: string) => void,
): { options: Record<string, unknown>; paths: Record<string, string | string[]> } | undefined {
  const at = ["inputs", key];
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(key)) {
    report(at, "input names use letters, digits, '_', '.' and '-' (at most 64, starting with a letter or digit)");
    return undefined;
  }
  const type = table.type;
  if (typeof type !== "string") {
    report([...at, "type"], `required: one of ${Object.keys(plugins).join(", ")}`);
    return undefined;
  }
  const plugin = plugins[type];
  if (!plugin) {
    report([...at, "type"], `unknown input type "${type}" (known: ${Object.keys(plugins).join(", ")})`);
    return undefined;
  }
  let failed = false;
  const resolved = resolvePaths(table, plugin, configDir, at, (path, msg) => {
    failed = true;
    report(path, msg);
  });
  const parsed = inputSchemaFor(plugin).safeParse(resolved.table);
  if (!parsed.success) for (const issue of parsed.error.issues) reportIssue(issue, at, report);
  return parsed.success && !failed ? { options: parsed.data as Record<string, unknown>, paths: resolved.paths } : undefined;
}

function reportIssue(issue: z.core.$ZodIssue, prefix: PropertyKey[], report: (path: PropertyKey[], msg: string) => void) {
  const path = [...prefix, ...issue.path];
  if (issue.code === "unrecognized_keys") {
    for (const k of issue.keys) report([...path, k], "unknown key");
    return;
  }
  let msg = issue.message;
  if (issue.code === "invalid_type" && /received undefined/.test(msg)) msg = `required (${issue.expected})`;
  report(path, msg.replace(/^Invalid input: /, ""));
}

export function formatPath(path: PropertyKey[]): string {
  let out = "";
  for (const p of path) {
    if (typeof p === "number") out += `[${p}]`;
    else out += (out ? "." : "") + String(p);
  }
  return out || "(top level)";
}

/** ${VAR} and ${VAR:-default} from the environment; $${ is a literal ${. Comment lines are left alone. */
export function substituteEnv(
  text: string,
  env: Record<string, string | undefined>,
): { text: string; problems: { line: number; message: string }[] } {
  const problems: { line: number; message: string }[] = [];
  const out = text.split("\n").map((line, i) => {
    if (/^\s*#/.test(line)) return line;
    return line.replace(/\$?\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (m, name: string, def: string | undefined) => {
      if (m.startsWith("$$")) return m.slice(1);
      const v = env[name];
      if (v !== undefined && v !== "") return escapeForToml(v);
      if (def !== undefined) return def;
      problems.push({ line: i + 1, message: `environment variable ${name} is not set (use \${${name}:-default} for a default)` });
      return "";
    });
  });
  return { text: out.join("\n"), problems };
}

// Values land inside TOML strings: keep quotes and backslashes from breaking the syntax.
function escapeForToml(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"');
}

/** Best-effort map from dotted key paths to the line that defines them, for error messages. */
function keyLines(text: string): Map<string, number> {
  const map = new Map<string, number>();
  let table: string[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith("#")) return;
    const header = /^\[\[?\s*([^\]]+?)\s*\]\]?/.exec(line);
    if (header) {
      table = splitKey(header[1]!);
      if (!map.has(table.join("."))) map.set(table.join("."), i + 1);
      return;
    }
    const kv = /^((?:"[^"]*"|'[^']*'|[A-Za-z0-9_.\s-])+?)\s*=/.exec(line);
    if (kv) {
      const full = [...table, ...splitKey(kv[1]!)];
      for (let n = table.length + 1; n <= full.length; n++) {
        const k = full.slice(0, n).join(".");
        if (!map.has(k)) map.set(k, i + 1);
      }
    }
  });
  return map;
}

function splitKey(key: string): string[] {
  const parts: string[] = [];
  const re = /\s*(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*(?:\.|$)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(key)) && m[0] !== "") parts.push(m[1] ?? m[2] ?? m[3]!);
  return parts;
}

function lineOf(lines: Map<string, number>, path: PropertyKey[]): number | undefined {
  const keys = path.filter((p) => typeof p !== "number").map(String);
  for (let n = keys.length; n > 0; n--) {
    const l = lines.get(keys.slice(0, n).join("."));
    if (l) return l;
  }
  return undefined;
}

export function parseListen(text: string): ListenAddress | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(text.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: m[1] ?? m[2]!, port };
}

export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(",")}]`;
  if (v && typeof v === "object")
    return `{${Object.keys(v as object)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableJson((v as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  return JSON.stringify(v) ?? "null";
}
