// Splits one TCP connection's byte stream into syslog messages. RFC 6587 allows two framings:
// octet counting ("<len> <msg>") and a trailer (LF, CRLF or NUL). The first byte of the
// connection decides: a digit 1-9 means octet counting. A frame whose length header is not
// valid is taken up to the next trailer instead, so a confused sender loses nothing.

const LF = 0x0a;
const CR = 0x0d;
const NUL = 0x00;
const SP = 0x20;
/** More digits than this cannot be a sane length header. */
const MAX_LENGTH_DIGITS = 10;

type Mode = "unknown" | "octet" | "trailer";

export class SyslogFramer {
  private mode: Mode = "unknown";
  private pending: Uint8Array = new Uint8Array(0);
  /** Bytes of an oversize message still to skip (octet counting) ... */
  private skipCount = 0;
  /** ... or skip up to the next trailer (trailer framing). */
  private skipToTrailer = false;
  /** Messages cut to max_message_bytes. */
  truncated = 0;

  constructor(private readonly maxMessageBytes: number) {}

  get framing(): Mode {
    return this.mode;
  }

  get pendingBytes(): number {
    return this.pending.length;
  }

  /** Appends the complete messages found in `chunk` to `out`. */
  push(chunk: Uint8Array, out: Uint8Array[]): void {
    let buf = chunk;
    if (this.pending.length > 0) {
      buf = new Uint8Array(this.pending.length + chunk.length);
      buf.set(this.pending, 0);
      buf.set(chunk, this.pending.length);
    }
    let pos = 0;
    while (pos < buf.length) {
      if (this.skipCount > 0) {
        const n = Math.min(this.skipCount, buf.length - pos);
        this.skipCount -= n;
        pos += n;
        continue;
      }
      if (this.skipToTrailer) {
        const end = findTrailer(buf, pos);
        if (end < 0) {
          pos = buf.length;
          break;
        }
        this.skipToTrailer = false;
        pos = end + 1;
        continue;
      }
      const b = buf[pos]!;
      if (b === LF || b === CR || b === NUL) {
        pos++;
        continue;
      }
      if (this.mode === "unknown") this.mode = b >= 0x31 && b <= 0x39 ? "octet" : "trailer";
      const next = this.mode === "octet" && b >= 0x31 && b <= 0x39
        ? this.octetFrame(buf, pos, out)
        : this.trailerFrame(buf, pos, out);
      if (next < 0) break;
      pos = next;
    }
    this.pending = pos < buf.length ? buf.slice(pos) : new Uint8Array(0);
  }

  /** At the end of the stream: whatever is left is the last message. */
  flush(out: Uint8Array[]): void {
    if (this.pending.length > 0 && !this.skipToTrailer && this.skipCount === 0) {
      const rest = stripCr(this.pending, 0, this.pending.length);
      if (rest.length > 0) out.push(rest.length > this.maxMessageBytes ? this.cut(rest) : rest);
    }
    this.pending = new Uint8Array(0);
    this.skipCount = 0;
    this.skipToTrailer = false;
  }

  private cut(msg: Uint8Array): Uint8Array {
    this.truncated++;
    return msg.subarray(0, this.maxMessageBytes);
  }

  /** One octet-counted frame at `pos`; returns the position after it, or -1 if more bytes are needed. */
  private octetFrame(buf: Uint8Array, pos: number, out: Uint8Array[]): number {
    let i = pos;
    let len = 0;
    while (i < buf.length && buf[i]! >= 0x30 && buf[i]! <= 0x39 && i - pos < MAX_LENGTH_DIGITS) {
      len = len * 10 + (buf[i]! - 0x30);
      i++;
    }
    if (i === buf.length) return -1;
    if (buf[i] !== SP) return this.trailerFrame(buf, pos, out);
    const start = i + 1;
    if (len > this.maxMessageBytes) {
      // Emit the first max bytes as soon as they are here, then skip the rest without buffering it.
      if (buf.length - start < this.maxMessageBytes) return -1;
      out.push(this.cut(buf.slice(start, start + len)));
      const available = Math.min(len, buf.length - start);
      this.skipCount = len - available;
      return start + available;
    }
    if (buf.length - start < len) return -1;
    out.push(buf.slice(start, start + len));
    return start + len;
  }

  /** One trailer-terminated frame at `pos`; returns the position after it, or -1 if more bytes are needed. */
  private trailerFrame(buf: Uint8Array, pos: number, out: Uint8Array[]): number {
    const end = findTrailer(buf, pos);
    if (end < 0) {
      if (buf.length - pos > this.maxMessageBytes) {
        out.push(this.cut(buf.slice(pos, pos + this.maxMessageBytes)));
        this.skipToTrailer = true;
        return buf.length;
      }
      return -1;
    }
    const msg = stripCr(buf, pos, end);
    if (msg.length > this.maxMessageBytes) out.push(this.cut(msg));
    else if (msg.length > 0) out.push(msg);
    return end + 1;
  }
}

function findTrailer(buf: Uint8Array, from: number): number {
  for (let i = from; i < buf.length; i++) {
    const b = buf[i]!;
    if (b === LF || b === NUL) return i;
  }
  return -1;
}

function stripCr(buf: Uint8Array, start: number, end: number): Uint8Array {
  while (end > start && buf[end - 1] === CR) end--;
  return buf.slice(start, end);
}
