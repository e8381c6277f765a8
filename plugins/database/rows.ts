// Rows of a database query as JSON events, the cursor each row carries, and the page of rows
// one poll takes.
import { Buffer } from "node:buffer";
import { hashString } from "../common/seen.ts";

/** A result row as the driver gives it: column name → value. */
export type Row = Record<string, unknown>;

/** A cursor value as kept in state and bound as $1. */
export interface Cursor {
  value: number | string;
  /** An integer beyond ±2^53, kept as its decimal text and bound as an integer. */
  bigint?: boolean;
}

/** The cursor column holds values no cursor can be made of (a blob, a boolean, ...). */
export class CursorTypeError extends Error {
  constructor(column: string, value: unknown) {
    super(`cursor_column "${column}" holds ${describe(value)}; a cursor must be a number, a string or a timestamp`);
    this.name = "CursorTypeError";
  }
}

/** The rows have no such column as cursor_column. */
export class MissingCursorColumnError extends Error {
  constructor(column: string, row: Row) {
    super(`the query's rows have no column "${column}" (cursor_column); their columns: ${Object.keys(row).join(", ") || "none"}`);
    this.name = "MissingCursorColumnError";
  }
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

function safeBigint(v: bigint): boolean {
  return v <= MAX_SAFE && v >= -MAX_SAFE;
}

/** The cursor a row's cursor_column value gives, or null for SQL NULL (no cursor). */
export function cursorOf(raw: unknown, column: string): Cursor | null {
  if (raw === null || raw === undefined) return null;
  switch (typeof raw) {
    case "number":
      if (Number.isFinite(raw)) return { value: raw };
      break;
    case "bigint":
      return safeBigint(raw) ? { value: Number(raw) } : { value: raw.toString(), bigint: true };
    case "string":
      return { value: raw };
  }
  if (raw instanceof Date && !Number.isNaN(raw.getTime())) return { value: raw.toISOString() };
  throw new CursorTypeError(column, raw);
}

export function sameCursor(a: Cursor | null, b: Cursor | null): boolean {
  return a !== null && b !== null && a.value === b.value;
}

/** A column value as JSON: blobs as base64, dates as ISO 8601, integers beyond 2^53 as strings. */
export function jsonValue(v: unknown): unknown {
  if (v === null || v === undefined) return null;
  switch (typeof v) {
    case "string":
    case "boolean":
      return v;
    case "number":
      // NaN and ±Infinity (REAL and float8 allow them) have no JSON number.
      return Number.isFinite(v) ? v : String(v);
    case "bigint":
      return safeBigint(v) ? Number(v) : v.toString();
  }
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64");
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? null : v.toISOString();
  if (Array.isArray(v)) return v.map(jsonValue);
  if (typeof v === "object") return jsonObject(v as Row);
  return String(v);
}

function jsonObject(row: Row): Record<string, unknown> {
  // No prototype: a column named "__proto__" stays a plain key.
  const out: Record<string, unknown> = Object.create(null);
  for (const k of Object.keys(row)) out[k] = jsonValue(row[k]);
  return out;
}

/** The row's JSON event: one line, column names as keys. */
export function rowEvent(row: Row): string {
  return JSON.stringify(jsonObject(row));
}

function describe(v: unknown): string {
  if (v instanceof Uint8Array) return "a blob";
  if (typeof v === "object") return Array.isArray(v) ? "an array" : "an object";
  return `a ${typeof v}`;
}

/**
 * The rows one poll takes: at most `maxRows` new rows, except that rows sharing the last
 * row's cursor value are never split between polls (a `>` query would skip the rest), and
 * that a page still at the starting cursor value goes on until it gets past it. Rows at the
 * starting cursor value that were posted before (`seenAtStart`, hashes of their events: a
 * `>=` query returns them on every poll) are skipped and do not count. Beyond
 * `maxRows + tailRows` new rows it stops regardless (`cut`).
 */
export class PageCollector {
  /** The new rows' events, in order. */
  readonly events: string[] = [];
  /** Each new row's cursor (null for SQL NULL). */
  readonly cursors: Array<Cursor | null> = [];
  /** Rows skipped as posted before. */
  repeated = 0;
  /** The page stopped inside a run of rows with one cursor value. */
  cut = false;
  private last: Cursor;
  private first = true;

  constructor(
    private readonly column: string,
    private readonly start: Cursor,
    private readonly seenAtStart: ReadonlySet<string>,
    private readonly maxRows: number,
    private readonly tailRows = maxRows,
  ) {
    this.last = start;
  }

  /** Takes a row; false once the page is complete (the reader stops and finishes the query). */
  add(row: Row): boolean {
    if (this.first) {
      if (!(this.column in row)) throw new MissingCursorColumnError(this.column, row);
      this.first = false;
    }
    const cursor = cursorOf(row[this.column], this.column);
    const n = this.events.length;
    if (n >= this.maxRows) {
      const progressed = !sameCursor(this.last, this.start);
      if (progressed && !sameCursor(cursor, this.last)) return false;
      if (n >= this.maxRows + this.tailRows) {
        this.cut = true;
        return false;
      }
    }
    const event = rowEvent(row);
    if (this.seenAtStart.size > 0 && sameCursor(cursor, this.start) && this.seenAtStart.has(hashString(event))) {
      this.repeated++;
      return true;
    }
    this.events.push(event);
    this.cursors.push(cursor);
    if (cursor !== null) this.last = cursor;
    return true;
  }

  /** At least maxRows new rows: more may be waiting. */
  get full(): boolean {
    return this.events.length >= this.maxRows;
  }
}
