// PostgreSQL through `postgres` (porsager's pure-JS client: runs under Bun, Deno and in the
// compiled agent).
//
// One connection, opened on the first read and kept between polls; a connection-level
// failure (refused, reset, no answer in time) closes it and the next poll, after the poll
// core's backoff, connects afresh. The session is read-only (default_transaction_read_only)
// with statement_timeout = query_timeout. Rows are fetched through a portal in chunks, so a
// query without LIMIT still reads only what the page takes; leaving early closes the portal.
//
// Values: timestamps keep the server's microseconds as ISO 8601 text (a JS Date would drop
// them, and a cursor rounded down re-reads its own row); int8 is a number when exact, else
// its decimal text; numeric stays text (exact); bytea is a Buffer (base64 in the event).
import type postgres from "postgres";
import type { Logger } from "../../agent/plugin.ts";
import { errorMessage } from "../../agent/errortext.ts";
import type { Cursor, Row } from "./rows.ts";
import type { RowSource } from "./source.ts";

const OID = { int8: 20, date: 1082, timestamp: 1114, timestamptz: 1184 };
const CHUNK_ROWS = 1000;

export interface PostgresSourceOptions {
  dsn: string;
  query: string;
  queryTimeoutMs: number;
  maxRows: number;
  log: Logger;
}

/** "2024-05-01 12:00:00.123456+00" → "2024-05-01T12:00:00.123456Z" (other offsets kept as ±hh:mm). */
export function pgTimestampToIso(text: string): string {
  if (!/^\d{4,}-\d\d-\d\d \d/.test(text)) return text; // infinity, BC dates, plain dates
  const iso = text.replace(" ", "T");
  if (iso.endsWith("+00")) return `${iso.slice(0, -3)}Z`;
  return /[+-]\d\d$/.test(iso) ? `${iso}:00` : iso;
}

function int8Value(text: string): number | string {
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : text;
}

/** The password of a postgres:// URL (as written and decoded), the secrets to keep out of messages. */
export function dsnSecrets(dsn: string): string[] {
  const out = new Set<string>([dsn]);
  try {
    const u = new URL(dsn);
    for (const raw of [u.password, u.searchParams.get("password") ?? ""]) {
      if (!raw) continue;
      out.add(raw);
      try {
        out.add(decodeURIComponent(raw));
      } catch {
        // a malformed escape: the raw text is what appears anyway
      }
    }
  } catch {
    // not a URL: the whole dsn is the secret
  }
  return [...out];
}

/** host:port/database of a postgres:// URL, without user or password. */
export function dsnLabel(dsn: string): string {
  try {
    const u = new URL(dsn);
    return `postgres ${u.hostname || "localhost"}:${u.port || "5432"}${u.pathname || "/"}`;
  } catch {
    return "postgres";
  }
}

export class PostgresSource implements RowSource {
  readonly label: string;
  readonly secrets: string[];
  private sql: postgres.Sql | null = null;

  constructor(private readonly opts: PostgresSourceOptions) {
    this.label = dsnLabel(opts.dsn);
    // The client also takes a password from PGPASSWORD when the URL has none.
    this.secrets = [...dsnSecrets(opts.dsn), ...(process.env.PGPASSWORD ? [process.env.PGPASSWORD] : [])];
  }

  private async client(): Promise<postgres.Sql> {
    if (this.sql) return this.sql;
    // Loaded on first use: agents without a PostgreSQL input do not carry the client in memory.
    const { default: postgres } = await import("postgres");
    const log = this.opts.log;
    this.sql = postgres(this.opts.dsn, {
      max: 1,
      // Unnamed statements work behind transaction-pooling proxies (PgBouncer) too.
      prepare: false,
      connect_timeout: Math.max(1, Math.ceil(this.opts.queryTimeoutMs / 1000)),
      onnotice: (notice) => log.debug("postgres notice", { message: notice.message }),
      connection: {
        application_name: "cybexp-agent",
        statement_timeout: this.opts.queryTimeoutMs,
        default_transaction_read_only: true,
        TimeZone: "UTC",
        DateStyle: "ISO",
      },
      types: {
        int8: { to: OID.int8, from: [OID.int8], serialize: (x: unknown) => String(x), parse: int8Value },
        timestamps: {
          to: OID.timestamptz,
          from: [OID.date, OID.timestamp, OID.timestamptz],
          serialize: (x: unknown) => String(x),
          parse: pgTimestampToIso,
        },
      } as any,
    });
    return this.sql;
  }

  async read(cursor: Cursor, take: (row: Row) => boolean, signal: AbortSignal): Promise<void> {
    const sql = await this.client();
    // statement_timeout bounds the server's work; this bounds a connection that stopped
    // answering at all (a dead peer the kernel has not noticed yet).
    let stalled = false;
    const timer = setTimeout(() => {
      stalled = true;
      void this.close();
    }, this.opts.queryTimeoutMs + 10_000);
    const abort = () => void this.close();
    signal.addEventListener("abort", abort, { once: true });
    let refused: { err: unknown } | undefined;
    try {
      const chunk = Math.min(CHUNK_ROWS, this.opts.maxRows);
      // The cursor goes as text of unknown type: the server reads it as $1's type in the query.
      const rows = sql.unsafe(this.opts.query, [String(cursor.value)]).cursor(chunk);
      outer: for await (const batch of rows) {
        for (const row of batch) {
          let more: boolean;
          try {
            more = take(row as Row);
          } catch (err) {
            refused = { err };
            break outer;
          }
          if (!more) break outer;
        }
      }
    } catch (err) {
      if (!isStatementError(err)) await this.close();
      if (signal.aborted) throw err;
      if (stalled) throw new Error(`${this.label}: no answer within ${Math.round((this.opts.queryTimeoutMs + 10_000) / 1000)}s; reconnecting`);
      throw new Error(`${this.label}: ${describe(err)}`);
    } finally {
      clearTimeout(timer);
      signal.removeEventListener("abort", abort);
    }
    if (refused) throw refused.err;
  }

  async close(): Promise<void> {
    const sql = this.sql;
    this.sql = null;
    if (sql) await sql.end({ timeout: 0 }).catch(() => {});
  }
}

/** A server error that ends the statement but leaves the connection usable (SQL error, timeout). */
/** postgres.js's PostgresError, told by name: the client module is loaded lazily. */
function isPostgresError(err: unknown): err is Error & { code?: string } {
  return err instanceof Error && err.name === "PostgresError";
}

function isStatementError(err: unknown): boolean {
  return isPostgresError(err) && (err as { severity?: string }).severity === "ERROR";
}

function describe(err: unknown): string {
  if (isPostgresError(err)) return `${err.message} [${err.code}]`;
  return errorMessage(err);
}
