// RFC 3164 and its real-world variants, read from the message bytes: a BSD timestamp
// ("Mmm dd hh:mm:ss", with Cisco's sequence number, clock mark, fraction, year and zone word)
// or an ISO timestamp as rsyslog forwards it, then an optional hostname and TAG. The scanning
// reproduces, match for match, the regular expressions these rules were first written as:
//
//   ISO  ^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})?(?=\s|:|$)
//   BSD  ^(?:(\d+):\s+)?([*.])?([A-Za-z]{3})\s+(\d{1,2})\s+(?:(\d{4})\s+)?(\d{2}):(\d{2}):(\d{2})
//        (\.\d{1,6})?(?:\s+(\d{4}))?(?:\s+([A-Z]{2,5}))?(:)?(?=\s|$)
//   TAG  ^([^\s\[\]:]{1,64})(?:\[([^\]\s]{1,32})\])?:(?:\s+|$)
import { bomAt, digitsEnd, digitsValue, fitsUnits, isDigit, skipSpaces, spaceAt, tokenEnd } from "./bytes.ts";
import { inferYear, zoneOffset } from "./zone.ts";

/** What parse3164 found: positions in the message bytes (-1: absent) and the computed parts. */
export interface Rfc3164 {
  /** ISO timestamp: position of its "yyyy-mm-dd"; -1 for a BSD timestamp. */
  isoDate: number;
  /** BSD timestamp: the year (sent or inferred), month 0-11 and day. */
  year: number;
  month: number;
  day: number;
  /** Position of "hh:mm:ss". */
  time: number;
  fracStart: number;
  fracEnd: number;
  /** ISO zone as sent ("Z", "+01:00", "+0100"); zoneStart === zoneEnd when none was. */
  zoneStart: number;
  zoneEnd: number;
  /** The offset to append when no zone was sent. */
  offset: string;
  hostStart: number;
  hostEnd: number;
  appStart: number;
  appEnd: number;
  procStart: number;
  procEnd: number;
  msgStart: number;
  /** Cisco's form (sequence number, clock mark or a colon after the time): no hostname or TAG follows. */
  cisco: boolean;
}

export const newRfc3164 = (): Rfc3164 => ({
  isoDate: -1, year: 0, month: 0, day: 0, time: 0, fracStart: 0, fracEnd: 0, zoneStart: 0, zoneEnd: 0, offset: "",
  hostStart: -1, hostEnd: -1, appStart: -1, appEnd: -1, procStart: -1, procEnd: -1, msgStart: 0, cisco: false,
});

const COLON = 0x3a;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;

/** Month names as numbers of their three lower-case letters, January first. */
const MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
  .map((m) => (m.charCodeAt(0) << 16) | (m.charCodeAt(1) << 8) | m.charCodeAt(2));
/** Offsets of the digits in "yyyy-mm-ddThh:mm:ss". */
const ISO_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];

const isLetter = (b: number) => (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a);
const isUpper = (b: number) => b >= 0x41 && b <= 0x5a;

/** Two ASCII digits at buf[i]. */
const twoDigits = (buf: Uint8Array, i: number, end: number) => i + 1 < end && isDigit(buf[i]) && isDigit(buf[i + 1]);

/** The (?=\s|:|$) after an ISO timestamp. */
const isoBoundary = (buf: Uint8Array, i: number, end: number) => i === end || buf[i] === COLON || spaceAt(buf, i, end) > 0;

/** The (?=\s|$) after a BSD timestamp. */
const bsdBoundary = (buf: Uint8Array, i: number, end: number) => i === end || spaceAt(buf, i, end) > 0;

/** Reads an RFC 3164 message from buf[s, end) (after its PRI) into r; false if it is not one. */
export function parse3164(buf: Uint8Array, s: number, end: number, defaultTz: string | undefined, nowMs: number, r: Rfc3164): boolean {
  r.fracStart = r.fracEnd = r.zoneStart = r.zoneEnd = 0;
  r.hostStart = r.hostEnd = -1;
  r.cisco = false;
  let rest = isoTimestamp(buf, s, end, defaultTz, r);
  if (rest < 0) rest = bsdTimestamp(buf, s, end, defaultTz, nowMs, r);
  if (rest < 0) return false;
  rest = skipSpaces(buf, rest, end);
  if (!r.cisco && rest < end) {
    const first = tokenEnd(buf, rest, end);
    // A first word that is itself a TAG ("sshd[1]:", "app:") means the hostname was left out.
    if (matchTag(buf, rest, first, r) < 0 && !endsWithBracketedDigits(buf, rest, first)) {
      r.hostStart = rest;
      r.hostEnd = first;
      rest = skipSpaces(buf, first, end);
    }
    r.appStart = r.appEnd = r.procStart = r.procEnd = -1;
    const tagEnd = matchTag(buf, rest, end, r);
    if (tagEnd >= 0) rest = tagEnd;
  } else {
    r.appStart = r.appEnd = r.procStart = r.procEnd = -1;
  }
  r.msgStart = rest + bomAt(buf, rest, end);
  return true;
}

