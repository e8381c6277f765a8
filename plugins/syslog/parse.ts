// Syslog message parsing: RFC 5424, RFC 3164 and the variants real senders produce (rsyslog's
// ISO timestamps, a missing hostname, Cisco IOS sequence numbers and clock marks). Whatever
// no parser accepts comes back as format "raw" with its whole text, so nothing is dropped.
//
// The input parses the received bytes and writes each event's JSON line directly
// (writeSyslogEvent): at tens of thousands of messages a second, the strings, objects and
// Dates of a parse-then-stringify design were garbage the runtime let pile up by hundreds of
// megabytes. parseSyslog gives the same event as an object, for callers that want one.
import { bomAt, digitsValue, fitsUnits, isDigit, spaceAt, tokenEnd } from "./bytes.ts";
import { JsonLineBuffer, ascii } from "./json-lines.ts";
import { newRfc3164, parse3164, type Rfc3164 } from "./rfc3164.ts";

export { zoneOffset } from "./zone.ts";

export interface SyslogEvent {
  facility: number | null;
  severity: number | null;
  timestamp: string | null;
  hostname: string | null;
  appname: string | null;
  procid: string | null;
  msgid: string | null;
  structured_data: Record<string, Record<string, string>> | null;
  message: string | null;
  format: "rfc5424" | "rfc3164" | "raw";
  source_ip: string | null;
  transport: string;
}

export interface ParseContext {
  sourceIp: string | null;
  transport: string;
  /** Fills in the year of RFC 3164 timestamps. */
  now: Date;
  /** Zone for timestamps sent without one: "UTC", "+02:00" or an IANA name. Default UTC. */
  defaultTz?: string;
}

/** What writeSyslogEvent needs besides the message. */
export interface MessageContext {
  /** The end of the event line, from eventTail(). */
  tail: Uint8Array;
  /** ms since epoch: fills in the year of RFC 3164 timestamps. */
  now: number;
  /** Zone for timestamps sent without one: "UTC", "+02:00" or an IANA name. Default UTC. */
  defaultTz?: string;
}

/** The end of an event line from this source: `,"source_ip":...,"transport":...}`. */
export const eventTail = (sourceIp: string | null, transport: string): Uint8Array =>
  ascii(`,"source_ip":${JSON.stringify(sourceIp)},"transport":${JSON.stringify(transport)}}`);

const SP = 0x20;
const DASH = 0x2d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const EQUALS = 0x3d;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const COMMA = 0x2c;
const COLON = 0x3a;

const K_FACILITY = ascii('{"facility":');
const K_SEVERITY = ascii(',"severity":');
const K_TIMESTAMP = ascii(',"timestamp":');
const K_HOSTNAME = ascii(',"hostname":');
const K_APPNAME = ascii(',"appname":');
const K_PROCID = ascii(',"procid":');
const K_MSGID = ascii(',"msgid":');
const K_STRUCTURED_DATA = ascii(',"structured_data":');
const K_MESSAGE = ascii(',"message":');
const FORMAT_5424 = ascii(',"format":"rfc5424"');
const FORMAT_3164 = ascii(',"format":"rfc3164"');
const FORMAT_RAW = ascii(',"format":"raw"');
const NULL = ascii("null");
const NO_PRI = ascii('{"facility":null,"severity":null');
const NO_HEADER = ascii(',"timestamp":null,"hostname":null,"appname":null,"procid":null,"msgid":null,"structured_data":null');
const NO_MSGID_SD = ascii(',"msgid":null,"structured_data":null');

/** Room for the longest line a message of n bytes can make: every byte escaped, plus the fixed text. */
const lineBound = (n: number, tail: Uint8Array) => 8 * n + 512 + tail.length;

