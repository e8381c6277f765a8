// Cutting a file's bytes into line events. Chunks are decoded whole and split on "\n" (one
// decode call and one split per chunk, no per-line work beyond the line string itself); only
// the bytes after a chunk's last newline are kept back until their newline arrives. Cuts
// happen at "\n" bytes, which never occur inside a UTF-8 sequence, so no character is split.

const NL = 10;
const CR = 13;
const decoder = new TextDecoder("utf-8");

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** The largest cut ≤ max that does not split a UTF-8 character (at least one character). */
function cutPoint(bytes: Uint8Array, max: number): number {
  let i = max;
  while (i > 0 && (bytes[i]! & 0xc0) === 0x80) i--;
  if (i > 0) return i;
  i = 1;
  while (i < bytes.length && (bytes[i]! & 0xc0) === 0x80) i++;
  return i;
}

/** Adds `text`'s lines to `out`, without a trailing "\r" and without empty lines. */
function pushLines(text: string, out: string[]): void {
  const parts = text.split("\n");
  for (let i = 0; i < parts.length; i++) {
    let line = parts[i]!;
    if (line.length !== 0 && line.charCodeAt(line.length - 1) === CR) line = line.slice(0, -1);
    if (line.length !== 0) out.push(line);
  }
}

/** One file's line assembly: the unfinished last line between reads, and lines too long to keep whole. */
export class LineSplitter {
  private pending: Uint8Array | null = null;
  /** The pending bytes continue a line already cut for length (so it is counted once). */
  private continuing = false;
  /** Lines longer than the limit, cut into pieces. */
  splitLines = 0;

  constructor(private readonly maxLineBytes: number) {}

  /** Bytes read but not yet handed out as a line (the unfinished last line). */
  get pendingBytes(): number {
    return this.pending?.length ?? 0;
  }

  /** Takes the next chunk of the file (it may be reused by the caller afterwards); complete lines go to `out`. */
  push(chunk: Uint8Array, out: string[]): void {
    const lastNl = chunk.lastIndexOf(NL);
    if (lastNl < 0) {
      this.pending = this.pending ? concat(this.pending, chunk) : chunk.slice();
      this.cutOverlongPending(out);
      return;
    }
    let restStart = 0;
    if (this.pending) {
      // Only the first line of the chunk is joined with what was kept back: no copy of the whole chunk.
      const firstNl = chunk.indexOf(NL);
      this.pushRegion(concat(this.pending, chunk.subarray(0, firstNl)), out);
      this.pending = null;
      this.continuing = false;
      restStart = firstNl + 1;
    }
    if (restStart < lastNl) this.pushRegion(chunk.subarray(restStart, lastNl), out);
    if (lastNl + 1 < chunk.length) {
      this.pending = chunk.slice(lastNl + 1);
      this.cutOverlongPending(out);
    }
  }

  /** Hands out the unfinished last line (the file will not grow any more); it is counted as consumed. */
  flush(out: string[]): void {
    if (this.pending) this.pushRegion(this.pending, out);
    this.reset();
  }

  /** Forgets the unfinished line (the file is read again from the last emitted line's end). */
  reset(): void {
    this.pending = null;
    this.continuing = false;
  }

  /** Whole lines separated by "\n" (none at the end). */
  private pushRegion(region: Uint8Array, out: string[]): void {
    if (region.length <= this.maxLineBytes) {
      pushLines(decoder.decode(region), out);
      return;
    }
    // Rare: some line may be over the limit, so walk the lines one by one.
    let start = 0;
    while (start <= region.length) {
      let end = region.indexOf(NL, start);
      if (end < 0) end = region.length;
      let line = region.subarray(start, end);
      if (line.length > this.maxLineBytes) {
        if (!this.continuing) this.splitLines++;
        while (line.length > this.maxLineBytes) {
          const cut = cutPoint(line, this.maxLineBytes);
          pushLines(decoder.decode(line.subarray(0, cut)), out);
          line = line.subarray(cut);
        }
      }
      this.continuing = false;
      if (line.length > 0) pushLines(decoder.decode(line), out);
      start = end + 1;
    }
  }

  private cutOverlongPending(out: string[]): void {
    let p = this.pending!;
    if (p.length <= this.maxLineBytes) return;
    if (!this.continuing) this.splitLines++;
    this.continuing = true;
    while (p.length > this.maxLineBytes) {
      const cut = cutPoint(p, this.maxLineBytes);
      pushLines(decoder.decode(p.subarray(0, cut)), out);
      p = p.subarray(cut);
    }
    this.pending = p.slice();
  }
}

/**
 * Turns lines of a JSON-lines file into JSON events in place: a line holding a JSON object
 * stays as it is (already one line of JSON); anything else becomes
 * {"message": line, "parse_error": reason}, so no line is lost.
 */
export function toJsonEvents(lines: string[]): string[] {
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    let reason: string;
    try {
      const value: unknown = JSON.parse(line);
      if (typeof value === "object" && value !== null && !Array.isArray(value)) continue;
      reason = `not a JSON object but ${value === null ? "null" : Array.isArray(value) ? "an array" : `a ${typeof value}`}`;
    } catch (err) {
      reason = err instanceof Error ? err.message : String(err);
    }
    lines[i] = JSON.stringify({ message: line, parse_error: reason });
  }
  return lines;
}