/** An ISO timestamp at s: fills r and returns where the match ends, or -1. */
function isoTimestamp(buf: Uint8Array, s: number, end: number, defaultTz: string | undefined, r: Rfc3164): number {
  if (s + 19 > end) return -1;
  for (const i of ISO_DIGITS) if (!isDigit(buf[s + i])) return -1;
  if (buf[s + 4] !== 0x2d || buf[s + 7] !== 0x2d || buf[s + 13] !== COLON || buf[s + 16] !== COLON) return -1;
  if (buf[s + 10] !== 0x54 && buf[s + 10] !== 0x20) return -1;
  let q = s + 19;
  const fracStart = q;
  if (q < end && buf[q] === 0x2e) {
    const digits = digitsEnd(buf, q + 1, end) - (q + 1);
    // No digits, or more than 9: nothing after the seconds can match.
    if (digits < 1 || digits > 9) return -1;
    q += 1 + digits;
  }
  const fracEnd = q;
  let zoneEnd = q;
  const c = q < end ? buf[q] : -1;
  if (c === 0x5a) {
    zoneEnd = q + 1;
  } else if ((c === 0x2b || c === 0x2d) && twoDigits(buf, q + 1, end)) {
    if (buf[q + 3] === COLON && q + 3 < end && twoDigits(buf, q + 4, end) && isoBoundary(buf, q + 6, end)) zoneEnd = q + 6;
    else if (twoDigits(buf, q + 3, end)) zoneEnd = q + 5;
  }
  if (zoneEnd > q && !isoBoundary(buf, zoneEnd, end)) zoneEnd = q;
  if (!isoBoundary(buf, zoneEnd, end)) return -1;
  r.isoDate = s;
  r.time = s + 11;
  r.fracStart = fracStart;
  r.fracEnd = fracEnd;
  if (fracEnd === fracStart) r.fracStart = r.fracEnd = 0;
  r.zoneStart = q;
  r.zoneEnd = zoneEnd;
  if (zoneEnd === q) {
    const wall = Date.UTC(
      digitsValue(buf, s, s + 4), digitsValue(buf, s + 5, s + 7) - 1, digitsValue(buf, s + 8, s + 10),
      digitsValue(buf, s + 11, s + 13), digitsValue(buf, s + 14, s + 16), digitsValue(buf, s + 17, s + 19),
    );
    r.offset = zoneOffset(defaultTz, wall);
    r.zoneStart = r.zoneEnd = 0;
  }
  return zoneEnd;
}

/** A BSD timestamp at s: fills r and returns where the match ends, or -1. */
function bsdTimestamp(buf: Uint8Array, s: number, end: number, defaultTz: string | undefined, nowMs: number, r: Rfc3164): number {
  let i = s;
  let cisco = false;
  if (i < end && isDigit(buf[i])) {
    const j = digitsEnd(buf, i, end);
    if (j >= end || buf[j] !== COLON || spaceAt(buf, j + 1, end) === 0) return -1;
    cisco = true;
    i = skipSpaces(buf, j + 1, end);
  }
  if (i < end && (buf[i] === 0x2a || buf[i] === 0x2e)) {
    cisco = true;
    i++;
  }
  if (i + 3 > end || !isLetter(buf[i]!) || !isLetter(buf[i + 1]!) || !isLetter(buf[i + 2]!)) return -1;
  const month = MONTHS.indexOf(((buf[i]! | 0x20) << 16) | ((buf[i + 1]! | 0x20) << 8) | (buf[i + 2]! | 0x20));
  i += 3;
  let k = skipSpaces(buf, i, end);
  if (k === i) return -1;
  i = k;
  k = digitsEnd(buf, i, end);
  if (k - i < 1 || k - i > 2 || spaceAt(buf, k, end) === 0) return -1;
  const day = digitsValue(buf, i, k);
  i = skipSpaces(buf, k, end);
  let year = -1;
  if (i + 4 <= end && isDigit(buf[i]) && isDigit(buf[i + 1]) && isDigit(buf[i + 2]) && isDigit(buf[i + 3]) && spaceAt(buf, i + 4, end) > 0) {
    year = digitsValue(buf, i, i + 4);
    i = skipSpaces(buf, i + 4, end);
  }
  if (!twoDigits(buf, i, end) || buf[i + 2] !== COLON || !twoDigits(buf, i + 3, end) || buf[i + 5] !== COLON || !twoDigits(buf, i + 6, end)) return -1;
  const time = i;
  let q = i + 8;
  const fracStart = q;
  if (q < end && buf[q] === 0x2e) {
    const digits = digitsEnd(buf, q + 1, end) - (q + 1);
    if (digits < 1 || digits > 6) return -1;
    q += 1 + digits;
  }
  const fracEnd = q;
  const tail = bsdTail(buf, q, end);
  if (tail === null) return -1;
  const h = digitsValue(buf, time, time + 2);
  const mi = digitsValue(buf, time + 3, time + 5);
  const sec = digitsValue(buf, time + 6, time + 8);
  if (month < 0 || day < 1 || day > 31 || h > 23 || mi > 59 || sec > 60) return -1;
  if (tail.colon) cisco = true;
  if (year < 0 && tail.year >= 0) year = tail.year;
  if (year < 0) year = inferYear(month, day, nowMs);
  const zs = tail.zoneStart;
  const tz = tail.zoneEnd - zs === 3 && ((buf[zs] === 0x55 && buf[zs + 1] === 0x54 && buf[zs + 2] === 0x43) || (buf[zs] === 0x47 && buf[zs + 1] === 0x4d && buf[zs + 2] === 0x54))
    ? "UTC"
    : defaultTz;
  r.isoDate = -1;
  r.year = year;
  r.month = month;
  r.day = day;
  r.time = time;
  r.fracStart = fracEnd > fracStart ? fracStart : 0;
  r.fracEnd = fracEnd > fracStart ? fracEnd : 0;
  r.offset = zoneOffset(tz, Date.UTC(year, month, day, h, mi, sec));
  r.cisco = cisco;
  return tail.end;
}

