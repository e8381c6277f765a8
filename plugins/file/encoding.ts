// The character encodings a file may be in, as far as cutting it into lines needs to know:
// how a line break looks in bytes, where a line may be cut without splitting a character,
// and how to turn a line's bytes into text (TextDecoder, which replaces what it cannot
// decode with U+FFFD rather than dropping it; a byte-order mark is left to the line splitter,
// which drops it at the start of any line). Offsets are counted in bytes, never in text.
//
// UTF-8 and latin1 are cut at "\n" bytes, which never occur inside a character in either.
// UTF-16LE writes "\n" as the two bytes 0A 00, and 0A can also be half of another
// character, so a break only counts at an even distance from a line's start.

export const ENCODINGS = ["utf-8", "latin1", "utf-16le"] as const;

export type EncodingName = (typeof ENCODINGS)[number];

export interface Codec {
  readonly name: EncodingName;
  /** Bytes per code unit: 2 for UTF-16 (pieces handed to the codec must then have an even length). */
  readonly unitBytes: 1 | 2;
  /** Bytes of the "\n" line break. */
  readonly nlBytes: 1 | 2;
  readonly decoder: TextDecoder;
  /** Index of the first line break at or after `from` (a character boundary), or -1. */
  firstNl(bytes: Uint8Array, from: number): number;
  /** Index of the last line break, or -1; `bytes` starts at a character boundary. */
  lastNl(bytes: Uint8Array): number;
  /** The largest cut ≤ max that does not split a character (but at least one character). */
  cutPoint(bytes: Uint8Array, max: number): number;
}

const NL = 10;

const utf8: Codec = {
  name: "utf-8",
  unitBytes: 1,
  nlBytes: 1,
  decoder: new TextDecoder("utf-8", { ignoreBOM: true }),
  firstNl: (b, from) => b.indexOf(NL, from),
  lastNl: (b) => b.lastIndexOf(NL),
  cutPoint(bytes, max) {
    // Back up over continuation bytes (10xxxxxx) to the start of the character at `max`.
    let i = max;
    while (i > 0 && (bytes[i]! & 0xc0) === 0x80) i--;
    if (i > 0) return i;
    i = 1;
    while (i < bytes.length && (bytes[i]! & 0xc0) === 0x80) i++;
    return i;
  },
};

/**
 * "latin1" as the web platform defines it: windows-1252, which agrees with ISO-8859-1 on every
 * printable character and maps 0x80–0x9F to the characters Windows puts there (€, ‚, …).
 */
const latin1: Codec = {
  name: "latin1",
  unitBytes: 1,
  nlBytes: 1,
  decoder: new TextDecoder("latin1"),
  firstNl: (b, from) => b.indexOf(NL, from),
  lastNl: (b) => b.lastIndexOf(NL),
  cutPoint: (_bytes, max) => Math.max(1, max),
};

const utf16le: Codec = {
  name: "utf-16le",
  unitBytes: 2,
  nlBytes: 2,
  decoder: new TextDecoder("utf-16le", { ignoreBOM: true }),
  firstNl(b, from) {
    for (let i = b.indexOf(NL, from); i >= 0 && i + 1 < b.length; i = b.indexOf(NL, i + 1)) {
      if (((i - from) & 1) === 0 && b[i + 1] === 0) return i;
    }
    return -1;
  },
  lastNl(b) {
    for (let i = b.lastIndexOf(NL); i >= 0; i = i > 0 ? b.lastIndexOf(NL, i - 1) : -1) {
      if ((i & 1) === 0 && i + 1 < b.length && b[i + 1] === 0) return i;
    }
    return -1;
  },
  cutPoint(bytes, max) {
    let i = max & ~1;
    // Do not separate a surrogate pair: the unit before the cut must not be a high surrogate.
    if (i >= 2 && (bytes[i - 1]! & 0xfc) === 0xd8) i -= 2;
    if (i > 0) return i;
    return bytes.length >= 4 && (bytes[1]! & 0xfc) === 0xd8 ? 4 : 2;
  },
};

export function codecFor(name: EncodingName): Codec {
  return name === "latin1" ? latin1 : name === "utf-16le" ? utf16le : utf8;
}