/** Writes the event line of the message buf[start, end) (UTF-8) to out. */
export function writeSyslogEvent(out: JsonLineBuffer, buf: Uint8Array, start: number, end: number, mc: MessageContext): void {
  // Decoding the message as text would have dropped a leading byte order mark.
  start += bomAt(buf, start, end);
  out.reserve(lineBound(end - start, mc.tail));
  const mark = out.length;
  let pri = -1;
  try {
    const after = priEnd(buf, start, end);
    if (after > 0) {
      const value = digitsValue(buf, start + 1, after - 1);
      if (value <= 191) {
        pri = value;
        if (after + 1 < end && buf[after] === 0x31 && buf[after + 1] === SP && write5424(out, buf, after + 2, end, pri, mc)) return;
        if (write3164(out, buf, after, end, pri, mc)) return;
      }
    }
  } catch {
    // A parser bug must never lose the message: fall through to raw.
    out.rollback(mark);
  }
  try {
    if (pri < 0) out.raw(NO_PRI);
    else writePri(out, pri);
    out.raw(NO_HEADER);
    out.raw(K_MESSAGE);
    out.string(buf, start, end);
    out.raw(FORMAT_RAW);
    out.raw(mc.tail);
    out.endLine();
  } catch (err) {
    // Never leave half a line behind for the next event to be written after.
    out.rollback(mark);
    throw err;
  }
}

/** The event of one message as an object (its text taken as UTF-8, as it would arrive). */
export function parseSyslog(msg: string, ctx: ParseContext): SyslogEvent {
  const bytes = new TextEncoder().encode(msg);
  const out = new JsonLineBuffer(256);
  writeSyslogEvent(out, bytes, 0, bytes.length, { tail: eventTail(ctx.sourceIp, ctx.transport), now: ctx.now.getTime(), defaultTz: ctx.defaultTz });
  return JSON.parse(out.take(1)[0]!) as SyslogEvent;
}

/** The position after "<digits>" at start (1-3 digits), or -1. */
function priEnd(buf: Uint8Array, start: number, end: number): number {
  if (start >= end || buf[start] !== 0x3c) return -1;
  let i = start + 1;
  while (i < end && i - start <= 3 && isDigit(buf[i])) i++;
  if (i === start + 1 || i >= end || buf[i] !== 0x3e) return -1;
  return i + 1;
}

function writePri(out: JsonLineBuffer, pri: number): void {
  out.raw(K_FACILITY);
  out.int(pri >> 3);
  out.raw(K_SEVERITY);
  out.int(pri & 7);
}

/** A header field and the space after it at i: its end, or -1 if it is empty, longer than max UTF-16 units, or not followed by one space. */
function headerField(buf: Uint8Array, i: number, end: number, max: number): number {
  const e = tokenEnd(buf, i, end);
  if (e === i || e >= end || buf[e] !== SP || !fitsUnits(buf, i, e, max)) return -1;
  return e;
}

const isNil = (buf: Uint8Array, start: number, end: number) => end - start === 1 && buf[start] === DASH;

function nilOrString(out: JsonLineBuffer, buf: Uint8Array, start: number, end: number): void {
  if (isNil(buf, start, end)) out.raw(NULL);
  else out.string(buf, start, end);
}

/** RFC 5424 after "<PRI>1 ": writes the event and returns true, or writes nothing and returns false. */
function write5424(out: JsonLineBuffer, buf: Uint8Array, s: number, end: number, pri: number, mc: MessageContext): boolean {
  const tsEnd = headerField(buf, s, end, Infinity);
  if (tsEnd < 0) return false;
  const host = tsEnd + 1;
  const hostEnd = headerField(buf, host, end, 255);
  if (hostEnd < 0) return false;
  const app = hostEnd + 1;
  const appEnd = headerField(buf, app, end, 48);
  if (appEnd < 0) return false;
  const proc = appEnd + 1;
  const procEnd = headerField(buf, proc, end, 128);
  if (procEnd < 0) return false;
  const msgid = procEnd + 1;
  const msgidEnd = headerField(buf, msgid, end, 32);
  if (msgidEnd < 0) return false;
  if (!isNil(buf, s, tsEnd) && !isRfc5424Timestamp(buf, s, tsEnd)) return false;
  const sd = msgidEnd + 1;
  let pos: number;
  if (sd >= end) return false;
  if (buf[sd] === DASH) pos = sd + 1;
  else if (buf[sd] === LBRACKET) {
    pos = scanStructuredData(buf, sd, end);
    if (pos < 0) return false;
  } else return false;
  if (pos < end && buf[pos] !== SP) return false;
  let text = pos < end ? pos + 1 : end;
  text += bomAt(buf, text, end);

  const mark = out.length;
  writePri(out, pri);
  out.raw(K_TIMESTAMP);
  nilOrString(out, buf, s, tsEnd);
  out.raw(K_HOSTNAME);
  nilOrString(out, buf, host, hostEnd);
  out.raw(K_APPNAME);
  nilOrString(out, buf, app, appEnd);
  out.raw(K_PROCID);
  nilOrString(out, buf, proc, procEnd);
  out.raw(K_MSGID);
  nilOrString(out, buf, msgid, msgidEnd);
  out.raw(K_STRUCTURED_DATA);
  if (buf[sd] === DASH) out.raw(NULL);
  else if (!writeStructuredData(out, buf, sd, pos)) {
    out.rollback(mark);
    return false;
  }
  out.raw(K_MESSAGE);
  if (text === end) out.raw(NULL);
  else out.string(buf, text, end);
  out.raw(FORMAT_5424);
  out.raw(mc.tail);
  out.endLine();
  return true;
}

