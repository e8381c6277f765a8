// Syslog message parsing: RFC 5424, RFC 3164 and the variants real senders produce (rsyslog's
// ISO timestamps, a missing hostname, Cisco IOS sequence numbers and clock marks). Whatever
// no parser accepts comes back as format "raw" with its whole text, so nothing is dropped.

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

const MONTHS: Record<string, number> = {
  jan: 0, feb: 1, mar: 2, apr: 3, may: 4, jun: 5, jul: 6, aug: 7, sep: 8, oct: 9, nov: 10, dec: 11,
};

const RFC5424_TS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$/;
const ISO_TS = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})?(?=\s|:|$)/;
// Optional Cisco sequence number, optional clock mark (* = not synchronised, . = was synchronised),
// "Mmm dd hh:mm:ss", optional fraction, optional year, optional zone word, optional colon.
const BSD_TS = /^(?:(\d+):\s+)?([*.])?([A-Za-z]{3})\s+(\d{1,2})\s+(?:(\d{4})\s+)?(\d{2}):(\d{2}):(\d{2})(\.\d{1,6})?(?:\s+(\d{4}))?(?:\s+([A-Z]{2,5}))?(:)?(?=\s|$)/;
const TAG = /^([^\s\[\]:]{1,64})(?:\[([^\]\s]{1,32})\])?:(?:\s+|$)/;

function blank(ctx: ParseContext): SyslogEvent {
  return {
    facility: null, severity: null, timestamp: null, hostname: null, appname: null, procid: null,
    msgid: null, structured_data: null, message: null, format: "raw",
    source_ip: ctx.sourceIp, transport: ctx.transport,
  };
}

export function parseSyslog(msg: string, ctx: ParseContext): SyslogEvent {
  const ev = blank(ctx);
  try {
    const pri = /^<(\d{1,3})>/.exec(msg);
    if (pri) {
      const value = Number(pri[1]);
      if (value <= 191) {
        ev.facility = value >> 3;
        ev.severity = value & 7;
        const rest = msg.slice(pri[0].length);
        if (rest.startsWith("1 ") && parse5424(rest.slice(2), ev)) return ev;
        if (parse3164(rest, ev, ctx)) return ev;
      }
    }
  } catch {
    // A parser bug must never lose the message: fall through to raw.
  }
  const raw = blank(ctx);
  raw.facility = ev.facility;
  raw.severity = ev.severity;
  raw.message = msg;
  return raw;
}

const nil = (s: string): string | null => (s === "-" ? null : s);
const stripBom = (s: string): string => (s.charCodeAt(0) === 0xfeff ? s.slice(1) : s);

function parse5424(s: string, ev: SyslogEvent): boolean {
  const head = /^(\S+) (\S{1,255}) (\S{1,48}) (\S{1,128}) (\S{1,32}) /.exec(s + " ");
  if (!head) return false;
  const [, ts, host, app, proc, msgid] = head as unknown as string[];
  if (ts !== "-" && !RFC5424_TS.test(ts!)) return false;
  let pos = head[0].length;
  let sd: Record<string, Record<string, string>> | null = null;
  if (s[pos] === "-") {
    pos++;
  } else if (s[pos] === "[") {
    const parsed = parseStructuredData(s, pos);
    if (!parsed) return false;
    sd = parsed.sd;
    pos = parsed.end;
  } else {
    return false;
  }
  if (pos < s.length && s[pos] !== " ") return false;
  const text = pos < s.length ? stripBom(s.slice(pos + 1)) : "";
  ev.format = "rfc5424";
  ev.timestamp = nil(ts!);
  ev.hostname = nil(host!);
  ev.appname = nil(app!);
  ev.procid = nil(proc!);
  ev.msgid = nil(msgid!);
  ev.structured_data = sd;
  ev.message = text === "" ? null : text;
  return true;
}

