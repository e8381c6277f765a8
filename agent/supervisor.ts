// Runs the configured inputs: starts each enabled one, restarts a failing one with backoff,
// starts/stops/restarts one by name, and applies a new configuration as a difference.
import type { InputConfig } from "./config.ts";
import { createInputContext, newCounters, type CoreInputContext, type InputCounters } from "./context.ts";
import { routeKey } from "./forwarder.ts";
import { Backoff, sleep } from "./backoff.ts";
import { errorMessage } from "./errortext.ts";
import type { Input, InputPlugin, Logger } from "./plugin.ts";
import type { Spool } from "./spool/index.ts";
import type { StateStore } from "./state.ts";
import type { TapHub } from "./tap.ts";

/** "disabled": configured with `enabled = false` and not started by hand. */
export type InputState = "running" | "stopped" | "failed" | "backoff" | "disabled";

export interface InputStatus {
  name: string;
  type: string;
  state: InputState;
  events: number;
  bytes: number;
  errors: number;
  last_error: string | null;
  last_event_at: string | null;
  restarts: number;
  /** Why /health counts this input as a problem (a predicate: "failed: ...", "cannot listen on ..."), or null. */
  problem?: string | null;
  [detail: string]: unknown;
}

export interface SupervisorOptions {
  spool: Spool;
  state: StateStore;
  plugins: Record<string, InputPlugin>;
  log: Logger;
  hostname: string;
  /** Restart backoff; an input that ran this long without failing starts again from baseMs. */
  restart?: { baseMs?: number; capMs?: number; stableMs?: number };
  /** How long a stopping input gets to return from run(). */
  stopTimeoutMs?: number;
  /** Live capture of what the inputs emit (GET /tap). */
  tap?: TapHub;
  /**
   * One pass (`cybexp-agent test`): inputs are asked for one pass (InputContext.runOnce); one
   * that returns is "stopped", one that throws is "failed" with its error; none is restarted.
   */
  once?: boolean;
  /** Nothing the inputs take leaves the agent (`cybexp-agent test`): InputContext.dryRun. */
  dryRun?: boolean;
}

export interface ReloadResult {
  started: string[];
  stopped: string[];
  restarted: string[];
  unchanged: string[];
}

class RunningInput {
  state: InputState;
  restarts = 0;
  counters: InputCounters = newCounters();
  input?: Input;
  private ctx?: CoreInputContext;
  private controller?: AbortController;
  private loop?: Promise<void>;
  private wake?: AbortController;

  constructor(
    public config: InputConfig,
    private readonly sup: SupervisorOptions,
  ) {
    this.state = this.idleState;
  }

  /** The state of an input that is not running and has not failed. */
  get idleState(): InputState {
    return this.config.enabled ? "stopped" : "disabled";
  }

  get running(): boolean {
    return this.loop !== undefined;
  }

  start(): void {
    if (this.loop) return;
    this.wake = new AbortController();
    this.loop = this.runLoop(this.wake.signal).finally(() => {
      this.loop = undefined;
    });
  }

  /** Stop the input and wait until its events and checkpoints are safe. */
  async stop(): Promise<void> {
    const loop = this.loop;
    // What the input reported about its health belonged to the run that is ending.
    this.clearProblem();
    if (!loop) {
      // An operator stopping a failed input has taken note of it: no longer a problem.
      if (this.state === "failed") {
        this.state = this.idleState;
        this.sup.log.info("input stopped", { input: this.config.key });
      }
      return;
    }
    this.wake!.abort();
    this.controller?.abort();
    const timeout = this.sup.stopTimeoutMs ?? 5000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = await Promise.race([
      loop.then(() => false),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(true), timeout))),
    ]);
    clearTimeout(timer);
    if (timedOut) this.sup.log.warn("input did not stop in time", { input: this.config.key, timeout_ms: timeout });
    await this.ctx?.settled();
    this.clearProblem();
  }

  private clearProblem(): void {
    const d = this.counters.detail;
    if (d.problem !== undefined) d.problem = null;
    if (d.healthy_until !== undefined) d.healthy_until = null;
  }

  /** Why this input is a problem for /health right now, or null. */
  problem(now: number): string | null {
    const c = this.counters;
    const d = c.detail;
    const err = c.last_error ? `: ${c.last_error}` : "";
    if (this.state === "failed") return `failed${err}`;
    if (this.state !== "running" && this.state !== "backoff") return null;
    if (typeof d.problem === "string" && d.problem) return d.problem;
    if (this.state === "backoff") return `backoff${err}`;
    if (typeof d.healthy_until === "string" && Date.parse(d.healthy_until) < now) {
      const since = typeof d.last_success === "string" ? `since ${d.last_success}` : "yet";
      return `has not polled successfully ${since}${err}`;
    }
    if (d.emit_retrying === true) return `cannot hand its events to the spool (kept, retrying)${err}`;
    return null;
  }

  private async runLoop(stopping: AbortSignal): Promise<void> {
    const { config, sup } = this;
    const log = sup.log.child({ input: config.key });
    const plugin = sup.plugins[config.type]!;
    const backoff = new Backoff({ baseMs: sup.restart?.baseMs ?? 1000, capMs: sup.restart?.capMs ?? 300_000 });
    const stableMs = sup.restart?.stableMs ?? 60_000;
    while (!stopping.aborted) {
      this.controller = new AbortController();
      const upload = { name: config.uploadName, orgid: config.orgid, typetag: config.typetag, timezone: config.timezone };
      this.ctx = createInputContext({
        name: config.key,
        spool: sup.spool,
        state: sup.state,
        route: routeKey({ input: config.key, ...upload }),
        uploadRoute: upload,
        log,
        signal: this.controller.signal,
        hostname: sup.hostname,
        maxEventsPerRecord: config.batch.maxEvents,
        maxBytesPerRecord: config.batch.maxBytes,
        counters: this.counters,
        stateSchema: plugin.state,
        tap: sup.tap,
        runOnce: sup.once && !plugin.listens,
        dryRun: sup.dryRun,
      });
      const startedAt = Date.now();
      let failure: unknown;
      try {
        this.input = plugin.create(config.options, this.ctx);
        this.state = "running";
        log.info("input started", { type: config.type });
        await this.input.run();
        if (!stopping.aborted && !sup.once) failure = new Error("the input ended by itself");
      } catch (err) {
        if (!stopping.aborted) failure = err;
      }
      this.ctx.runReturned();
      this.input = undefined;
      if (stopping.aborted) break;
      if (sup.once) {
        this.controller.abort();
        await this.ctx.settled();
        if (failure === undefined) break;
        this.ctx.reportError(failure);
        this.state = "failed";
        log.error("input failed", { error: errorMessage(failure) });
        return;
      }
      this.controller.abort();
      await this.ctx.settled();
      this.ctx.reportError(failure);
      if (failure instanceof Error && failure.name === "FatalInputError") {
        this.state = "failed";
        log.error("input failed; fix the cause, then restart or reload it", { error: errorMessage(failure) });
        return;
      }
      if (Date.now() - startedAt >= stableMs) backoff.reset();
      const delay = backoff.next();
      this.state = "backoff";
      this.restarts++;
      log.warn("input failed; restarting after backoff", { error: errorMessage(failure), delay_ms: delay });
      await sleep(delay, stopping);
    }
    this.state = this.idleState;
    log.info("input stopped");
  }
}

