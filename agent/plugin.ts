// The plugin API: everything an input may touch. A plugin imports from here and from the small
// rule modules the core shares with inputs (agent/units.ts, backoff.ts, redact.ts, errortext.ts,
// neterrors.ts, bytes.ts, runtime/detect.ts, version.ts, nats.ts), and from the shared toolkit in
// plugins/common/; never from another plugin or from core internals
// (test/plugin-boundary.test.ts checks it; its PLUGIN_API lists the modules).
import { homedir } from "node:os";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { z as zod } from "zod";
import type { z } from "zod";

export type EventKind = "text" | "json";

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

/** The parts of an upload besides its file: what the Cybex-P API files the events under. */
export interface UploadRoute {
  name: string;
  orgid: string;
  typetag: string;
  timezone: string;
}

export interface EmitOptions {
  /**
   * Upload these events under another source's parts instead of this input's own. The `nats`
   * input relays each batch as the sensor that made it (the Cybex-P API must see the sensor's
   * name, orgid, typetag and timezone, not the relay's); the file part is named after `name`.
   * Events of another route go to uploads of their own: an upload never mixes two routes.
   */
  route?: UploadRoute;
  /** Resolve only once the events are on stable storage (forces a spool fsync). */
  sync?: boolean;
  /**
   * Stop waiting for room in a full spool when this aborts: the emit rejects and none of the
   * events were taken. (Waiting always ends when the input is stopped: see InputContext.emitText.)
   */
  signal?: AbortSignal;
}

/** What a running input sees. Narrow on purpose: events out, state in and out, a log, a stop signal. */
export interface InputContext<State = unknown> {
  readonly name: string;
  readonly log: Logger;
  /** Aborted when the input must stop; an input returns from run() soon after (within 1 s). */
  readonly signal: AbortSignal;
  /** The agent's hostname (config [agent] hostname). */
  readonly hostname: string;
  /**
   * One pass only (`cybexp-agent test`): take what the source has now (poll once, read files to
   * their current end), then return from run(). Inputs that wait for data pushed to them
   * declare `listens` instead and are stopped after the test's duration.
   */
  readonly runOnce: boolean;
  /**
   * The events go nowhere (`cybexp-agent test`): change nothing outside the agent that a real
   * run would count on. The `nats` input gives its messages back instead of acknowledging them,
   * so that the real relay still gets them.
   */
  readonly dryRun: boolean;
  /**
   * This input's own upload parts (its name, orgid, typetag and timezone as configured). A relay
   * fills in its own orgid and timezone for batches whose sensor sent none.
   */
  readonly route: UploadRoute;
  /**
   * Hand text events (one line each, no trailing newline) to the spool. Resolves once the
   * spool has taken them; waits while the spool is full in `block` mode or its disk is below
   * `spool.min_free` (that wait is the backpressure an input feels). All or nothing: a
   * rejected emit took none of the events. It rejects when the input is stopped while it
   * waits (then do not checkpoint past these events) or on an I/O error; an input keeps the
   * events at their source or tries again, never drops them.
   */
  emitText(lines: string[], opts?: EmitOptions): Promise<void>;
  /** Hand JSON object events to the spool. */
  emitJson(objects: object[], opts?: EmitOptions): Promise<void>;
  /**
   * Hand JSON object events already serialised (each a single-line JSON object text the
   * input has validated) to the spool, without another stringify.
   */
  emitJsonLines(lines: string[], opts?: EmitOptions): Promise<void>;
  /**
   * Hand events already framed as the spool keeps them, without making a string of each:
   * `payload` is UTF-8, every event one line ending in "\n" (a JSON object text per line for
   * "json", which the input has validated). A relay hands a message's body over as it came.
   * The same promises as emitText.
   */
  emitFramed(kind: EventKind, payload: Uint8Array, opts?: EmitOptions): Promise<void>;
  /**
   * The input's saved state, or undefined on first run. Throws a FatalInputError when the
   * file does not match the plugin's `state` schema (the input is failed, not restarted).
   */
  loadState(): Promise<State | undefined>;
  /**
   * Save `state` as soon as every event emitted before this call is durable in the spool.
   * The input does not wait; the returned promise resolves once the state is saved.
   */
  checkpoint(state: State): Promise<void>;
  /** Count a problem that does not stop the input (shown in status as errors/last_error). */
  reportError(err: unknown): void;
  /** Free-form detail shown in the input's status entry (e.g. {connected: true}). */
  setDetail(detail: Record<string, unknown>): void;
}

/** A running input. run() resolves when the input stops after ctx.signal aborts; a throw is a failure. */
export interface Input {
  run(): Promise<void>;
  /** Optional entry point for pushed data (the manual input). */
  submit?(body: Uint8Array, contentType: string | null): Promise<{ accepted: number }>;
  /** What submit() would make of a body (same checks, same errors), taking nothing: the console's preview. */
  preview?(body: Uint8Array, contentType: string | null): { events: number };
}

