// Time zone offsets and the RFC 3164 year, computed from numbers: a message costs no Date
// object. IANA zones go through Intl (one formatter per zone, kept), and the last answer per
// zone is kept because a burst of messages shares its timestamp.

const pad = (n: number) => (n < 10 ? `0${n}` : String(n));

const formatOffset = (minutes: number): string => {
  const sign = minutes < 0 ? "-" : "+";
  const a = Math.abs(minutes);
  return `${sign}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
};

/** "+0200" or "+02:00" as "+02:00"; "Z" stays "Z". */
export function normaliseOffset(zone: string): string {
  if (zone === "Z") return "Z";
  return zone.includes(":") ? zone : `${zone.slice(0, 3)}:${zone.slice(3)}`;
}

interface Zone {
  /** The offset of a zone that has one offset. */
  fixed: string | null;
  fmt: Intl.DateTimeFormat | null;
  lastWall: number;
  lastOffset: string;
}

const zones = new Map<string, Zone>();
const MAX_ZONES = 64;

function zoneOf(tz: string): Zone {
  let z = zones.get(tz);
  if (z) return z;
  z = { fixed: null, fmt: null, lastWall: NaN, lastOffset: "" };
  if (tz === "UTC" || tz === "Z" || tz === "GMT") z.fixed = "+00:00";
  else if (/^[+-]\d{2}:?\d{2}$/.test(tz)) z.fixed = normaliseOffset(tz);
  else {
    try {
      z.fmt = new Intl.DateTimeFormat("en-US", {
        timeZone: tz, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit",
      });
    } catch {
      z.fixed = "+00:00";
    }
  }
  if (zones.size >= MAX_ZONES) zones.clear();
  zones.set(tz, z);
  return z;
}

/** The offset of `tz` at the wall-clock time `wallMs` (given as if it were UTC), as "+HH:MM". */
export function zoneOffset(tz: string | undefined, wallMs: number): string {
  if (!tz) return "+00:00";
  const z = zoneOf(tz);
  if (z.fixed !== null) return z.fixed;
  if (wallMs === z.lastWall) return z.lastOffset;
  let offset: string;
  try {
    const fmt = z.fmt!;
    const offsetAt = (utc: number) => {
      const p: Record<string, number> = {};
      for (const part of fmt.formatToParts(new Date(utc))) p[part.type] = Number(part.value);
      return (Date.UTC(p.year!, p.month! - 1, p.day!, p.hour!, p.minute!, p.second!) - utc) / 60_000;
    };
    // Two passes settle the offset near a DST change.
    const first = offsetAt(wallMs);
    offset = formatOffset(Math.round(offsetAt(wallMs - first * 60_000)));
  } catch {
    offset = "+00:00";
  }
  z.lastWall = wallMs;
  z.lastOffset = offset;
  return offset;
}

let yearStart = 0;
let yearEnd = -1;
let yearOfCache = 0;

/** The UTC year of `ms`. */
function utcYear(ms: number): number {
  if (ms >= yearStart && ms < yearEnd) return yearOfCache;
  const year = new Date(ms).getUTCFullYear();
  // Date.UTC reads years 0-99 as 1900-1999: such a clock is not worth a cache.
  if (year < 100) return year;
  yearStart = Date.UTC(year, 0, 1);
  yearEnd = Date.UTC(year + 1, 0, 1);
  yearOfCache = year;
  return year;
}

/** A year that puts the timestamp no more than a day after `nowMs`: December logs read in January are last year's. */
export function inferYear(month: number, day: number, nowMs: number): number {
  const year = utcYear(nowMs);
  return Date.UTC(year, month, day) > nowMs + 86_400_000 ? year - 1 : year;
}
