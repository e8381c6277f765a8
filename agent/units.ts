// Durations ("500ms", "30s", "5m", "1h", "7d") and sizes ("512KiB", "1MiB", 1048576) as they
// appear in the config file, with zod schemas that turn them into milliseconds and bytes.
import { z } from "zod";

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const SIZE_UNITS: Record<string, number> = {
  "": 1, b: 1,
  kb: 1000, mb: 1000 ** 2, gb: 1000 ** 3,
  kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3,
  k: 1024, m: 1024 ** 2, g: 1024 ** 3,
};

export function parseDuration(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/.exec(text);
  if (!m) return undefined;
  return Math.round(Number(m[1]) * DURATION_UNITS[m[2]!]!);
}

export function parseSize(value: string | number): number | undefined {
  if (typeof value === "number") return Number.isSafeInteger(value) && value >= 0 ? value : undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(value);
  if (!m) return undefined;
  const unit = SIZE_UNITS[m[2]!.toLowerCase()];
  return unit === undefined ? undefined : Math.round(Number(m[1]) * unit);
}

/** A duration option: a string like "30s", parsed to milliseconds. */
export const duration = () =>
  z.string().transform((s, ctx) => {
    const ms = parseDuration(s);
    if (ms === undefined) {
      ctx.addIssue({ code: "custom", message: `expected a duration like "500ms", "30s", "5m" or "1h", got "${s}"` });
      return z.NEVER;
    }
    return ms;
  });

/** A size option: bytes as an integer or a string like "512KiB", "1MiB", "1GiB". */
export const size = () =>
  z.union([z.number(), z.string()]).transform((v, ctx) => {
    const n = parseSize(v);
    if (n === undefined) {
      ctx.addIssue({ code: "custom", message: `expected a size like "512KiB", "1MiB" or a number of bytes, got ${JSON.stringify(v)}` });
      return z.NEVER;
    }
    return n;
  });

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}
