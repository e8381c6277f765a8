// Joining byte chunks: the one home of this rule for the core and every input (a plugin may
// import this module).

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