/** A plugin module's default export. */
export interface InputPlugin<Schema extends z.ZodType = z.ZodType> {
  type: string;
  description: string;
  /** Options of this input type (beyond the common keys type/typetag/name/orgid/timezone/enabled/batch). */
  options: Schema;
  /**
   * The shape of the state this input saves with checkpoint(). loadState() checks the saved
   * file against it: a file of another shape (hand-edited, from another version, damaged)
   * fails the input with an error naming the file and the key, instead of the input quietly
   * starting over and sending everything again. Required for an input that calls checkpoint().
   */
  state?: z.ZodType;
  /**
   * The input waits for data pushed to it (a listening socket, a websocket, submissions) and
   * has no "now" to read up to: `cybexp-agent test` runs it for its --duration rather than
   * asking it for one pass (InputContext.runOnce).
   */
  listens?: boolean;
  create(options: z.infer<Schema>, ctx: InputContext<any>): Input;
}

export function defineInput<S extends z.ZodType>(p: InputPlugin<S>): InputPlugin<S> {
  return p;
}

/** The input types an executable knows, by type name. agent/main.ts hands them to the CLI and the agent. */
export type InputPlugins = Record<string, InputPlugin>;

/** A user-facing problem with the input's data or options: shown as one line, no stack. */
export class InputError extends Error {
  /** `retryAfterS`: when the problem passes by itself (e.g. a full spool), the client may try again after this long. */
  constructor(message: string, readonly status = 400, readonly retryAfterS?: number) {
    super(message);
    this.name = "InputError";
  }
}

/**
 * The input cannot work until its configuration or its source changes (e.g. an API key the
 * source rejects): the supervisor marks it failed instead of restarting it in a loop.
 */
export class FatalInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FatalInputError";
  }
}

// ---- paths in options -----------------------------------------------------------------------

/**
 * How a path option's value is resolved against the folder of the config file:
 * - "file": a file or folder path.
 * - "readable": a file the input reads at start (a certificate, key, CA bundle, credentials):
 *   one that does not exist or cannot be read is a config error naming the key and the path.
 * - "glob": a path or glob; a glob's base need not exist yet.
 * - "exclude": a glob with "/" is resolved like "glob"; one without "/" matches file names
 *   anywhere and stays as written.
 * - "dsn": a database dsn: a plain path, or a file: / sqlite: URL whose path is relative, is
 *   resolved; any other URL (postgres://...) stays as written.
 */
export type PathKind = "file" | "readable" | "glob" | "exclude" | "dsn";

// Keyed by the schema's definition, which .describe() and .meta() clones share.
const pathKinds = new WeakMap<object, PathKind>();

/**
 * A string option that names a path. The core resolves it against the folder of the config
 * file before the plugin sees its options (so the plugin gets absolute paths, whatever the
 * agent's working directory); `~` and `~/...` are the home folder of the user running the agent.
 * Use it as the option itself or as an array's element: `z.array(pathOption("glob"))`.
 */
export function pathOption(kind: PathKind = "file"): z.ZodString {
  const schema = zod.string().min(1);
  pathKinds.set(schema._zod.def, kind);
  return schema;
}

/** The PathKind of a schema made by pathOption() (seen through optional/default/array), if any. */
export function pathKindOf(schema: z.ZodType): { kind: PathKind; array: boolean } | undefined {
  let s: any = schema;
  let array = false;
  for (let depth = 0; s && depth < 8; depth++) {
    const kind = pathKinds.get(s._zod.def);
    if (kind) return { kind, array };
    const def = s._zod.def;
    if (def.type === "array") {
      array = true;
      s = def.element;
    } else if (def.innerType) s = def.innerType;
    else if (def.type === "pipe") s = def.in;
    else return undefined;
  }
  return undefined;
}

/** The one rule for a path in the config: relative to the config file's folder; ~ is the home folder. */
export function resolveConfigPath(value: string, configDir: string, kind: PathKind = "file"): string {
  if (kind === "exclude" && !value.includes("/")) return value;
  if (kind === "dsn") {
    const url = /^(file|sqlite):(?:\/\/)?([^?#]*)(.*)$/i.exec(value);
    if (url) {
      const path = decodeURIComponent(url[2]!);
      // file:///abs stays a file: URL; file:rel becomes file:///<config dir>/rel; a sqlite: URL becomes its path.
      const abs = path.startsWith("/") ? path : resolvePlain(path, configDir);
      return url[1]!.toLowerCase() === "file" ? pathToFileURL(abs).href + url[3]! : abs;
    }
    if (/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(value)) return value;
  }
  return resolvePlain(value, configDir);
}

function resolvePlain(value: string, configDir: string): string {
  if (value === "~") return homedir();
  if (value.startsWith("~/")) return resolve(homedir(), value.slice(2));
  return resolve(configDir, value);
}
