// Splits one TCP connection's byte stream into syslog messages. RFC 6587 allows two framings:
// octet counting ("<len> <msg>") and a trailer (LF, CRLF or NUL). The first byte of the
// connection decides: a digit 1-9 means octet counting. A frame whose length header is not
// valid is taken up to the next trailer instead, so a confused sender loses nothing.
//
// Messages are handed over as ranges of a buffer, not copies: the receiver reads each one
// before push() returns, so a message costs no allocation of its own.

const LF = 0x0a;
const CR = 0x0d;
const NUL = 0x00;
const SP = 0x20;
/** More digits than this cannot be a sane length header. */
const MAX_LENGTH_DIGITS = 10;

type Mode = "unknown" | "octet" | "trailer";

/** Receives one message: buf[start, end), valid only during the call. */
export type MessageSink = (buf: Uint8Array, start: number, end: number) => void;

const EMPTY = new Uint8Array(0);
/**
 * Where the bytes carried over from the last chunk are joined with the next one. One for all
 * framers: push() runs to completion before another can start.
 */
let joined = EMPTY;
/** A joined buffer grown beyond this by a huge chunk is not kept. */
const JOINED_KEEP_BYTES = 1 << 20;

function join(carry: Uint8Array, chunk: Uint8Array): Uint8Array {
  const n = carry.length + chunk.length;
  if (joined.length < n) {
    let size = Math.max(joined.length, 4096);
    while (size < n) size *= 2;
    joined = new Uint8Array(size);
  }
  joined.set(carry, 0);
  joined.set(chunk, carry.length);
  return joined.subarray(0, n);
}

export class SyslogFramer {
  private mode: Mode = "unknown";
  /** The start of a message whose end has not arrived yet. */
  private pending: Uint8Array = EMPTY;
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

  /** Hands each complete message found in `chunk` to `sink`. */
  push(chunk: Uint8Array, sink: MessageSink): void {
    const buf = this.pending.length > 0 ? join(this.pending, chunk) : chunk;
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
        ? this.octetFrame(buf, pos, sink)
        : this.trailerFrame(buf, pos, sink);
      if (next < 0) break;
      pos = next;
    }
    this.pending = pos < buf.length ? copyOf(buf, pos) : EMPTY;
    if (joined.length > JOINED_KEEP_BYTES) joined = EMPTY;
  }

  /** At the end of the stream: whatever is left is the last message. */
  flush(sink: MessageSink): void {
    const rest = this.pending;
    if (rest.length > 0 && !this.skipToTrailer && this.skipCount === 0) {
      const end = withoutCr(rest, 0, rest.length);
      if (end > 0) sink(rest, 0, end > this.maxMessageBytes ? this.cut() : end);
    }
    this.pending = EMPTY;
    this.skipCount = 0;
    this.skipToTrailer = false;
  }

  /** Counts a message cut to max_message_bytes; returns that length. */
  private cut(): number {
    this.truncated++;
    return this.maxMessageBytes;
  }

  /** One octet-counted frame at `pos`; returns the position after it, or -1 if more bytes are needed. */
  private octetFrame(buf: Uint8Array, pos: number, sink: MessageSink): number {
    let i = pos;
    let len = 0;
    while (i < buf.length && buf[i]! >= 0x30 && buf[i]! <= 0x39 && i - pos < MAX_LENGTH_DIGITS) {
      len = len * 10 + (buf[i]! - 0x30);
      i++;
    }
    if (i === buf.length) return -1;
    if (buf[i] !== SP) return this.trailerFrame(buf, pos, sink);
    const start = i + 1;
    if (len > this.maxMessageBytes) {
      // Emit the first max bytes as soon as they are here, then skip the rest without buffering it.
      if (buf.length - start < this.maxMessageBytes) return -1;
      emitOctetMessage(buf, start, start + this.cut(), sink);
      const available = Math.min(len, buf.length - start);
      this.skipCount = len - available;
      return start + available;
    }
    if (buf.length - start < len) return -1;
    emitOctetMessage(buf, start, start + len, sink);
    return start + len;
  }

  /** One trailer-terminated frame at `pos`; returns the position after it, or -1 if more bytes are needed. */
  private trailerFrame(buf: Uint8Array, pos: number, sink: MessageSink): number {
    const end = findTrailer(buf, pos);
    if (end < 0) {
      if (buf.length - pos > this.maxMessageBytes) {
        sink(buf, pos, pos + this.cut());
        this.skipToTrailer = true;
        return buf.length;
      }
      return -1;
    }
    const msgEnd = withoutCr(buf, pos, end);
    if (msgEnd - pos > this.maxMessageBytes) sink(buf, pos, pos + this.cut());
    else if (msgEnd > pos) sink(buf, pos, msgEnd);
    return end + 1;
  }
}

/**
 * Senders such as syslog-ng's loggen end an octet-counted MSG with a newline; like syslog-ng,
 * trailing LF, CR and NUL are not part of the message. A frame of nothing else is skipped.
 */
function emitOctetMessage(buf: Uint8Array, start: number, end: number, sink: MessageSink): void {
  while (end > start && (buf[end - 1] === LF || buf[end - 1] === CR || buf[end - 1] === NUL)) end--;
  if (end > start) sink(buf, start, end);
}

function findTrailer(buf: Uint8Array, from: number): number {
  for (let i = from; i < buf.length; i++) {
    const b = buf[i]!;
    if (b === LF || b === NUL) return i;
  }
  return -1;
}

/** A copy of buf from `start` (Buffer#slice would be a view, keeping the whole chunk alive). */
function copyOf(buf: Uint8Array, start: number): Uint8Array {
  const copy = new Uint8Array(buf.length - start);
  copy.set(buf.subarray(start));
  return copy;
}

/** `end` moved back over trailing CRs. */
function withoutCr(buf: Uint8Array, start: number, end: number): number {
  while (end > start && buf[end - 1] === CR) end--;
  return end;
}
