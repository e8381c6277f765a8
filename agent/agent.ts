// The running agent: wires config, spool, state, forwarder, supervisor and control server
// together, and winds them down in order on shutdown.
import { randomBytes } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { loadConfig, type AgentConfig } from "./config.ts";
import { controlApp, type ControlApi } from "./control.ts";
import { Forwarder, type RouteMeta } from "./forwarder.ts";
import { createOutput, reconfigureOutput } from "./output/index.ts";
import type { OutputTransport } from "./output/transport.ts";
import { removeLeftoverTempFiles } from "./leftovers.ts";
import { DataDirLock } from "./lock.ts";
import { createLogger, type RootLogger } from "./log.ts";
import { renderMetrics } from "./metrics.ts";
import { InputError, type Input, type InputPlugins } from "./plugin.ts";
import { Reserve } from "./reserve.ts";
import { removeRunningConfig, writeRunningConfig } from "./runningconfig.ts";
import { serve, type Served } from "./serve.ts";
import { Spool } from "./spool/index.ts";
import { StateStore } from "./state.ts";
import { Supervisor, UnknownInputError, type ReloadResult } from "./supervisor.ts";
import { listenErrorCause } from "./neterrors.ts";
import { TapHub, type TapSubscription } from "./tap.ts";
import { formatBytes } from "./units.ts";
import { CONSOLE_ASSETS } from "./console/assets.ts";
import { VERSION } from "./version.ts";

/** How often a missing disk-space reserve is put back (when the disk has room for it). */
const RESERVE_CHECK_MS = 10_000;

export interface RunOptions {
  configPath: string;
  /** The input types this executable knows (agent/main.ts wires them in). */
  plugins: InputPlugins;
  log?: RootLogger;
  /** Tests shrink the restart backoff. */
  restart?: { baseMs?: number; capMs?: number };
}

// Thrown by Agent.start when the data_dir is locked by another agent.
export { AlreadyRunningError } from "./lock.ts";

export class Agent implements ControlApi {
  private readonly startedAt = Date.now();
  private server?: Served;
  private token = "";
  private stopping?: Promise<void>;
  /** The last reload asked for: the next waits for it. */
  private reloading: Promise<void> = Promise.resolve();
  private readonly reserveTimer: ReturnType<typeof setInterval>;
  private resolveDone!: () => void;
  /** Resolves once the agent has shut down. */
  readonly done = new Promise<void>((r) => (this.resolveDone = r));

  private constructor(
    private config: AgentConfig,
    private readonly plugins: InputPlugins,
    private readonly log: RootLogger,
    private readonly spool: Spool,
    private readonly output: OutputTransport,
    private readonly forwarder: Forwarder,
    private readonly supervisor: Supervisor,
    private readonly reserve: Reserve,
    private readonly tapHub: TapHub,
  ) {
    // A reserve used up on a full disk is put back once deliveries have freed space.
    this.reserveTimer = setInterval(() => void this.reserve.ensure(), RESERVE_CHECK_MS);
    (this.reserveTimer as { unref?: () => void }).unref?.();
  }

  static async start(opts: RunOptions): Promise<Agent> {
    const config = await loadConfig(opts.configPath, opts.plugins);
    const log = opts.log ?? createLogger(config.agent.logLevel);
    const dataDir = config.agent.dataDir;
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    // One agent per data_dir, decided before the spool, the state or the runningconfig are
    // touched; held until this process ends. The reserve lets start-up writes through on a full disk.
    const reserve = new Reserve(dataDir, { log });
    await DataDirLock.acquire(dataDir, { log, reserve });
    try {
      await removeLeftoverTempFiles(dataDir, log);
      await reserve.ensure();
      const agent = await Agent.assemble(opts, config, log, reserve);
      log.info("agent started", { version: VERSION, pid: process.pid, control: agent.url, inputs: config.inputs.size });
      return agent;
    } catch (err) {
      // A start that failed must not keep the data_dir from the next one in this process.
      DataDirLock.heldOn(dataDir)?.release();
      throw err;
    }
  }