interface BsdTail {
  /** Year after the time, or -1. */
  year: number;
  zoneStart: number;
  zoneEnd: number;
  colon: boolean;
  end: number;
}

const tailResult: BsdTail = { year: -1, zoneStart: 0, zoneEnd: 0, colon: false, end: 0 };

/**
 * What follows the time: (?:\s+(\d{4}))?(?:\s+([A-Z]{2,5}))?(:)?(?=\s|$), trying the
 * alternatives in the order a backtracking RegExp does, so the first that fits wins.
 */
function bsdTail(buf: Uint8Array, q: number, end: number): BsdTail | null {
  for (let withYear = 1; withYear >= 0; withYear--) {
    let p = q;
    let year = -1;
    if (withYear) {
      const k = skipSpaces(buf, p, end);
      if (k === p || k + 4 > end || !isDigit(buf[k]) || !isDigit(buf[k + 1]) || !isDigit(buf[k + 2]) || !isDigit(buf[k + 3])) continue;
      year = digitsValue(buf, k, k + 4);
      p = k + 4;
    }
    const z = skipSpaces(buf, p, end);
    let letters = 0;
    if (z > p) while (letters < 5 && z + letters < end && isUpper(buf[z + letters]!)) letters++;
    // Zone words of 5 letters down to 2, then none (length 0).
    for (let len = letters; len >= 0; len--) {
      if (len === 1) continue;
      const zoneEnd = len > 0 ? z + len : p;
      for (let colon = 1; colon >= 0; colon--) {
        let e = zoneEnd;
        if (colon) {
          if (e >= end || buf[e] !== COLON) continue;
          e++;
        }
        if (!bsdBoundary(buf, e, end)) continue;
        tailResult.year = year;
        tailResult.zoneStart = len > 0 ? z : 0;
        tailResult.zoneEnd = len > 0 ? zoneEnd : 0;
        tailResult.colon = colon === 1;
        tailResult.end = e;
        return tailResult;
      }
    }
  }
  return null;
}

/**
 * TAG at buf[i, end) ("app:", "app[123]:" then whitespace or the end): fills the app and procid
 * ranges of r and returns where the match ends (after the whitespace), or -1.
 */
function matchTag(buf: Uint8Array, i: number, end: number, r: Rfc3164): number {
  let j = i;
  while (j < end) {
    const b = buf[j]!;
    if (b === LBRACKET || b === RBRACKET || b === COLON || ((b <= 0x20 || b >= 0x80) && spaceAt(buf, j, end) > 0)) break;
    j++;
  }
  if (j === i || !fitsUnits(buf, i, j, 64)) return -1;
  const nameEnd = j;
  let procStart = -1;
  let procEnd = -1;
  if (j < end && buf[j] === LBRACKET) {
    let k = j + 1;
    while (k < end && buf[k] !== RBRACKET && !((buf[k]! <= 0x20 || buf[k]! >= 0x80) && spaceAt(buf, k, end) > 0)) k++;
    if (k === j + 1 || k >= end || buf[k] !== RBRACKET || !fitsUnits(buf, j + 1, k, 32)) return -1;
    procStart = j + 1;
    procEnd = k;
    j = k + 1;
  }
  if (j >= end || buf[j] !== COLON) return -1;
  j++;
  if (j < end) {
    if (spaceAt(buf, j, end) === 0) return -1;
    j = skipSpaces(buf, j, end);
  }
  r.appStart = i;
  r.appEnd = nameEnd;
  r.procStart = procStart;
  r.procEnd = procEnd;
  return j;
}

/** The token buf[start, end) ends with "[digits]" (like "sshd[123]"): a tag without its colon, not a hostname. */
function endsWithBracketedDigits(buf: Uint8Array, start: number, end: number): boolean {
  if (end - start < 2 || buf[end - 1] !== RBRACKET) return false;
  let i = end - 2;
  while (i >= start && isDigit(buf[i])) i--;
  return i >= start && buf[i] === LBRACKET;
}
