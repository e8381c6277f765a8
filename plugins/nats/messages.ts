// Reading one message of the edge format (agent/nats.ts): the upload's parts from the
// Cybexp-* headers, the events from the body. A message that does not follow the format is
// refused with a one-line reason, so the relay can terminate it instead of retrying it for ever.
import { Match, type MsgHdrs } from "@nats-io/nats-core";
import { countNewlines, withFinalNewline } from "../../agent/bytes.ts";
import { NATS_HEADERS } from "../../agent/nats.ts";
import type { EventKind, UploadRoute } from "../../agent/plugin.ts";

/** Timezone for a message whose Cybexp-Timezone is missing or empty, when the input has none of its own (the [api] timezone's default). */
export const FALLBACK_TIMEZONE = "UTC";

/** This input's own orgid and timezone, for messages that carry none (when the core tells the input). */
export interface OwnParts {
  orgid?: string;
  timezone?: string;
}

export interface RelayBatch {
  kind: EventKind;
  route: UploadRoute;
  /**
   * The events as the spool takes them (ctx.emitFramed): the body, every event a line ending
   * in "\n" (one is added to a last line without it). Text bodies are not decoded at all.
   */
  body: Uint8Array;
  /** Events in body. */
  count: number;
}

export type Parsed = { ok: true; batch: RelayBatch } | { ok: false; reason: string };

const decoder = new TextDecoder();

/** The events of a body: "\n"-ended lines; a last piece without "\n" is an event too. */
export function splitBody(body: string): string[] {
  if (body === "") return [];
  const lines = body.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  return lines;
}

function header(h: MsgHdrs, name: string): string | undefined {
  if (!h.has(name, Match.IgnoreCase)) return undefined;
  return h.get(name, Match.IgnoreCase).trim();
}

/** Why `line` is not a single JSON object, or null if it is one. */
function notAnObject(line: string): string | null {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (err) {
    return `not JSON (${(err instanceof Error ? err.message : String(err)).slice(0, 100)})`;
  }
  if (v === null || typeof v !== "object") return `a JSON ${v === null ? "null" : typeof v}, not an object`;
  if (Array.isArray(v)) return "a JSON array, not an object";
  return null;
}

/** The batch a message carries, or why it cannot be relayed. */
export function parseMessage(headers: MsgHdrs | undefined, data: Uint8Array, own: OwnParts = {}): Parsed {
  if (!headers) return { ok: false, reason: "no headers (not a message of the cybexp nats output)" };
  const kind = header(headers, NATS_HEADERS.kind);
  if (kind === undefined) return { ok: false, reason: `no ${NATS_HEADERS.kind} header` };
  if (kind !== "json" && kind !== "text") return { ok: false, reason: `unknown ${NATS_HEADERS.kind} ${JSON.stringify(kind.slice(0, 40))} (expected "json" or "text")` };
  const name = header(headers, NATS_HEADERS.name);
  if (!name) return { ok: false, reason: `no ${NATS_HEADERS.name} header` };
  const typetag = header(headers, NATS_HEADERS.typetag);
  if (!typetag) return { ok: false, reason: `no ${NATS_HEADERS.typetag} header` };
  // An edge without an orgid of its own leaves it to the relay's; without one either, it is refused.
  const orgid = header(headers, NATS_HEADERS.orgid) || own.orgid;
  if (!orgid) return { ok: false, reason: `no ${NATS_HEADERS.orgid} header` };
  const timezone = header(headers, NATS_HEADERS.timezone) || own.timezone || FALLBACK_TIMEZONE;

  if (data.byteLength === 0) return { ok: false, reason: "an empty body (no events)" };
  if (kind === "json") {
    // JSON is checked line by line: the API would refuse the whole upload for one bad line.
    const lines = splitBody(decoder.decode(data));
    for (let i = 0; i < lines.length; i++) {
      const why = notAnObject(lines[i]!);
      if (why !== null) return { ok: false, reason: `line ${i + 1} of ${lines.length} is ${why}` };
    }
  }
  const body = withFinalNewline(data);
  return { ok: true, batch: { kind, route: { name, orgid, typetag, timezone }, body, count: countNewlines(body) } };
}
