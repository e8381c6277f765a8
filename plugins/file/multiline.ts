// Joining lines into multiline events (a log line and the stack trace printed after it): a
// line matching the start pattern begins an event, any other line is added to the event
// being built. The event being built is held back until it is known to be complete (the next
// start line, a quiet period, the end of its file), and the file offset where it starts is
// kept, so a checkpoint never covers a held-back event: after a restart it is read again.

export class MultilineJoiner {
  private readonly lines: string[] = [];
  /** File offset of the held-back event's first byte (meaningful while `lines` is not empty). */
  private start = 0;
  /** File bytes the held-back event spans. */
  private bytes = 0;
  /** File offset just after the last line taken. */
  private lastEnd: number;
  /** The held-back event is the continuation of one already cut for size (so it is counted once). */
  private continuing = false;
  /** When the last line was taken (ms since epoch): the quiet period counts from it. */
  lastLineAt = 0;
  /** Events cut because they grew over the size bound. */
  splitEvents = 0;

  /**
   * `maxBytes` bounds an event by the file bytes its lines span; `at` is the file offset the
   * first line taken will start at.
   */
  constructor(private readonly startPattern: RegExp, private readonly maxBytes: number, at: number) {
    this.lastEnd = at;
  }

  /** Whether an event is held back. */
  get holding(): boolean {
    return this.lines.length > 0;
  }

  /** File offset of the held-back event's first byte, or -1 when none is held. */
  get heldFrom(): number {
    return this.lines.length > 0 ? this.start : -1;
  }

  /** Takes lines (with the file offset after each, from LineSplitter); complete events go to `out`. */
  push(lines: string[], ends: number[], out: string[], now: number): void {
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!;
      const end = ends[i]!;
      const size = end - this.lastEnd;
      if (this.lines.length > 0 && !this.startPattern.test(line)) {
        if (this.bytes + size <= this.maxBytes) {
          this.lines.push(line);
          this.bytes += size;
          this.lastEnd = end;
          continue;
        }
        // Too big: what is held goes out, and this line carries the event on.
        if (!this.continuing) this.splitEvents++;
        this.emit(out);
        this.continuing = true;
      } else {
        this.emit(out);
        this.continuing = false;
      }
      this.lines.push(line);
      this.start = this.lastEnd;
      this.bytes = size;
      this.lastEnd = end;
    }
    if (lines.length > 0) this.lastLineAt = now;
  }

  /** Hands out the held-back event (the quiet period passed, or its file ended). */
  flush(out: string[]): void {
    this.emit(out);
    this.continuing = false;
  }

  /** Forgets everything held; the next line taken starts at file offset `at`. */
  reset(at: number): void {
    this.lines.length = 0;
    this.continuing = false;
    this.lastEnd = at;
  }

  private emit(out: string[]): void {
    const n = this.lines.length;
    if (n === 0) return;
    out.push(n === 1 ? this.lines[0]! : this.lines.join("\n"));
    this.lines.length = 0; // reused: most events are one line, an array per event would cost more than the event
  }
}
