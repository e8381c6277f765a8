// Scanning helpers for UTF-8 message bytes. The parsers work on the received bytes so a message
// needs no decoded string; these keep their rules identical to the text rules they replace:
// "whitespace" is what a JavaScript RegExp \s matches, lengths are counted in UTF-16 units.

const decoder = new TextDecoder();

/** Byte length of the whitespace character (RegExp \s) at buf[i], or 0 if there is none. */
export function spaceAt(buf: Uint8Array, i: number, end: number): number {
  if (i >= end) return 0;
  const b = buf[i]!;
  if (b === 0x20 || (b >= 0x09 && b <= 0x0d)) return 1;
  if (b < 0xc2) return 0;
  if (b === 0xc2) return i + 1 < end && buf[i + 1] === 0xa0 ? 2 : 0; // U+00A0
  if (i + 2 >= end) return 0;
  const b1 = buf[i + 1]!;
  const b2 = buf[i + 2]!;
  switch (b) {
    case 0xe1: // U+1680
      return b1 === 0x9a && b2 === 0x80 ? 3 : 0;
    case 0xe2: // U+2000-200A, U+2028, U+2029, U+202F, U+205F
      if (b1 === 0x80) return b2 <= 0x8a && b2 >= 0x80 || b2 === 0xa8 || b2 === 0xa9 || b2 === 0xaf ? 3 : 0;
      return b1 === 0x81 && b2 === 0x9f ? 3 : 0;
    case 0xe3: // U+3000
      return b1 === 0x80 && b2 === 0x80 ? 3 : 0;
    case 0xef: // U+FEFF
      return b1 === 0xbb && b2 === 0xbf ? 3 : 0;
    default:
      return 0;
  }
}

/** The position after the whitespace starting at i (i itself if there is none). */
export function skipSpaces(buf: Uint8Array, i: number, end: number): number {
  while (i < end) {
    const n = spaceAt(buf, i, end);
    if (n === 0) break;
    i += n;
  }
  return i;
}

/** The end of the run of non-whitespace starting at i. */
export function tokenEnd(buf: Uint8Array, i: number, end: number): number {
  while (i < end) {
    const b = buf[i]!;
    // Printable ASCII, the common case, is never whitespace.
    if ((b <= 0x20 || b >= 0x80) && spaceAt(buf, i, end) !== 0) break;
    i++;
  }
  return i;
}

/** Whether buf[start, end) is at most `max` UTF-16 units once decoded. */
export function fitsUnits(buf: Uint8Array, start: number, end: number, max: number): boolean {
  // A UTF-16 unit takes at least one byte: only a long run needs decoding to be sure.
  return end - start <= max || decoder.decode(buf.subarray(start, end)).length <= max;
}

export const isDigit = (b: number | undefined): boolean => b !== undefined && b >= 0x30 && b <= 0x39;

/** The end of the run of ASCII digits starting at i. */
export function digitsEnd(buf: Uint8Array, i: number, end: number): number {
  while (i < end && isDigit(buf[i])) i++;
  return i;
}

/** The decimal value of the digits buf[start, end). */
export function digitsValue(buf: Uint8Array, start: number, end: number): number {
  let n = 0;
  for (let i = start; i < end; i++) n = n * 10 + (buf[i]! - 0x30);
  return n;
}

/** Length of the UTF-8 byte order mark at buf[i], or 0. */
export const bomAt = (buf: Uint8Array, i: number, end: number): number =>
  i + 2 < end && buf[i] === 0xef && buf[i + 1] === 0xbb && buf[i + 2] === 0xbf ? 3 : 0;
