// Cutting a file's bytes into line events. Chunks are decoded whole and split on "\n" (one
// decode call and one split per chunk, no per-line work beyond the line string itself); only
// the bytes after a chunk's last line break are kept back until their line break arrives.
// Cuts happen at line breaks, which never occur inside a character, so no character is
// split, even one whose bytes straddle two reads.
import { codecFor } from "./encoding.ts";
import type { Codec } from "./encoding.ts";
import { concat } from "../../agent/bytes.ts";
import { errorMessage } from "../../agent/errortext.ts";

const CR = 13;
const BOM = 0xfeff;

/** A line without the "\r" of a "\r\n" and without a byte-order mark at its start (a file's, or a concatenated file's). */
function trimLine(line: string): string {
  if (line.length === 0) return line;
  if (line.charCodeAt(line.length - 1) === CR) line = line.slice(0, -1);
  if (line.charCodeAt(0) === BOM) line = line.slice(1);
  return line;
}

/** Adds `text`'s lines to `out`, trimmed, without empty lines. */
function pushLines(text: string, out: string[]): void {
  const parts = text.split("\n");
  for (let i = 0; i < parts.length; i++) {
    const line = trimLine(parts[i]!);
    if (line.length !== 0) out.push(line);
  }
}

/**
 * One file's line assembly: the unfinished last line between reads, and lines too long to keep whole.
 *
 * When an `ends` array is passed along, every line handed out gets the file offset just after
 * it (its line break included) pushed to `ends`, `at` being the file offset of the chunk's first
 * byte: what the multiline joiner needs to know where a held-back event starts.
 */
export class LineSplitter {
  private pending: Uint8Array | null = null;
  /** The pending bytes continue a line already cut for length (so it is counted once). */
  private continuing = false;
  /** UTF-16: a last odd byte kept back, so every piece looked at is made of whole code units. */
  private carry: Uint8Array | null = null;
  /** Bytes are dropped up to and including the next line break: reading began inside a line. */
  private skipping = false;
  /** Lines longer than the limit, cut into pieces. */
  splitLines = 0;

  constructor(private readonly maxLineBytes: number, private readonly codec: Codec = codecFor("utf-8")) {}

  /** Bytes read but not yet handed out as a line (the unfinished last line). */
  get pendingBytes(): number {
    return (this.pending?.length ?? 0) + (this.carry?.length ?? 0);
  }

  /** The pending bytes continue a line already cut for length: where they start is inside that line. */
  get inCutLine(): boolean {
    return this.continuing;
  }

  /** Reading starts inside a line: what comes before the next line break is a fragment, and is dropped. */
  skipToNextLine(): void {
    this.skipping = true;
  }

  /** Takes the next chunk of the file (it may be reused by the caller afterwards); complete lines go to `out`. */
  push(chunk: Uint8Array, out: string[], ends?: number[], at = 0): void {
    if (this.codec.unitBytes === 2) {
      if (this.carry) {
        chunk = concat([this.carry, chunk]);
        at -= this.carry.length;
        this.carry = null;
      }
      if ((chunk.length & 1) !== 0) {
        this.carry = chunk.slice(chunk.length - 1);
        chunk = chunk.subarray(0, chunk.length - 1);
      }
    }
    const nlBytes = this.codec.nlBytes;
    if (this.skipping) {
      const nl = this.codec.firstNl(chunk, 0);
      if (nl < 0) return;
      this.skipping = false;
      chunk = chunk.subarray(nl + nlBytes);
      at += nl + nlBytes;
      if (chunk.length === 0) return;
    }
    const lastNl = this.codec.lastNl(chunk);
    if (lastNl < 0) {
      this.pending = this.pending ? concat([this.pending, chunk]) : chunk.slice();
      this.cutOverlongPending(out, ends, at + chunk.length);
      return;
    }
    let restStart = 0;
    if (this.pending) {
      // Only the first line of the chunk is joined with what was kept back: no copy of the whole chunk.
      const firstNl = this.codec.firstNl(chunk, 0);
      this.pushRegion(concat([this.pending, chunk.subarray(0, firstNl)]), out, ends, at + firstNl + nlBytes);
      this.pending = null;
      this.continuing = false;
      restStart = firstNl + nlBytes;
    }
    if (restStart < lastNl) this.pushRegion(chunk.subarray(restStart, lastNl), out, ends, at + lastNl + nlBytes);
    if (lastNl + nlBytes < chunk.length) {
      this.pending = chunk.slice(lastNl + nlBytes);
      this.cutOverlongPending(out, ends, at + chunk.length);
    }
  }

  /**
   * Hands out the unfinished last line (the file will not grow any more); it is counted as
   * consumed. `end` is the file offset after the last byte pushed (for `ends`).
   */
  flush(out: string[], ends?: number[], end = 0): void {
    let rest = this.pending;
    if (this.carry) rest = rest ? concat([rest, this.carry]) : this.carry;
    if (rest) this.pushPiece(rest, out, ends, end);
    this.reset();
  }