/** yyyy-mm-ddThh:mm:ss, an optional fraction of 1-9 digits, then Z or +hh:mm / -hh:mm. */
function isRfc5424Timestamp(buf: Uint8Array, s: number, e: number): boolean {
  if (e - s < 20) return false;
  for (let i = 0; i < 19; i++) {
    const b = buf[s + i]!;
    const want = i === 4 || i === 7 ? DASH : i === 10 ? 0x54 : i === 13 || i === 16 ? COLON : -1;
    if (want < 0 ? !isDigit(b) : b !== want) return false;
  }
  let i = s + 19;
  if (buf[i] === 0x2e) {
    const from = ++i;
    while (i < e && isDigit(buf[i])) i++;
    if (i === from || i - from > 9) return false;
  }
  if (i < e && buf[i] === 0x5a) return i + 1 === e;
  return e - i === 6 && (buf[i] === 0x2b || buf[i] === DASH) && isDigit(buf[i + 1]) && isDigit(buf[i + 2]) && buf[i + 3] === COLON &&
    isDigit(buf[i + 4]) && isDigit(buf[i + 5]);
}

// ---- structured data ------------------------------------------------------------------------

/**
 * Where scanStructuredData found each SD-ELEMENT and parameter, reused from message to message:
 * per element idStart, idEnd, parameter count, then per parameter nameStart, nameEnd,
 * valueStart, valueEnd (the closing quote).
 */
const sdFound: number[] = [];
let sdElements = 0;
/** The parsed elements hold a name that JSON.stringify of an object would treat specially. */
let sdUnusual = false;
/** Beyond this many elements or parameters an element, names are not compared pairwise. */
const SD_COMPARE_MAX = 32;

/** End of a SD-NAME (or SD-ID) at i: the run of characters other than whitespace, =, ] and ". */
function sdNameEnd(buf: Uint8Array, i: number, end: number): number {
  while (i < end) {
    const b = buf[i]!;
    if (b === EQUALS || b === RBRACKET || b === QUOTE || ((b <= 0x20 || b >= 0x80) && spaceAt(buf, i, end) > 0)) break;
    i++;
  }
  return i;
}

/** SD-ELEMENTs from buf[pos] === "[": returns where they end, or -1 if malformed. */
function scanStructuredData(buf: Uint8Array, pos: number, end: number): number {
  sdFound.length = 0;
  sdElements = 0;
  sdUnusual = false;
  while (pos < end && buf[pos] === LBRACKET) {
    const idStart = pos + 1;
    const idEnd = sdNameEnd(buf, idStart, end);
    if (idEnd === idStart || !fitsUnits(buf, idStart, idEnd, 32)) return -1;
    pos = idEnd;
    const at = sdFound.length;
    sdFound.push(idStart, idEnd, 0);
    let params = 0;
    while (pos < end && buf[pos] === SP) {
      const nameStart = pos + 1;
      const nameEnd = sdNameEnd(buf, nameStart, end);
      if (nameEnd === nameStart || nameEnd + 1 >= end || buf[nameEnd] !== EQUALS || buf[nameEnd + 1] !== QUOTE || !fitsUnits(buf, nameStart, nameEnd, 32)) return -1;
      pos = nameEnd + 2;
      const valueStart = pos;
      for (;;) {
        if (pos >= end) return -1;
        const c = buf[pos]!;
        if (c === BACKSLASH && pos + 1 < end && (buf[pos + 1] === QUOTE || buf[pos + 1] === BACKSLASH || buf[pos + 1] === RBRACKET)) pos += 2;
        else if (c === QUOTE) break;
        else pos++;
      }
      sdFound.push(nameStart, nameEnd, valueStart, pos);
      pos++;
      params++;
    }
    if (pos >= end || buf[pos] !== RBRACKET) return -1;
    pos++;
    sdFound[at + 2] = params;
    sdElements++;
  }
  sdUnusual = hasUnusualNames(buf);
  return pos;
}

