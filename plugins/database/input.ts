// One poll of the `database` input: run the query from the cursor, post each new row as a
// JSON event, advance the cursor to the last row's cursor_column, and checkpoint the cursor
// once the spool holds the rows.
//
// Rows at the cursor value: a `>` query never returns them again; a `>=` query returns them
// on every poll, so the hashes of the rows posted at the current cursor value are kept
// (`at_cursor`) and those rows are skipped when they come back unchanged.
import { z } from "zod";
import { FatalInputError, type InputContext } from "../../agent/plugin.ts";
import { sleep } from "../../agent/backoff.ts";
import { runPolls, type PollResult } from "../common/poll.ts";
import { hashString, stringHash } from "../common/seen.ts";
import { CursorTypeError, MissingCursorColumnError, PageCollector, sameCursor, type Cursor } from "./rows.ts";
import { BusyError, type RowSource } from "./source.ts";
import { SqliteSource } from "./sqlite.ts";
import { PostgresSource } from "./postgres.ts";
import type { DatabaseOptions } from "./options.ts";

/** Most row hashes kept at one cursor value. */
export const MAX_AT_CURSOR = 10_000;

/** A cursor value: a number or a string (text, a timestamp, a big integer). */
const cursorValue = z.union([z.number(), z.string()], { error: "expected a number or a string" });

/** The saved state: the input's state schema. */
export const databaseState = z.strictObject({
  v: z.literal(1),
  cursor: cursorValue,
  /** The cursor is an integer beyond 2^53 (kept as text). */
  cursor_bigint: z.literal(true).optional(),
  /** The cursor_start this cursor grew from: a changed cursor_start starts over from it. */
  start: cursorValue,
  /** hashString of each row posted at the cursor value. */
  at_cursor: z.array(stringHash).max(MAX_AT_CURSOR).optional(),
}).superRefine((s, ctx) => {
  if (s.cursor_bigint && !(typeof s.cursor === "string" && /^-?[1-9]\d*$/.test(s.cursor) && !Number.isSafeInteger(Number(s.cursor)))) {
    ctx.addIssue({ code: "custom", path: ["cursor"], message: "with cursor_bigint, expected the text of an integer beyond 2^53" });
  }
});

export type DatabaseState = z.infer<typeof databaseState>;

/** A busy SQLite file is tried again this many times within a poll (then the poll fails and backs off). */
const BUSY_RETRIES = 5;
const BUSY_FIRST_DELAY_MS = 50;

export class DatabaseInput {
  private cursor!: Cursor;
  private atCursor = new Set<string>();
  private warned = new Set<string>();

  constructor(
    private readonly opts: DatabaseOptions,
    private readonly ctx: InputContext<DatabaseState>,
    private readonly source: RowSource = createSource(opts, ctx),
  ) {}

  async run(): Promise<void> {
    this.restore(await this.ctx.loadState());
    this.ctx.setDetail({ driver: this.opts.driver, source: this.source.label, cursor: this.cursor.value });
    try {
      await runPolls(this.ctx, { intervalMs: this.opts.interval, secrets: this.source.secrets }, (signal) => this.poll(signal));
    } finally {
      await this.source.close();
    }
  }

  private restore(saved: DatabaseState | undefined): void {
    const start: Cursor = { value: this.opts.cursor_start };
    if (saved === undefined) {
      this.cursor = start;
      return;
    }
    if (saved.start !== this.opts.cursor_start) {
      this.ctx.log.info("cursor_start changed; starting from it", { cursor_start: this.opts.cursor_start, saved_cursor: saved.cursor });
      this.cursor = start;
    } else {
      this.cursor = saved.cursor_bigint ? { value: saved.cursor, bigint: true } : { value: saved.cursor };
      if (saved.at_cursor) this.atCursor = new Set(saved.at_cursor);
      this.ctx.log.info("resuming from the saved cursor", { cursor: saved.cursor });
    }
  }

