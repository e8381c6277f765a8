// The lines of a downloading body, a batch at a time, so a large feed is never held whole.
// Lines end at "\n" ("\r\n" handled); blank lines are dropped; a last line without a
// newline counts. A line longer than `maxLineChars` is reported by number (text null)
// instead of being buffered without bound.

export interface Line {
  /** 1-based line number in the body. */
  no: number;
  /** The line without its line break and surrounding whitespace; null when it was too long. */
  text: string | null;
}

export async function* lineBatches(
  body: ReadableStream<Uint8Array>,
  batchSize: number,
  maxLineChars: number,
): AsyncGenerator<Line[], void, undefined> {
  const decoder = new TextDecoder();
  const reader = body.getReader();
  let rest = "";
  let overlong = false; // the current line already passed maxLineChars: its text is dropped
  let no = 0;
  let out: Line[] = [];
  let finished = false;
  const take = (raw: string, tooLong: boolean) => {
    no++;
    if (tooLong) {
      out.push({ no, text: null });
      return;
    }
    const text = raw.trim();
    if (text.length > 0) out.push({ no, text });
  };
  try {
    for (;;) {
      const r = await reader.read();
      const chunk = r.done ? decoder.decode() : decoder.decode(r.value, { stream: true });
      let from = 0;
      for (let nl = chunk.indexOf("\n"); nl !== -1; nl = chunk.indexOf("\n", from)) {
        const piece = chunk.slice(from, nl);
        take(overlong ? "" : rest + piece, overlong || rest.length + piece.length > maxLineChars);
        rest = "";
        overlong = false;
        from = nl + 1;
      }
      if (!overlong) {
        rest += chunk.slice(from);
        if (rest.length > maxLineChars) {
          overlong = true;
          rest = "";
        }
      }
      if (r.done) {
        if (overlong || rest.length > 0) take(rest, overlong);
        break;
      }
      while (out.length >= batchSize) {
        const batch = out.length === batchSize ? out : out.slice(0, batchSize);
        out = out.length === batchSize ? [] : out.slice(batchSize);
        yield batch;
      }
    }
    finished = true;
    for (let i = 0; i < out.length; i += batchSize) yield out.slice(i, i + batchSize);
  } finally {
    // A consumer that stops early (or an error) must not leave the download running.
    if (!finished) await reader.cancel().catch(() => {});
    else reader.releaseLock();
  }
}
