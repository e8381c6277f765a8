// Builds the InputContext a plugin runs against, on top of the spool and the state store.
// The context also keeps the input's counters, so status and metrics see what each input did.
import type { z } from "zod";
import { formatPath } from "./config.ts";
import { FatalInputError, type EmitOptions, type EventKind, type InputContext, type Logger, type UploadRoute } from "./plugin.ts";
import { routeKey } from "./forwarder.ts";
import { countNewlines, withFinalNewline } from "./bytes.ts";
import { isNoSpace } from "./fserrors.ts";
import type { FramedEvents, Spool } from "./spool/index.ts";
import type { StateStore } from "./state.ts";
import type { TapHub } from "./tap.ts";
import { errorFirstLine, errorMessage } from "./errortext.ts";

export interface InputCounters {
  events: number;
  bytes: number;
  errors: number;
  last_error: string | null;
  last_event_at: string | null;
  detail: Record<string, unknown>;
}

export function newCounters(): InputCounters {
  return { events: 0, bytes: 0, errors: 0, last_error: null, last_event_at: null, detail: {} };
}

export interface ContextOptions {
  name: string;
  spool: Spool;
  state: StateStore;
  /** Spool route key of this input (its upload metadata). */
  route: string;
  log: Logger;
  signal: AbortSignal;
  hostname: string;
  /** Events per spool record: the input's upload batch size, so acks match uploads. */
  maxEventsPerRecord?: number;
  maxBytesPerRecord?: number;
  counters?: InputCounters;
  /** The plugin's state schema: loadState() checks the saved file against it. */
  stateSchema?: z.ZodType;
  /** Live capture (GET /tap): offered what the spool took, when someone taps. */
  tap?: TapHub;
  /** One pass only (InputContext.runOnce). */
  runOnce?: boolean;
  /** Nothing leaves the agent (InputContext.dryRun). */
  dryRun?: boolean;
  /** The input's own upload parts (InputContext.route), the ones `route` is the key of; default: none but the name. */
  uploadRoute?: UploadRoute;
}

export type CoreInputContext<S = unknown> = InputContext<S> & {
  counters: InputCounters;
  /** Resolves once every checkpoint asked for so far is saved (or has failed and been reported). */
  settled(): Promise<void>;
  /**
   * The input's run() has returned (the supervisor calls this as it settles). A checkpoint asked
   * for after it is ignored: not saved, its promise resolves. Work the input left running past
   * its stop (a poll that ignored its signal) would otherwise save a state older than the one
   * the next run of the input saves.
   */
  runReturned(): void;
};

export function createInputContext<S = unknown>(o: ContextOptions): CoreInputContext<S> {
  const counters = o.counters ?? newCounters();
  // Checkpoints are chained so a later state never lands before an earlier one.
  let lastCheckpoint: Promise<void> = Promise.resolve();
  let checkpoints = 0;
  let newest: Promise<void> = Promise.resolve();
  let returned = false;

  // Route keys of relayed routes, made once each (a relay sees few distinct sensors' routes).
  const otherRoutes = new Map<string, string>();
  const routeOf = (r: UploadRoute | undefined): string => {
    if (r === undefined) return o.route;
    const id = `${r.name}\n${r.orgid}\n${r.typetag}\n${r.timezone}`;
    let key = otherRoutes.get(id);
    if (key === undefined) {
      if (otherRoutes.size >= 10_000) otherRoutes.clear();
      key = routeKey({ input: o.name, name: r.name, orgid: r.orgid, typetag: r.typetag, timezone: r.timezone, file: r.name });
      otherRoutes.set(id, key);
    }
    return key;
  };

  async function emit(kind: EventKind, lines: string[] | FramedEvents, opts?: EmitOptions): Promise<void> {
    if (Array.isArray(lines) ? lines.length === 0 : lines.count === 0) return;
    await o.spool.append(routeOf(opts?.route), kind, lines, {
      maxEventsPerRecord: o.maxEventsPerRecord,
      maxBytesPerRecord: o.maxBytesPerRecord,
      sync: opts?.sync,
      // A stopping input must not wait for room: its checkpoint then matches what the spool holds.
      signal: opts?.signal ? AbortSignal.any([o.signal, opts.signal]) : o.signal,
    });
    let bytes = 0;
    if (Array.isArray(lines)) for (const l of lines) bytes += l.length + 1;
    else bytes = lines.bytes.byteLength;
    const count = Array.isArray(lines) ? lines.length : lines.count;
    counters.events += count;
    counters.bytes += bytes;
    counters.last_event_at = new Date().toISOString();
    // Framed events become strings only for someone who taps them.
    if (o.tap?.active) o.tap.offer(o.name, kind, Array.isArray(lines) ? lines : framedLines(lines.bytes));
  }

  return {
    name: o.name,
    log: o.log,
    signal: o.signal,
    hostname: o.hostname,
    runOnce: o.runOnce ?? false,
    dryRun: o.dryRun ?? false,
    route: o.uploadRoute ?? { name: o.name, orgid: "", typetag: "", timezone: "" },
    counters,
    settled: () => lastCheckpoint,
    runReturned() {
      returned = true;
    },
    emitText: (lines, opts) => emit("text", lines, opts),
    emitJson: (objects, opts) => emit("json", objects.map((x) => JSON.stringify(x)), opts),
    emitJsonLines: (lines, opts) => emit("json", lines, opts),
    emitFramed: (kind, payload, opts) => emit(kind, framed(payload), opts),
    loadState: () => loadCheckedState<S>(o),
    checkpoint(state: S): Promise<void> {
      if (returned) {
        o.log.debug("checkpoint asked for after run() returned: not saved");
        return Promise.resolve();
      }
      const durable = o.spool.whenDurable();
      const seq = ++checkpoints;
      const next = lastCheckpoint.then(async () => {
        await durable;
        return saveUntilStored(o, state, () => seq < checkpoints, counters);
      });
      // A failed save is reported but must not wedge every later checkpoint.
      lastCheckpoint = next.then(() => {}, (err) => {
        counters.errors++;
        counters.last_error = `saving state: ${errorMessage(err)}`;
        o.log.error("saving input state failed", { error: errorMessage(err) });
      });
      // A checkpoint superseded while it waited for room is done when the later one is saved.
      const done: Promise<void> = next.then((stored) => (stored ? undefined : newest));
      newest = done;
      return done;
    },
    reportError(err: unknown) {
      counters.errors++;
      counters.last_error = errorFirstLine(err);
    },
    setDetail(detail: Record<string, unknown>) {
      counters.detail = { ...counters.detail, ...detail };
    },
  };
}

