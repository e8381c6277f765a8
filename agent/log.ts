// The agent's own log: one record per line, JSON (machine-parseable, greppable) or text (one
// readable line: time level msg key=value ...), on stderr or in a size-bounded file.
import { closeSync, fstatSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import type { Logger } from "./plugin.ts";

export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFormat = "json" | "text";
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

export interface RotatingFileOptions {
  /** The file is rotated before a line would take it past this size. */
  maxBytes: number;
  /** Rotated files kept: PATH.1 (the newest) to PATH.<keep>; 0 keeps none. */
  keep: number;
}

/** A log file the agent writes itself, so that it can bound it: before a line would take it past
 *  `maxBytes` it becomes PATH.1 (PATH.1 becomes PATH.2, ..., beyond `keep` removed) and a new
 *  PATH is started. reopen() starts writing to PATH afresh, for an outside logrotate that moved it.
 *  Writes are synchronous so that nothing is lost when the process ends right after a line; a
 *  line that cannot be written (a full disk, a removed folder) is lost, never thrown. */
export class RotatingFileSink implements LogSink {
  private fd: number | undefined;
  private size = 0;

  constructor(readonly path: string, private readonly opts: RotatingFileOptions) {
    this.open();
  }

  private open(): void {
    try {
      this.fd = openSync(this.path, "a", 0o600);
      this.size = fstatSync(this.fd).size;
    } catch {
      this.fd = undefined;
    }
  }

  private close(): void {
    if (this.fd === undefined) return;
    try {
      closeSync(this.fd);
    } catch {
      // already unusable; a new one is opened
    }
    this.fd = undefined;
  }

  /** Closes the file and opens PATH again (a new file if it was moved away). */
  reopen(): void {
    this.close();
    this.open();
  }

  /** Shifts PATH.1 ... to PATH.2 ..., PATH to PATH.1, and starts a new PATH. */
  rotate(): void {
    this.close();
    const { keep } = this.opts;
    try {
      if (keep <= 0) rmSync(this.path, { force: true });
      else {
        rmSync(`${this.path}.${keep}`, { force: true });
        for (let i = keep - 1; i >= 1; i--) renameQuietly(`${this.path}.${i}`, `${this.path}.${i + 1}`);
        renameQuietly(this.path, `${this.path}.1`);
      }
    } catch {
      // a file that cannot be moved is written on; the bound holds again at the next rotation
    }
    this.open();
  }

  write(line: string): void {
    const bytes = Buffer.from(line, "utf8");
    if (this.fd === undefined) this.open();
    if (this.size > 0 && this.size + bytes.length > this.opts.maxBytes) this.rotate();
    if (this.fd === undefined) return;
    try {
      let off = 0;
      while (off < bytes.length) off += writeSync(this.fd, bytes, off);
      this.size += bytes.length;
    } catch {
      // the line is lost; the agent goes on
    }
  }

  end(): void {
    this.close();
  }
}

function renameQuietly(from: string, to: string): void {
  try {
    renameSync(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}

/** A log record as a JSON object on one line. */
export function jsonLine(rec: Record<string, unknown>): string {
  return JSON.stringify(rec) + "\n";
}

/** A log record as `time LEVEL msg key=value ...`; values with spaces, quotes or `=` are quoted,
 *  objects written as JSON, newlines escaped so that one record stays one line. */
export function textLine(rec: Record<string, unknown>): string {
  const { ts, level, msg, ...rest } = rec;
  let out = `${String(ts)} ${String(level).toUpperCase().padEnd(5)} ${oneLine(String(msg))}`;
  for (const [k, v] of Object.entries(rest)) {
    if (v === undefined) continue;
    out += ` ${k}=${textValue(v)}`;
  }
  return out + "\n";
}

function oneLine(s: string): string {
  return s.replace(/\r/g, "\\r").replace(/\n/g, "\\n");
}

function textValue(v: unknown): string {
  const s = typeof v === "string" ? v : JSON.stringify(v) ?? String(v);
  if (typeof v === "string" && (s === "" || /[\s"=\\]/.test(s))) return JSON.stringify(s);
  return oneLine(s);
}

interface Root {
  level: number;
  sink: LogSink;
  format: (rec: Record<string, unknown>) => string;
}

class RecordLogger implements Logger {
  constructor(
    private readonly root: Root,
    private readonly fields: Record<string, unknown>,
  ) {}

  private emit(level: LogLevel, msg: string, fields?: Record<string, unknown>) {
    if (RANK[level] < this.root.level) return;
    const rec: Record<string, unknown> = { ts: new Date().toISOString(), level, msg, ...this.fields };
    if (fields) for (const [k, v] of Object.entries(fields)) rec[k] = v instanceof Error ? v.message : v;
    let line: string;
    try {
      line = this.root.format(rec);
    } catch {
      // a field that cannot be serialised (a cycle, a BigInt) must not cost the record
      line = this.root.format({ ts: rec.ts, level, msg, ...this.fields, unprintable_fields: true });
    }
    this.root.sink.write(line);
  }
  debug(msg: string, f?: Record<string, unknown>) { this.emit("debug", msg, f); }
  info(msg: string, f?: Record<string, unknown>) { this.emit("info", msg, f); }
  warn(msg: string, f?: Record<string, unknown>) { this.emit("warn", msg, f); }
  error(msg: string, f?: Record<string, unknown>) { this.emit("error", msg, f); }
  child(fields: Record<string, unknown>): Logger {
    return new RecordLogger(this.root, { ...this.fields, ...fields });
  }
}

export interface RootLogger extends Logger {
  setLevel(level: LogLevel): void;
}

export function createLogger(level: LogLevel = "info", sink: LogSink = stderrSink, format: LogFormat = "json"): RootLogger {
  const root: Root = { level: RANK[level], sink, format: format === "text" ? textLine : jsonLine };
  const logger = new RecordLogger(root, {}) as unknown as RootLogger;
  logger.setLevel = (l: LogLevel) => { root.level = RANK[l]; };
  return logger;
}

/** A logger that discards everything (tests that do not look at logs). */
export const silentLogger: Logger = createLogger("error", { write() {} });
