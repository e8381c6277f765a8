// SQLite through node:sqlite (built into Bun, Deno and the compiled agent: no native addon).
//
// Each read opens the file read-only, steps the statement synchronously up to the page's
// end and closes it again, so the agent never writes and holds a lock only while it steps
// the query (never while it waits for the spool). Opening per poll also follows a file
// that was replaced. The query runs on the event loop: keep pages small (max_rows).
import { DatabaseSync } from "node:sqlite";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Cursor, Row } from "./rows.ts";
import { BusyError, type RowSource } from "./source.ts";

const SQLITE_BUSY = 5;
const SQLITE_LOCKED = 6;

export class SqliteSource implements RowSource {
  readonly label: string;
  readonly secrets: string[] = [];
  private readonly path: string;

  constructor(dsn: string, private readonly query: string) {
    this.path = dsn.startsWith("file:") ? fileURLToPath(dsn) : resolve(dsn);
    this.label = `sqlite ${this.path}`;
  }

  read(cursor: Cursor, take: (row: Row) => boolean): Promise<void> {
    try {
      this.readNow(cursor, take);
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err);
    }
  }

  private readNow(cursor: Cursor, take: (row: Row) => boolean): void {
    let db: DatabaseSync;
    try {
      db = new DatabaseSync(this.path, { readOnly: true });
    } catch (err) {
      throw this.failure("cannot open", err);
    }
    try {
      // A busy wait inside SQLite would stall the whole agent (the call is synchronous; Deno
      // waits 5 s by default): a busy file fails at once and the input retries it later.
      db.exec("PRAGMA busy_timeout = 0");
    } catch (err) {
      db.close();
      throw this.failure("cannot open", err);
    }
    // An error of `take` (a row it cannot use) is the input's own, not a database failure.
    let refused: { err: unknown } | undefined;
    try {
      const statement = db.prepare(this.query);
      // Integers come as bigint so none past 2^53 is rounded (or refused); rows.ts narrows them.
      statement.setReadBigInts(true);
      const param = cursor.bigint ? BigInt(cursor.value) : cursor.value;
      for (const row of statement.iterate({ $1: param })) {
        try {
          if (!take(row as Row)) break;
        } catch (err) {
          refused = { err };
          break;
        }
      }
    } catch (err) {
      throw this.failure("query failed", err);
    } finally {
      db.close();
    }
    if (refused) throw refused.err;
  }

  private failure(what: string, err: unknown): Error {
    const e = err as { message?: string; errcode?: number };
    const message = e?.message ?? String(err);
    // Messages differ between runtimes (Deno adds the path): the code and the text both count.
    const busy = ((e?.errcode ?? 0) & 0xff) === SQLITE_BUSY || ((e?.errcode ?? 0) & 0xff) === SQLITE_LOCKED
      || /database (table )?is locked/i.test(message);
    const text = `${this.label}: ${what}: ${message.replace(`: ${this.path}`, "")}`;
    return busy ? new BusyError(text) : new Error(text);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