/** SD-ELEMENTs from s[pos] === "["; returns where they end, or null if malformed. */
export function parseStructuredData(s: string, pos: number): { sd: Record<string, Record<string, string>>; end: number } | null {
  const sd: Record<string, Record<string, string>> = {};
  while (s[pos] === "[") {
    const id = /^[^\s=\]"]{1,32}/.exec(s.slice(pos + 1, pos + 34));
    if (!id) return null;
    pos += 1 + id[0].length;
    const params: Record<string, string> = sd[id[0]] ?? {};
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

function parse3164(s: string, ev: SyslogEvent, ctx: ParseContext): boolean {
  let rest: string;
  let timestamp: string;
  let cisco = false;
  const iso = ISO_TS.exec(s);
  const bsd = iso ? null : BSD_TS.exec(s);
  if (iso) {
    const [, y, mo, d, h, mi, sec, frac, zone] = iso;
    const offset = zone ? normaliseOffset(zone) : zoneOffset(ctx.defaultTz, Date.UTC(+y!, +mo! - 1, +d!, +h!, +mi!, +sec!));
    timestamp = `${y}-${mo}-${d}T${h}:${mi}:${sec}${frac ?? ""}${offset}`;
    rest = s.slice(iso[0].length);
  } else if (bsd) {
    const [, seq, mark, mon, day, year1, h, mi, sec, frac, year2, zoneWord, colon] = bsd;
    const month = MONTHS[mon!.toLowerCase()];
    if (month === undefined || +day! < 1 || +day! > 31 || +h! > 23 || +mi! > 59 || +sec! > 60) return false;
    cisco = seq !== undefined || mark !== undefined || colon !== undefined;
    const tz = zoneWord === "UTC" || zoneWord === "GMT" ? "UTC" : ctx.defaultTz;
    const explicitYear = year1 ?? year2;
    const year = explicitYear ? +explicitYear : inferYear(month, +day!, ctx.now);
    const wall = Date.UTC(year, month, +day!, +h!, +mi!, +sec!);
    timestamp = `${year}-${pad(month + 1)}-${pad(+day!)}T${h}:${mi}:${sec}${frac ?? ""}${zoneOffset(tz, wall)}`;
    rest = s.slice(bsd[0].length);
  } else {
    return false;
  }
  rest = rest.replace(/^\s+/, "");
  ev.format = "rfc3164";
  ev.timestamp = timestamp;
  if (!cisco) {
    const first = /^(\S+)(?:\s+|$)/.exec(rest);
    if (first && !TAG.test(first[1]! + " ") && !/\[\d*\]$/.test(first[1]!)) {
      ev.hostname = first[1]!;
      rest = rest.slice(first[0].length);
    }
    const tag = TAG.exec(rest);
    if (tag) {
      ev.appname = tag[1]!;
      ev.procid = tag[2] ?? null;
      rest = rest.slice(tag[0].length);
    }
  }
  rest = stripBom(rest);
  ev.message = rest === "" ? null : rest;
  return true;
}

const pad = (n: number) => String(n).padStart(2, "0");

/** A year that puts the timestamp no more than a day after `now`: December logs read in January are last year's. */
function inferYear(month: number, day: number, now: Date): number {
  const year = now.getUTCFullYear();
  return Date.UTC(year, month, day) > now.getTime() + 86_400_000 ? year - 1 : year;
}

function normaliseOffset(zone: string): string {
  if (zone === "Z") return "Z";
  return zone.includes(":") ? zone : `${zone.slice(0, 3)}:${zone.slice(3)}`;
}

const formatOffset = (minutes: number): string => {
  const sign = minutes < 0 ? "-" : "+";
  const a = Math.abs(minutes);
  return `${sign}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
};

/** The offset of `tz` at the wall-clock time `wallMs` (given as if it were UTC), as "+HH:MM". */
export function zoneOffset(tz: string | undefined, wallMs: number): string {
  if (!tz || tz === "UTC" || tz === "Z" || tz === "GMT") return "+00:00";
  if (/^[+-]\d{2}:?\d{2}$/.test(tz)) return normaliseOffset(tz);
  try {
    const fmt = new Intl.DateTimeFormat("en-US", {
      timeZone: tz, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
    const offsetAt = (utc: number) => {
      const p: Record<string, number> = {};
      for (const part of fmt.formatToParts(new Date(utc))) p[part.type] = Number(part.value);
      return (Date.UTC(p.year!, p.month! - 1, p.day!, p.hour!, p.minute!, p.second!) - utc) / 60_000;
    };
    // Two passes settle the offset near a DST change.
    const first = offsetAt(wallMs);
    return formatOffset(Math.round(offsetAt(wallMs - first * 60_000)));
  } catch {
    return "+00:00";
  }
}