/**
 * The event's structured_data is an object, so names repeated within the message (merged),
 * array-index names (ordered first) and non-ASCII names (which decode alike when invalid) are
 * left to a real object and JSON.stringify, which settle them as they always did.
 */
function hasUnusualNames(buf: Uint8Array): boolean {
  if (sdElements > SD_COMPARE_MAX) return true;
  let k = 0;
  for (let e = 0; e < sdElements; e++) {
    const idStart = sdFound[k]!;
    const idEnd = sdFound[k + 1]!;
    const params = sdFound[k + 2]!;
    if (params > SD_COMPARE_MAX || unusualName(buf, idStart, idEnd)) return true;
    // Earlier elements with the same SD-ID.
    for (let j = 0, e2 = 0; e2 < e; e2++) {
      if (sameBytes(buf, sdFound[j]!, sdFound[j + 1]!, idStart, idEnd)) return true;
      j += 3 + 4 * sdFound[j + 2]!;
    }
    const first = k + 3;
    for (let p = 0; p < params; p++) {
      const n = first + 4 * p;
      if (unusualName(buf, sdFound[n]!, sdFound[n + 1]!)) return true;
      for (let p2 = 0; p2 < p; p2++) {
        const m = first + 4 * p2;
        if (sameBytes(buf, sdFound[m]!, sdFound[m + 1]!, sdFound[n]!, sdFound[n + 1]!)) return true;
      }
    }
    k = first + 4 * params;
  }
  return false;
}

function unusualName(buf: Uint8Array, start: number, end: number): boolean {
  let digits = true;
  for (let i = start; i < end; i++) {
    const b = buf[i]!;
    if (b >= 0x80) return true;
    if (!isDigit(b)) digits = false;
  }
  return digits;
}

function sameBytes(buf: Uint8Array, a: number, aEnd: number, b: number, bEnd: number): boolean {
  if (aEnd - a !== bEnd - b) return false;
  for (let i = 0; i < aEnd - a; i++) if (buf[a + i] !== buf[b + i]) return false;
  return true;
}

/** The elements scanStructuredData just found in buf[start, end), as a JSON object. */
function writeStructuredData(out: JsonLineBuffer, buf: Uint8Array, start: number, end: number): boolean {
  if (sdUnusual) {
    const parsed = parseStructuredData(new TextDecoder().decode(buf.subarray(start, end)), 0);
    if (!parsed) return false;
    out.text(JSON.stringify(parsed.sd));
    return true;
  }
  out.byte(LBRACE);
  let k = 0;
  for (let e = 0; e < sdElements; e++) {
    if (e > 0) out.byte(COMMA);
    out.string(buf, sdFound[k]!, sdFound[k + 1]!);
    out.byte(COLON);
    out.byte(LBRACE);
    const params = sdFound[k + 2]!;
    k += 3;
    for (let p = 0; p < params; p++, k += 4) {
      if (p > 0) out.byte(COMMA);
      out.string(buf, sdFound[k]!, sdFound[k + 1]!);
      out.byte(COLON);
      writeParamValue(out, buf, sdFound[k + 2]!, sdFound[k + 3]!);
    }
    out.byte(RBRACE);
  }
  out.byte(RBRACE);
  return true;
}

/** A PARAM-VALUE with its \" \\ \] escapes resolved, as a JSON string. */
function writeParamValue(out: JsonLineBuffer, buf: Uint8Array, start: number, end: number): void {
  out.byte(QUOTE);
  for (let i = start; i < end; i++) {
    const c = buf[i]!;
    if (c === BACKSLASH && i + 1 < end) {
      const next = buf[i + 1]!;
      if (next === QUOTE || next === BACKSLASH || next === RBRACKET) {
        out.escaped(next);
        i++;
        continue;
      }
    }
    out.escaped(c);
  }
  out.byte(QUOTE);
}

