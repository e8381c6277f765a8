// JSON-lines logger on stderr: one object per line, machine-parseable, greppable.
import type { Logger } from "./plugin.ts";

export type LogLevel = "debug" | "info" | "warn" | "error";
const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface LogSink {
  write(line: string): void;
}

let stderrGuarded = false;

/** Log lines on stderr. A failed write (a full disk under the daemon's agent.log, a closed pipe)
 *  loses that line and never ends the process: Deno throws it, Bun emits it as an "error"
 *  event, which would be fatal without a listener. */
export const stderrSink: LogSink = {
  write(line) {
    if (!stderrGuarded) {
      stderrGuarded = true;
      process.stderr.on("error", () => {});
    }
    try {
      process.stderr.write(line);
    } catch {
      // the line is lost; the agent goes on
    }
  },
};

class JsonLogger implements Logger {
  constructor(
    private readonly root: { level: number; sink: LogSink },
    private readonly fields: Record<string, unknown>,
  ) {}

  private emit(level: LogLevel, msg: string, fields?: Record<string, unknown>) {
    if (RANK[level] < this.root.level) return;
    const rec: Record<string, unknown> = { ts: new Date().toISOString(), level, msg, ...this.fields };
    if (fields) for (const [k, v] of Object.entries(fields)) rec[k] = v instanceof Error ? v.message : v;
    this.root.sink.write(JSON.stringify(rec) + "\n");
  }
  debug(msg: string, f?: Record<string, unknown>) { this.emit("debug", msg, f); }
  info(msg: string, f?: Record<string, unknown>) { this.emit("info", msg, f); }
  warn(msg: string, f?: Record<string, unknown>) { this.emit("warn", msg, f); }
  error(msg: string, f?: Record<string, unknown>) { this.emit("error", msg, f); }
  child(fields: Record<string, unknown>): Logger {
    return new JsonLogger(this.root, { ...this.fields, ...fields });
  }
}

export interface RootLogger extends Logger {
  setLevel(level: LogLevel): void;
}

export function createLogger(level: LogLevel = "info", sink: LogSink = stderrSink): RootLogger {
  const root = { level: RANK[level], sink };
  const logger = new JsonLogger(root, {}) as unknown as RootLogger;
  logger.setLevel = (l: LogLevel) => { root.level = RANK[l]; };
  return logger;
}

/** A logger that discards everything (tests that do not look at logs). */
export const silentLogger: Logger = createLogger("error", { write() {} });

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