  /** Spool, state, forwarder, inputs and the control server, on a locked data_dir. */
  private static async assemble(opts: RunOptions, config: AgentConfig, log: RootLogger, reserve: Reserve): Promise<Agent> {
    const dataDir = config.agent.dataDir;

    const spool = await Spool.open({
      dir: join(dataDir, "spool"),
      maxBytes: config.spool.maxBytes,
      minFree: config.spool.minFree,
      whenFull: config.spool.whenFull,
      fsync: config.spool.fsync,
      log: log.child({ component: "spool" }),
    });
    // A state save that meets a full disk may use the reserve (the input's checkpoint then holds).
    const state = new StateStore(join(dataDir, "state"), () => reserve.release("saving input state"));
    let agent: Agent | undefined;
    const output = createOutput(config, log.child({ component: "output" }));
    const forwarder = new Forwarder({
      spool,
      output,
      batchFor: (meta: RouteMeta) => (agent?.supervisor.config(meta.input)?.batch ?? agent?.config.output.batch ?? config.output.batch),
      deadLetterDir: join(dataDir, "dead-letter"),
      deadLetterMaxBytes: config.deadLetter.maxBytes,
      log: log.child({ component: "forwarder" }),
    });
    const tap = new TapHub();
    const supervisor = new Supervisor({
      spool,
      state,
      plugins: opts.plugins,
      log,
      hostname: config.agent.hostname,
      restart: opts.restart,
      tap,
    });
    agent = new Agent(config, opts.plugins, log, spool, output, forwarder, supervisor, reserve, tap);
    forwarder.start();
    await supervisor.apply(config.inputs);
    try {
      await agent.listen();
    } catch (err) {
      await agent.shutdown();
      throw err;
    }
    return agent;
  }

  get url(): string {
    return `http://${hostForUrl(this.server!.hostname)}:${this.server!.port}`;
  }

  private async listen(): Promise<void> {
    const { listen, maxBodyBytes } = this.config.control;
    this.token = randomBytes(24).toString("base64url");
    const app = controlApp(this, {
      tokens: () => [this.token, ...(this.config.control.token ? [this.config.control.token] : [])],
      maxBodyBytes: () => this.config.control.maxBodyBytes,
      listenHost: listen.host,
      port: () => this.server?.port ?? listen.port,
      assets: CONSOLE_ASSETS,
    });
    try {
      this.server = await serve((req) => app.fetch(req), {
        hostname: listen.host,
        port: listen.port,
        maxRequestBodySize: maxBodyBytes + 1024 * 1024,
      });
    } catch (err) {
      throw new Error(`control.listen: cannot listen on ${listen.host}:${listen.port}: ${listenErrorCause(err)}`);
    }
    const dataDir = this.config.agent.dataDir;
    await writeRunningConfig(dataDir, { pid: process.pid, url: this.url, token: this.token }, new Reserve(dataDir, { log: this.log }));
  }

  health(): { problems: string[] } {
    const problems: string[] = [];
    const out = this.forwarder.status();
    if (out.state !== "ok") problems.push(`output ${out.state}${out.last_error ? `: ${out.last_error}` : ""}`);
    // The supervisor judges each input (one home for that text, shown in /status too).
    for (const i of this.supervisor.status()) if (i.problem) problems.push(`input ${i.name} ${i.problem}`);
    const sp = this.spool.stats();
    if (sp.full === "min_free")
      problems.push(`spool full: free space on the data_dir's filesystem (${formatBytes(sp.free_bytes ?? 0)}) is below spool.min_free (${formatBytes(sp.min_free_bytes)}); inputs are paused`);
    else if (sp.full === "max_bytes")
      problems.push(`spool full: spool.max_bytes (${formatBytes(sp.max_bytes)}) reached; inputs are paused`);
    return { problems };
  }

  status() {
    return {
      agent: {
        version: VERSION,
        pid: process.pid,
        hostname: this.config.agent.hostname,
        config: this.config.file,
        data_dir: this.config.agent.dataDir,
        started_at: new Date(this.startedAt).toISOString(),
        uptime_s: Math.round((Date.now() - this.startedAt) / 1000),
      },
      inputs: this.supervisor.status(),
      output: this.forwarder.status(),
      spool: this.spool.stats(),
    };
  }

  metrics(): string {
    return renderMetrics({
      uptimeSeconds: (Date.now() - this.startedAt) / 1000,
      inputs: this.supervisor.status(),
      output: this.forwarder.status(),
      delivery: this.forwarder.metrics(),
      spool: this.spool.stats(),
    });
  }