  private async poll(signal: AbortSignal): Promise<PollResult> {
    const page = await this.readPage(signal);
    const { events, cursors } = page;
    const before = this.cursor;
    let next = before;
    let nullCursors = 0;
    for (const c of cursors) {
      if (c === null) {
        nullCursors++;
        continue;
      }
      if (typeof c.value === "number" && typeof next.value === "number" && c.value < next.value) this.warnOutOfOrder(c, next);
      next = c;
    }
    if (nullCursors > 0) this.warnOnce("null", `rows with a NULL ${this.opts.cursor_column} are posted but cannot move the cursor`);
    if (page.cut) {
      this.warnOnce("cut", `more than ${2 * this.opts.max_rows} rows share one ${this.opts.cursor_column} value; raise max_rows, or rows may be missed or repeated`);
    }

    if (events.length > 0) {
      await this.ctx.emitJsonLines(events);
      const atCursor = sameCursor(next, before) ? new Set(this.atCursor) : new Set<string>();
      // The rows at the new cursor value are the last ones (the rows are in cursor order).
      for (let i = events.length - 1; i >= 0 && (cursors[i] === null || sameCursor(cursors[i]!, next)); i--) {
        if (cursors[i] !== null) atCursor.add(hashString(events[i]!));
      }
      this.cursor = next;
      this.atCursor = this.bounded(atCursor);
      const state: DatabaseState = { v: 1, cursor: next.value, start: this.opts.cursor_start };
      if (next.bigint) state.cursor_bigint = true;
      if (this.atCursor.size > 0) state.at_cursor = [...this.atCursor];
      this.ctx.checkpoint(state).catch(() => {}); // a failed save is reported by the context
      this.ctx.setDetail({ cursor: next.value });
    }
    this.ctx.log.debug("polled", { posted: events.length, repeated: page.repeated, cursor: next.value });

    const status = `${events.length} rows${page.repeated > 0 ? ` (${page.repeated} posted before)` : ""}; cursor ${next.value}`;
    // A full page (max_rows new rows) means more may be waiting: read on at once.
    return page.full ? { status, nextPollInMs: 0 } : { status };
  }

  /** The page at the cursor; a busy SQLite file is tried again a few times first. */
  private async readPage(signal: AbortSignal): Promise<PageCollector> {
    for (let attempt = 0; ; attempt++) {
      const page = new PageCollector(this.opts.cursor_column, this.cursor, this.atCursor, this.opts.max_rows);
      try {
        await this.source.read(this.cursor, (row) => page.add(row), signal);
        return page;
      } catch (err) {
        if (err instanceof MissingCursorColumnError || err instanceof CursorTypeError) throw new FatalInputError(err.message);
        if (!(err instanceof BusyError) || attempt >= BUSY_RETRIES || signal.aborted) throw err;
        await sleep(BUSY_FIRST_DELAY_MS * 2 ** attempt, signal);
      }
    }
  }

  private bounded(hashes: Set<string>): Set<string> {
    if (hashes.size <= MAX_AT_CURSOR) return hashes;
    this.warnOnce("at_cursor", `more than ${MAX_AT_CURSOR} rows share one ${this.opts.cursor_column} value; a >= query may post some again`);
    return new Set([...hashes].slice(-MAX_AT_CURSOR));
  }

  private warnOutOfOrder(c: Cursor, prev: Cursor): void {
    this.warnOnce("order", `rows are not in ${this.opts.cursor_column} order (${c.value} after ${prev.value}): the query must ORDER BY ${this.opts.cursor_column}`);
  }

  private warnOnce(key: string, message: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.ctx.log.warn(message);
  }
}

function createSource(opts: DatabaseOptions, ctx: InputContext<DatabaseState>): RowSource {
  if (opts.driver === "sqlite") return new SqliteSource(opts.dsn, opts.query);
  return new PostgresSource({ dsn: opts.dsn, query: opts.query, queryTimeoutMs: opts.query_timeout, maxRows: opts.max_rows, log: ctx.log });
}
