// MISP events as every MISP input reads them: {"Event":{...}} identified by its uuid, one
// version of it by its `timestamp` (the last change, unix seconds). An input posts an event
// when its version is newer than the one it posted before.

/** One version of one MISP event: its uuid and its `timestamp` (unix seconds, last change). */
export interface EventVersion {
  uuid: string;
  timestamp: number;
}

/** The event's version, or why the value is not a MISP event. */
export function eventVersion(value: unknown): EventVersion | string {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "not a JSON object";
  const event = (value as { Event?: unknown }).Event;
  if (typeof event !== "object" || event === null || Array.isArray(event)) return 'no "Event" object';
  const { uuid, timestamp } = event as { uuid?: unknown; timestamp?: unknown };
  if (typeof uuid !== "string" || uuid.length === 0) return 'the Event has no "uuid"';
  const ts = timestampOf(timestamp);
  if (ts === null) return `the Event ${uuid} has no valid "timestamp"`;
  return { uuid, timestamp: ts };
}

/** A MISP timestamp (unix seconds as a number or a string of digits), or null. */
export function timestampOf(value: unknown): number | null {
  const ts = typeof value === "number" ? value : typeof value === "string" && /^\d+$/.test(value) ? Number(value) : NaN;
  return Number.isSafeInteger(ts) && ts >= 0 ? ts : null;
}