  async inputAction(name: string, action: "start" | "stop" | "restart"): Promise<void> {
    if (action === "start") this.supervisor.start(name);
    else await this.supervisor[action](name);
    this.log.info(`input ${action} requested`, { input: name });
  }

  /**
   * Reads the config file again and applies the difference. Reloads from SIGHUP, the CLI and
   * POST /reload run one after the other, each on the file as it is when its turn comes.
   */
  reload(): Promise<ReloadResult> {
    const run = this.reloading.then(() => this.reloadNow());
    this.reloading = run.then(() => undefined, () => undefined);
    return run;
  }

  private async reloadNow(): Promise<ReloadResult> {
    // An invalid file throws here and nothing changes.
    const next = await loadConfig(this.config.file, this.plugins);
    const warnings: string[] = [];
    if (next.agent.dataDir !== this.config.agent.dataDir) warnings.push("agent.data_dir");
    const a = next.control.listen, b = this.config.control.listen;
    if (a.host !== b.host || a.port !== b.port) warnings.push("control.listen");
    if (next.spool.maxBytes !== this.config.spool.maxBytes || next.spool.whenFull !== this.config.spool.whenFull || next.spool.fsync !== this.config.spool.fsync ||
        JSON.stringify(next.spool.minFree) !== JSON.stringify(this.config.spool.minFree))
      warnings.push("spool");
    const output = await reconfigureOutput(this.output, next);
    if (output === "changed") this.forwarder.retryNow();
    if (output === "restart") warnings.push("output.type");
    if (warnings.length) this.log.warn("these settings take effect only after a restart of the agent", { keys: warnings });
    // An output of another kind keeps running as it was until the restart: so do its settings.
    this.config = {
      ...next,
      agent: { ...next.agent, dataDir: this.config.agent.dataDir },
      control: { ...next.control, listen: b },
      ...(output === "restart" ? { api: this.config.api, output: this.config.output } : {}),
    };
    this.log.setLevel(next.agent.logLevel);
    this.forwarder.setDeadLetterMaxBytes(next.deadLetter.maxBytes);
    const result = await this.supervisor.apply(next.inputs);
    this.log.info("configuration reloaded", { ...result });
    return result;
  }

  async submit(name: string, body: Uint8Array, contentType: string | null): Promise<{ accepted: number }> {
    if (this.stopping) throw new InputError("the agent is stopping; submit again once it runs", 503, 5);
    const input = this.submissionInput(name);
    return input.submit!(body, contentType);
  }

  preview(name: string, body: Uint8Array, contentType: string | null): { events: number } {
    const input = this.submissionInput(name);
    if (!input.preview) throw new InputError(`input "${name}" cannot preview a submission`, 400);
    return input.preview(body, contentType);
  }

  /** The running input that takes submissions by this name, or the error that says why not. */
  private submissionInput(name: string): Input {
    const config = this.supervisor.config(name);
    if (!config) throw new UnknownInputError(name);
    if (config.type !== "manual") throw new InputError(`input "${name}" is of type ${config.type}; only manual inputs accept events`, 400);
    const input = this.supervisor.instance(name);
    if (!input?.submit) throw new InputError(`input "${name}" is not running`, 409);
    return input;
  }

  tap(inputs: string[], ratePerSecond: number): TapSubscription {
    for (const name of inputs) if (!this.supervisor.config(name)) throw new UnknownInputError(name);
    return this.tapHub.subscribe({ inputs, ratePerSecond });
  }

  /** Graceful: inputs stop, the spool is flushed, state saved, in-flight uploads get a few seconds. */
  shutdown(): Promise<void> {
    this.stopping ??= (async () => {
      this.log.info("agent stopping");
      clearInterval(this.reserveTimer);
      const t0 = Date.now();
      this.tapHub.closeAll();
      await this.supervisor.stopAll();
      await this.spool.sync();
      await this.forwarder.stop(Math.max(500, 8000 - (Date.now() - t0)));
      await this.output.close?.();
      await this.spool.close();
      await removeRunningConfig(this.config.agent.dataDir);
      await this.server?.close();
      this.log.info("agent stopped", { took_ms: Date.now() - t0 });
      DataDirLock.heldOn(this.config.agent.dataDir)?.release();
      this.resolveDone();
    })();
    return this.stopping;
  }
}

function hostForUrl(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}