  /** Forgets the unfinished line. */
  reset(): void {
    this.pending = null;
    this.carry = null;
    this.continuing = false;
    this.skipping = false;
  }

  /** Whole lines separated by line breaks (none at the end); `end` is the offset after the line break that follows it. */
  private pushRegion(region: Uint8Array, out: string[], ends: number[] | undefined, end: number): void {
    if (region.length <= this.maxLineBytes) {
      const text = this.codec.decoder.decode(region);
      if (ends) this.pushLinesWithEnds(region, text, out, ends, end);
      else pushLines(text, out);
      return;
    }
    // Rare: some line may be over the limit, so walk the lines one by one.
    const nlBytes = this.codec.nlBytes;
    const base = end - nlBytes - region.length;
    let start = 0;
    while (start <= region.length) {
      let stop = this.codec.firstNl(region, start);
      if (stop < 0) stop = region.length;
      let line = region.subarray(start, stop);
      let lineAt = base + start;
      if (line.length > this.maxLineBytes) {
        if (!this.continuing) this.splitLines++;
        while (line.length > this.maxLineBytes) {
          const cut = this.codec.cutPoint(line, this.maxLineBytes);
          lineAt += cut;
          this.pushPiece(line.subarray(0, cut), out, ends, lineAt);
          line = line.subarray(cut);
        }
      }
      this.continuing = false;
      if (line.length > 0) this.pushPiece(line, out, ends, base + stop + nlBytes);
      start = stop + nlBytes;
    }
  }

  /** Like pushLines, also noting where each line ends: the text's "\n"s are the region's line breaks, one for one. */
  private pushLinesWithEnds(region: Uint8Array, text: string, out: string[], ends: number[], end: number): void {
    const nlBytes = this.codec.nlBytes;
    const base = end - nlBytes - region.length;
    const parts = text.split("\n");
    let pos = 0;
    for (let i = 0; i < parts.length; i++) {
      const nl = i < parts.length - 1 ? this.codec.firstNl(region, pos) : region.length;
      const line = trimLine(parts[i]!);
      if (line.length !== 0) {
        out.push(line);
        ends.push(base + nl + nlBytes);
      }
      pos = nl + nlBytes;
    }
  }

  /** One line or a piece of one, ending at file offset `end`. */
  private pushPiece(bytes: Uint8Array, out: string[], ends: number[] | undefined, end: number): void {
    const before = out.length;
    pushLines(this.codec.decoder.decode(bytes), out);
    if (ends) for (let i = before; i < out.length; i++) ends.push(end);
  }

  /** `end` is the file offset after the pending bytes. */
  private cutOverlongPending(out: string[], ends: number[] | undefined, end: number): void {
    let p = this.pending!;
    if (p.length <= this.maxLineBytes) return;
    if (!this.continuing) this.splitLines++;
    this.continuing = true;
    let at = end - p.length;
    while (p.length > this.maxLineBytes) {
      const cut = this.codec.cutPoint(p, this.maxLineBytes);
      at += cut;
      this.pushPiece(p.subarray(0, cut), out, ends, at);
      p = p.subarray(cut);
    }
    this.pending = p.slice();
  }
}

/**
 * Turns lines of a JSON-lines file into JSON events in place: a line holding a JSON object
 * stays as it is (already one line of JSON); anything else becomes
 * {"message": line, "parse_error": reason}, so no line is lost.
 *
 * `joined`: the "lines" are multiline events (lines joined with "\n"). A JSON text cannot
 * hold a raw line break inside a string, so in one that parses every "\n" is whitespace
 * between tokens and becomes a space: the event stays the text as written, on one line.
 */
export function toJsonEvents(lines: string[], joined = false): string[] {
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    let reason: string;
    try {
      const value: unknown = JSON.parse(line);
      if (typeof value === "object" && value !== null && !Array.isArray(value)) {
        if (joined && line.includes("\n")) lines[i] = line.replaceAll("\n", " ");
        continue;
      }
      reason = `not a JSON object but ${value === null ? "null" : Array.isArray(value) ? "an array" : `a ${typeof value}`}`;
    } catch (err) {
      reason = errorMessage(err);
    }
    lines[i] = JSON.stringify({ message: line, parse_error: reason });
  }
  return lines;
}

/**
 * Text events of several lines as JSON events {"message": "<the lines, joined by \n>"}, in
 * place. A text upload holds one event per line, so an event with line breaks in it cannot
 * be a text event without being torn apart; JSON keeps it whole.
 */
export function toMessageEvents(events: string[]): string[] {
  for (let i = 0; i < events.length; i++) events[i] = JSON.stringify({ message: events[i] });
  return events;
}
