// What the database input needs from a driver.
import type { Cursor, Row } from "./rows.ts";

export interface RowSource {
  /** The database without secrets, for status and messages. */
  readonly label: string;
  /** Values never to show in messages (the password). */
  readonly secrets: string[];
  /**
   * Runs the query with `cursor` as $1 and hands the rows, in order, to `take` until it
   * returns false or the rows end; the query is finished (no lock or snapshot left open)
   * when this resolves.
   */
  read(cursor: Cursor, take: (row: Row) => boolean, signal: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

/** The database is busy (another process holds a lock): the read may be tried again shortly. */
export class BusyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BusyError";
  }
}
