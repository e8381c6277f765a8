// What the agent does on signals while it runs (`run`, and the daemon `start` makes):
// SIGTERM/SIGINT stop it gracefully, SIGHUP reloads the config file (as `reload` does), SIGUSR1
// reopens its own log file, SIGUSR2 and SIGQUIT are logged and otherwise ignored, SIGPIPE is
// ignored. Handlers are installed before start-up begins, so that a signal sent while the agent
// is still starting (or reloading) is kept and acted on once it can be, instead of killing it.
import { ConfigError } from "./config.ts";
import { errorMessage } from "./errortext.ts";
import type { Logger } from "./plugin.ts";

export interface SignalTarget {
  reload(): Promise<unknown>;
  shutdown(): Promise<void>;
}

export interface SignalOptions {
  log: () => Logger;
  /** SIGUSR1: reopen the log file; false when there is none (logging to stderr). */
  reopenLog?: () => boolean;
}

const HANDLED = ["SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT", "SIGPIPE"] as const;
type Handled = (typeof HANDLED)[number];

export class ServiceSignals {
  private target?: SignalTarget;
  private stopSignal?: string;
  private reloadPending = false;
  private reloading?: Promise<void>;
  private readonly listeners = new Map<Handled, () => void>();

  constructor(private readonly opts: SignalOptions) {}

  install(): void {
    for (const sig of HANDLED) {
      const fn = () => this.on(sig);
      try {
        process.on(sig, fn);
        this.listeners.set(sig, fn);
      } catch {
        // a runtime that cannot listen for this signal keeps its default action (see README)
      }
    }
  }

  uninstall(): void {
    for (const [sig, fn] of this.listeners) process.off(sig, fn);
    this.listeners.clear();
  }

  /** Start-up is over: a stop or reload that came meanwhile is carried out now. */
  attach(target: SignalTarget): void {
    this.target = target;
    if (this.stopSignal) void this.stop();
    else if (this.reloadPending) this.reload();
  }

  /** Whether a stop was asked for before the agent was attached. */
  get stopRequested(): boolean {
    return this.stopSignal !== undefined;
  }

  private on(sig: Handled): void {
    const log = this.opts.log();
    switch (sig) {
      case "SIGPIPE":
        return; // a closed stderr or socket shows up as EPIPE where it is written
      case "SIGTERM":
      case "SIGINT":
        log.info(`received ${sig}${this.target ? "" : "; stopping once start-up is done"}`);
        if (this.stopSignal) return;
        this.stopSignal = sig;
        if (this.target) void this.stop();
        return;
      case "SIGHUP":
        if (this.stopSignal) return log.info("received SIGHUP while stopping; ignored");
        if (!this.target || this.reloading) {
          this.reloadPending = true;
          log.info(`received SIGHUP; the reload follows once ${this.target ? "the running reload" : "start-up"} is done`);
          return;
        }
        log.info("received SIGHUP; reloading the configuration");
        this.reload();
        return;
      case "SIGUSR1":
        if (this.opts.reopenLog?.()) this.opts.log().info("received SIGUSR1; log file reopened");
        else log.info("received SIGUSR1; the log goes to stderr, no file to reopen");
        return;
      case "SIGUSR2":
      case "SIGQUIT":
        log.warn(`received ${sig}; ignored (SIGHUP reloads, SIGUSR1 reopens the log, SIGTERM stops)`);
        return;
    }
  }

  /** Runs reloads one after another: a SIGHUP that arrives during one runs once it is over. */
  private reload(): void {
    this.reloadPending = true;
    this.reloading ??= (async () => {
      while (this.reloadPending && !this.stopSignal && this.target) {
        this.reloadPending = false;
        try {
          await this.target.reload();
        } catch (err) {
          const problems = err instanceof ConfigError ? err.problems : [errorMessage(err)];
          this.opts.log().error("reload on SIGHUP failed; the running configuration stays", { problems });
        }
      }
      this.reloading = undefined;
    })();
  }

  /** A reload in progress finishes first, so that inputs are not started and stopped at once. */
  private async stop(): Promise<void> {
    await this.reloading;
    await this.target!.shutdown();
  }
}