/** SD-ELEMENTs of the text s from s[pos] === "[" as an object; returns where they end, or null if malformed. */
export function parseStructuredData(s: string, pos: number): { sd: Record<string, Record<string, string>>; end: number } | null {
  // Null-prototype objects: "__proto__" is a name like any other, not a way to reach Object.prototype.
  const sd: Record<string, Record<string, string>> = Object.create(null);
  while (s[pos] === "[") {
    const id = /^[^\s=\]"]{1,32}/.exec(s.slice(pos + 1, pos + 34));
    if (!id) return null;
    pos += 1 + id[0].length;
    const params: Record<string, string> = sd[id[0]] ?? Object.create(null);
    while (s[pos] === " ") {
      const name = /^([^\s=\]"]{1,32})="/.exec(s.slice(pos + 1, pos + 36));
      if (!name) return null;
      pos += 1 + name[0].length;
      let value = "";
      for (;;) {
        if (pos >= s.length) return null;
        const c = s[pos]!;
        if (c === "\\" && (s[pos + 1] === '"' || s[pos + 1] === "\\" || s[pos + 1] === "]")) {
          value += s[pos + 1];
          pos += 2;
        } else if (c === '"') {
          pos++;
          break;
        } else {
          value += c;
          pos++;
        }
      }
      params[name[1]!] = value;
    }
    if (s[pos] !== "]") return null;
    pos++;
    sd[id[0]] = params;
  }
  return { sd, end: pos };
}

// ---- RFC 3164 -------------------------------------------------------------------------------

const found3164: Rfc3164 = newRfc3164();

function optionalString(out: JsonLineBuffer, buf: Uint8Array, start: number, end: number): void {
  if (start < 0) out.raw(NULL);
  else out.string(buf, start, end);
}

function pad2(out: JsonLineBuffer, n: number): void {
  out.byte(0x30 + Math.floor(n / 10));
  out.byte(0x30 + (n % 10));
}

function copy(out: JsonLineBuffer, buf: Uint8Array, start: number, end: number): void {
  for (let i = start; i < end; i++) out.byte(buf[i]!);
}

/** RFC 3164 after "<PRI>": writes the event and returns true, or writes nothing and returns false. */
function write3164(out: JsonLineBuffer, buf: Uint8Array, s: number, end: number, pri: number, mc: MessageContext): boolean {
  const r = found3164;
  if (!parse3164(buf, s, end, mc.defaultTz, mc.now, r)) return false;
  writePri(out, pri);
  out.raw(K_TIMESTAMP);
  out.byte(QUOTE);
  if (r.isoDate >= 0) {
    copy(out, buf, r.isoDate, r.isoDate + 10);
  } else {
    out.int(r.year);
    out.byte(DASH);
    pad2(out, r.month + 1);
    out.byte(DASH);
    pad2(out, r.day);
  }
  out.byte(0x54);
  copy(out, buf, r.time, r.time + 8);
  copy(out, buf, r.fracStart, r.fracEnd);
  if (r.zoneEnd > r.zoneStart) {
    // "+0100" is written "+01:00".
    const z = r.zoneStart;
    if (r.zoneEnd - z === 5) {
      copy(out, buf, z, z + 3);
      out.byte(COLON);
      copy(out, buf, z + 3, z + 5);
    } else copy(out, buf, z, r.zoneEnd);
  } else out.asciiText(r.offset);
  out.byte(QUOTE);
  out.raw(K_HOSTNAME);
  optionalString(out, buf, r.hostStart, r.hostEnd);
  out.raw(K_APPNAME);
  optionalString(out, buf, r.appStart, r.appEnd);
  out.raw(K_PROCID);
  optionalString(out, buf, r.procStart, r.procEnd);
  out.raw(NO_MSGID_SD);
  out.raw(K_MESSAGE);
  if (r.msgStart >= end) out.raw(NULL);
  else out.string(buf, r.msgStart, end);
  out.raw(FORMAT_3164);
  out.raw(mc.tail);
  out.endLine();
  return true;
}
