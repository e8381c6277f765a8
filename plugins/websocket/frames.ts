// Turning websocket text frames into events: one JSON object per frame, or text lines.
import { errorMessage } from "../../agent/errortext.ts";

/**
 * JSON format: a frame holding a JSON object becomes that object as one line of JSON (the
 * frame itself when it is already a single line, so it is not serialised twice); anything
 * else becomes {"message": <frame>, "parse_error": <reason>} so nothing is lost.
 */
export function frameToJsonLine(frame: string): string {
  const body = frame.trim();
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch (err) {
    return JSON.stringify({ message: frame, parse_error: errorMessage(err) });
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    const got = value === null ? "null" : Array.isArray(value) ? "an array" : `a ${typeof value}`;
    return JSON.stringify({ message: frame, parse_error: `expected a JSON object, got ${got}` });
  }
  // A pretty-printed frame spans lines; an event in the spool must be a single line.
  return /[\r\n]/.test(body) ? JSON.stringify(value) : body;
}

/** Text format: each non-empty line of a frame is a text event (\r\n handled). */
export function frameToTextLines(frame: string, out: string[]): void {
  for (const line of frame.split("\n")) {
    const l = line.endsWith("\r") ? line.slice(0, -1) : line;
    if (l.length > 0) out.push(l);
  }
}