/** A payload of "\n"-ended lines as the spool takes it; a last line without "\n" gets one. */
function framed(payload: Uint8Array): FramedEvents {
  const bytes = withFinalNewline(payload);
  return { bytes, count: countNewlines(bytes) };
}

function framedLines(bytes: Uint8Array): string[] {
  const lines = new TextDecoder().decode(bytes).split("\n");
  lines.pop();
  return lines;
}

/** How long a stopped input's last checkpoint keeps waiting for disk space. */
const STOPPED_SAVE_PATIENCE_MS = 3000;
const NO_SPACE_RETRY_MS = 500;

/**
 * Save the state, waiting out a full disk: a checkpoint that is not saved means the input
 * reads again what the spool already holds (duplicates), so it is retried until it is stored
 * (true), superseded by a later checkpoint that will save a later state (false), or the input
 * has been stopped for a while (the agent is shutting down and cannot wait for ever).
 */
async function saveUntilStored(o: ContextOptions, state: unknown, superseded: () => boolean, counters: InputCounters): Promise<boolean> {
  let stoppedAt = 0;
  for (let attempt = 0; ; attempt++) {
    try {
      await o.state.save(o.name, state);
      if (attempt > 0) o.log.info("input state saved after the disk had room again", { attempts: attempt + 1 });
      return true;
    } catch (err) {
      if (!isNoSpace(err)) throw err;
      if (o.signal.aborted) stoppedAt ||= Date.now();
      if (stoppedAt && Date.now() - stoppedAt > STOPPED_SAVE_PATIENCE_MS) throw err;
      if (attempt === 0) {
        counters.errors++;
        counters.last_error = `saving state: ${errorMessage(err)} (retrying until there is room)`;
        o.log.warn("no space to save the input's state; retrying", { error: errorMessage(err) });
      }
      if (superseded()) return false;
      await new Promise((r) => setTimeout(r, NO_SPACE_RETRY_MS));
      if (superseded()) return false;
    }
  }
}

/**
 * The saved state, checked against the plugin's schema. A file of the wrong shape is fatal for
 * the input: quietly starting over would send everything again.
 */
async function loadCheckedState<S>(o: ContextOptions): Promise<S | undefined> {
  let saved: unknown;
  try {
    saved = await o.state.load(o.name);
  } catch (err) {
    throw new FatalInputError(errorMessage(err));
  }
  if (saved === undefined || o.stateSchema === undefined) return saved as S | undefined;
  const checked = o.stateSchema.safeParse(saved);
  if (checked.success) return checked.data as S;
  const issue = checked.error.issues[0]!;
  const where = issue.path.length > 0 ? `${formatPath(issue.path)}: ` : "";
  throw new FatalInputError(
    `state file ${o.state.fileFor(o.name)} does not match this input's state (${where}${issue.message.replace(/^Invalid input: /, "")}); ` +
      `stop the input and delete the file to start it afresh`,
  );
}
