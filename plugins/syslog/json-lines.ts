// Event lines written as JSON straight from the received bytes into one growing byte buffer, and
// decoded into strings once per batch. A message then costs no intermediate strings, objects or
// Dates, whose churn (not the live data) is what made the input's memory balloon under load.
//
// Escaping works on UTF-8 bytes and matches JSON.stringify of the decoded text: `"`, `\` and
// bytes below 0x20 are escaped; every other byte is copied. Invalid UTF-8 is copied too and
// becomes U+FFFD when the batch is decoded, exactly as decoding the message first would make it,
// because everything written around a field is ASCII.

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const LF = 0x0a;
const HEX = [0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66];
/** The two-character escapes JSON.stringify uses, by byte; 0 means \u00XX. */
const SHORT_ESCAPE = new Uint8Array(0x60);
SHORT_ESCAPE[0x08] = 0x62; // \b
SHORT_ESCAPE[0x09] = 0x74; // \t
SHORT_ESCAPE[0x0a] = 0x6e; // \n
SHORT_ESCAPE[0x0c] = 0x66; // \f
SHORT_ESCAPE[0x0d] = 0x72; // \r
SHORT_ESCAPE[QUOTE] = QUOTE;
SHORT_ESCAPE[BACKSLASH] = BACKSLASH;

const INITIAL_BYTES = 64 * 1024;
/** Above this a drained buffer is given back, so one burst does not pin its peak size. */
const KEEP_BYTES = 4 * 1024 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** ASCII text (JSON syntax) as bytes, for the fixed parts of a line. */
export const ascii = (text: string): Uint8Array => encoder.encode(text);

export class JsonLineBuffer {
  bytes: Uint8Array;
  /** Bytes written, complete lines and the one being written. */
  length = 0;
  /** Complete lines (each ended by "\n"). */
  lines = 0;

  constructor(private readonly initialBytes = INITIAL_BYTES) {
    this.bytes = new Uint8Array(initialBytes);
  }

  /**
   * Makes room for `n` more bytes. The write methods below do not check: a writer reserves
   * the most its line can take first (6 bytes per source byte is the worst escape).
   */
  reserve(n: number): void {
    const need = this.length + n;
    if (need <= this.bytes.length) return;
    let size = this.bytes.length * 2;
    while (size < need) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.bytes.subarray(0, this.length));
    this.bytes = next;
  }

  /** Pre-encoded ASCII (a constant such as `,"hostname":`). */
  raw(text: Uint8Array): void {
    const out = this.bytes;
    let o = this.length;
    for (let i = 0; i < text.length; i++) out[o++] = text[i]!;
    this.length = o;
  }

  byte(b: number): void {
    this.bytes[this.length++] = b;
  }

  /** A JSON string of the UTF-8 bytes src[start, end). */
  string(src: Uint8Array, start: number, end: number): void {
    const out = this.bytes;
    let o = this.length;
    out[o++] = QUOTE;
    for (let i = start; i < end; i++) {
      const c = src[i]!;
      if (c >= 0x20 && c !== QUOTE && c !== BACKSLASH) out[o++] = c;
      else o = escapeAt(out, o, c);
    }
    out[o++] = QUOTE;
    this.length = o;
  }

  /** One byte of a JSON string's content, escaped if it must be. */
  escaped(c: number): void {
    if (c >= 0x20 && c !== QUOTE && c !== BACKSLASH) this.bytes[this.length++] = c;
    else this.length = escapeAt(this.bytes, this.length, c);
  }

  /** ASCII text given as a string (digits, zone offsets): copied as is, nothing to escape. */
  asciiText(text: string): void {
    const out = this.bytes;
    let o = this.length;
    for (let i = 0; i < text.length; i++) out[o++] = text.charCodeAt(i);
    this.length = o;
  }

  /** An integer in decimal. */
  int(n: number): void {
    if (n >= 0 && n < 10) {
      this.bytes[this.length++] = 0x30 + n;
      return;
    }
    this.asciiText(String(n));
  }

  /** Any text, UTF-8 encoded as is (for JSON produced by JSON.stringify). */
  text(text: string): void {
    this.reserve(text.length * 3);
    const { written } = encoder.encodeInto(text, this.bytes.subarray(this.length));
    this.length += written!;
  }

  endLine(): void {
    this.bytes[this.length++] = LF;
    this.lines++;
  }

  /** Drops everything written after `mark` (a previous `length`). */
  rollback(mark: number): void {
    this.length = mark;
  }

  /** The first `max` complete lines as strings, removed from the buffer. */
  take(max: number): string[] {
    const n = Math.min(max, this.lines);
    if (n === 0) return [];
    let end = this.length;
    if (n < this.lines) {
      end = 0;
      for (let k = 0; k < n; k++) end = this.bytes.indexOf(LF, end) + 1;
    }
    // One decode for the batch; each line is then a substring of it (no copy in JSC).
    const text = decoder.decode(this.bytes.subarray(0, end));
    const out: string[] = [];
    let p = 0;
    for (let k = 0; k < n; k++) {
      const q = text.indexOf("\n", p);
      out.push(text.slice(p, q));
      p = q + 1;
    }
    const rest = this.length - end;
    if (rest > 0) this.bytes.copyWithin(0, end, this.length);
    this.length = rest;
    this.lines -= n;
    if (rest === 0 && this.bytes.length > KEEP_BYTES) this.bytes = new Uint8Array(this.initialBytes);
    return out;
  }
}

function escapeAt(out: Uint8Array, o: number, c: number): number {
  out[o++] = BACKSLASH;
  const short = SHORT_ESCAPE[c]!;
  if (short !== 0) {
    out[o++] = short;
    return o;
  }
  out[o++] = 0x75; // u
  out[o++] = 0x30;
  out[o++] = 0x30;
  out[o++] = HEX[c >> 4]!;
  out[o++] = HEX[c & 15]!;
  return o;
}
