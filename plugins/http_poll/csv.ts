// A streaming CSV reader (RFC 4180): fields quoted with `"`, `""` for a quote inside quotes,
// line breaks inside quoted fields, rows ended by CRLF, LF or a lone CR. Text arrives in
// chunks split anywhere (even between a CR and its LF, or inside `""`).
//
// Lenient where real feeds stray from the RFC, so no data is refused for style: a quote
// inside an unquoted field is kept as a character, text after a closing quote is appended
// to the field, rows may have different lengths. Blank lines are skipped (a line holding
// only `""` is a row with one empty field). What cannot be read is a quoted field still
// open at the end: the answer was cut short.

export class CsvError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CsvError";
  }
}

const QUOTE = 0x22;
const CR = 0x0d;
const LF = 0x0a;

export class CsvParser {
  private readonly delimiter: number;
  private row: string[] = [];
  private field = "";
  /** Inside a quoted field. */
  private quoted = false;
  /** Inside a quoted field, the last character was a quote: an escape or the closing one. */
  private quoteAhead = false;
  /** The field being read began with a quote (so an empty line of `""` is a row). */
  private fieldWasQuoted = false;
  /** The previous chunk ended a row with CR: a LF starting this chunk belongs to it. */
  private skipLf = false;
  private started = false;
  /** 1-based line of the input where the current row began (for messages). */
  private line = 1;
  private rowLine = 1;

  constructor(delimiter = ",") {
    if (delimiter.length !== 1 || delimiter === '"' || delimiter === "\r" || delimiter === "\n") {
      throw new CsvError(`the delimiter must be one character other than a quote or a line break, got ${JSON.stringify(delimiter)}`);
    }
    this.delimiter = delimiter.charCodeAt(0);
  }

  /** Parse `text`; complete rows are appended to `out`. */
  push(text: string, out: string[][]): void {
    let i = 0;
    const n = text.length;
    if (!this.started && n > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) i = 1;
    }
    if (this.skipLf && i < n) {
      this.skipLf = false;
      if (text.charCodeAt(i) === LF) i++;
    }
    const d = this.delimiter;
    while (i < n) {
      if (this.quoted) {
        if (this.quoteAhead) {
          this.quoteAhead = false;
          if (text.charCodeAt(i) === QUOTE) {
            this.field += '"';
            i++;
            continue;
          }
          // That quote closed the field; fall through to read what follows it unquoted.
          this.quoted = false;
          continue;
        }
        const q = text.indexOf('"', i);
        if (q === -1) {
          this.countLines(text, i, n);
          this.field += text.slice(i);
          return;
        }
        this.countLines(text, i, q);
        this.field += text.slice(i, q);
        this.quoteAhead = true;
        i = q + 1;
        continue;
      }
      // Unquoted: read up to the next delimiter or line break.
      let j = i;
      let c = 0;
      for (; j < n; j++) {
        c = text.charCodeAt(j);
        if (c === d || c === CR || c === LF) break;
        if (c === QUOTE && j === i && this.field.length === 0 && !this.fieldWasQuoted) break;
      }
      if (j > i) this.field += text.slice(i, j);
      if (j === n) return;
      if (c === QUOTE && j === i && this.field.length === 0 && !this.fieldWasQuoted) {
        this.quoted = true;
        this.fieldWasQuoted = true;
        i = j + 1;
        continue;
      }
      if (c === d) {
        this.endField();
        i = j + 1;
        continue;
      }
      // A line break ends the row.
      this.endRow(out);
      this.line++;
      this.rowLine = this.line;
      i = j + 1;
      if (c === CR) {
        if (i === n) {
          this.skipLf = true;
          return;
        }
        if (text.charCodeAt(i) === LF) i++;
      }
    }
  }

  /** The input is complete: the last row (without a final line break) is appended to `out`. */
  end(out: string[][]): void {
    if (this.quoted && !this.quoteAhead) {
      throw new CsvError(`a quoted field opened on line ${this.rowLine} is not closed by the end of the data`);
    }
    this.quoted = false;
    this.quoteAhead = false;
    this.endRow(out);
  }

  private endField(): void {
    this.row.push(this.field);
    this.field = "";
    this.fieldWasQuoted = false;
  }

  private endRow(out: string[][]): void {
    const blank = this.row.length === 0 && this.field.length === 0 && !this.fieldWasQuoted;
    if (!blank) {
      this.endField();
      out.push(this.row);
    }
    this.row = [];
    this.field = "";
    this.fieldWasQuoted = false;
  }

  private countLines(text: string, from: number, to: number): void {
    for (let k = from; k < to; k++) {
      const c = text.charCodeAt(k);
      if (c === LF || (c === CR && text.charCodeAt(k + 1) !== LF)) this.line++;
    }
  }
}

/** Every row of a complete CSV text. */
export function parseCsv(text: string, delimiter = ","): string[][] {
  const out: string[][] = [];
  const p = new CsvParser(delimiter);
  p.push(text, out);
  p.end(out);
  return out;
}

/**
 * Names for the columns of a header row: as written, with an empty name becoming
 * `column<N>` (1-based) and a repeated name getting `_2`, `_3`, ... so no value is lost.
 */
export function columnNames(header: readonly string[]): string[] {
  const used = new Set<string>();
  return header.map((raw, i) => {
    const base = raw.trim() === "" ? `column${i + 1}` : raw;
    let name = base;
    for (let k = 2; used.has(name); k++) name = `${base}_${k}`;
    used.add(name);
    return name;
  });
}

/**
 * A row as a JSON object text {column: value} in column order. Columns the row lacks are
 * null; fields beyond the named columns go, in order, into an array `_extra` (`__extra` if a
 * column is already called that).
 */
export function rowToJson(columns: readonly string[], row: readonly string[]): string {
  // No prototype: a column named "__proto__" is an ordinary key.
  const obj: Record<string, unknown> = Object.create(null);
  for (let i = 0; i < columns.length; i++) obj[columns[i]!] = i < row.length ? row[i] : null;
  if (row.length > columns.length) {
    let key = "_extra";
    while (key in obj) key = `_${key}`;
    obj[key] = row.slice(columns.length);
  }
  return JSON.stringify(obj);
}