export class Supervisor {
  private readonly inputs = new Map<string, RunningInput>();

  constructor(private readonly opts: SupervisorOptions) {}

  /** Apply a configuration: new inputs start, removed ones stop, changed ones restart. */
  async apply(configs: Map<string, InputConfig>): Promise<ReloadResult> {
    const result: ReloadResult = { started: [], stopped: [], restarted: [], unchanged: [] };
    const work: Promise<void>[] = [];
    for (const [name, entry] of this.inputs) {
      if (configs.has(name)) continue;
      result.stopped.push(name);
      work.push(entry.stop().then(() => void this.inputs.delete(name)));
    }
    for (const [name, config] of configs) {
      const entry = this.inputs.get(name);
      if (!entry) {
        const created = new RunningInput(config, this.opts);
        this.inputs.set(name, created);
        if (config.enabled) {
          created.start();
          result.started.push(name);
        }
        continue;
      }
      if (entry.config.fingerprint === config.fingerprint) {
        result.unchanged.push(name);
        continue;
      }
      const wasRunning = entry.running;
      entry.config = config;
      if (!config.enabled) {
        result.stopped.push(name);
        work.push(entry.stop().then(() => {
          if (!entry.running) entry.state = entry.idleState;
        }));
      } else if (wasRunning) {
        result.restarted.push(name);
        work.push(entry.stop().then(() => entry.start()));
      } else {
        result.started.push(name);
        entry.start();
      }
    }
    await Promise.all(work);
    return result;
  }

  has(name: string): boolean {
    return this.inputs.has(name);
  }

  /** Whether the input's run loop is going (it may be between a failure and its restart). */
  running(name: string): boolean {
    return this.inputs.get(name)?.running ?? false;
  }

  config(name: string): InputConfig | undefined {
    return this.inputs.get(name)?.config;
  }

  /** The live plugin instance of a running input (for pushed data). */
  instance(name: string): Input | undefined {
    return this.inputs.get(name)?.input;
  }

  start(name: string): void {
    this.entry(name).start();
  }

  async stop(name: string): Promise<void> {
    await this.entry(name).stop();
  }

  async restart(name: string): Promise<void> {
    const e = this.entry(name);
    await e.stop();
    e.start();
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.inputs.values()].map((e) => e.stop()));
  }

  status(now = Date.now()): InputStatus[] {
    return [...this.inputs.values()].map((e) => ({
      name: e.config.key,
      type: e.config.type,
      state: e.state,
      events: e.counters.events,
      bytes: e.counters.bytes,
      errors: e.counters.errors,
      last_error: e.counters.last_error,
      last_event_at: e.counters.last_event_at,
      restarts: e.restarts,
      ...e.counters.detail,
      problem: e.problem(now),
    }));
  }

  private entry(name: string): RunningInput {
    const e = this.inputs.get(name);
    if (!e) throw new UnknownInputError(name);
    return e;
  }
}

export class UnknownInputError extends Error {
  constructor(readonly input: string) {
    super(`no input named "${input}"`);
    this.name = "UnknownInputError";
  }
}
