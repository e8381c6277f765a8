// Byte chunks and lines of bytes: the one home of these rules for the core and every input (a
// plugin may import this module).

/**
 * The parts one after another in one array. A single part is returned as it is, not copied (a
 * caller that keeps the result while the part's buffer is reused must copy it); two or more
 * always give a new array. `total`, the parts' summed byteLength, saves a pass when the caller
 * has counted it already.
 */
export function concat(parts: readonly Uint8Array[], total?: number): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  if (total === undefined) {
    total = 0;
    for (const p of parts) total += p.byteLength;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** `data`, or a copy of it with "\n" after a last line that lacks one (empty data stays empty). */
export function withFinalNewline(data: Uint8Array): Uint8Array {
  if (data.byteLength === 0 || data[data.byteLength - 1] === 0x0a) return data;
  const out = new Uint8Array(data.byteLength + 1);
  out.set(data);
  out[data.byteLength] = 0x0a;
  return out;
}

/** How many "\n" `data` holds: the lines of a body whose every line ends in one. */
export function countNewlines(data: Uint8Array): number {
  let n = 0;
  for (let i = data.indexOf(0x0a); i !== -1; i = data.indexOf(0x0a, i + 1)) n++;
  return n;
}
