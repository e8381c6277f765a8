// What a MISP JSON file holds: the events of a restSearch answer ({"response":[{"Event":..}]}),
// of a single event ({"Event":{..}}) or of a list of them, each with the version (uuid +
// timestamp) that identifies it.
import { errorMessage } from "../../agent/errortext.ts";
import { eventVersion, timestampOf, type EventVersion } from "../common/misp.ts";

export interface FileEvent extends EventVersion {
  /** The event's JSON ({"Event":{...}}) on one line. */
  text: string;
}

/**
 * The events of a whole document, or why it is not a MISP event document. All or nothing: a
 * document with one bad element is refused whole, so a broken file posts nothing.
 */
export function documentEvents(text: string): FileEvent[] | string {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return `not valid JSON (${errorMessage(err)})`;
  }
  let elements: unknown[];
  if (Array.isArray(doc)) elements = doc;
  else if (typeof doc === "object" && doc !== null && Array.isArray((doc as { response?: unknown }).response)) {
    elements = (doc as { response: unknown[] }).response;
  } else if (typeof doc === "object" && doc !== null && "Event" in doc) elements = [doc];
  else return 'not a MISP event document (expected {"response":[{"Event":...}]}, {"Event":{...}} or a list of them)';
  const events: FileEvent[] = [];
  for (let i = 0; i < elements.length; i++) {
    const v = eventVersion(elements[i]);
    if (typeof v === "string") return `element ${i + 1}: ${v}`;
    events.push({ ...v, text: JSON.stringify(elements[i]) });
  }
  return events;
}

/** A feed's manifest.json: event uuid -> the timestamp it lists, or why it cannot be read. */
export function manifestEntries(text: string): Array<[string, number]> | string {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return `not valid JSON (${errorMessage(err)})`;
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) return "not a MISP feed manifest (expected an object of event uuid -> summary)";
  const entries: Array<[string, number]> = [];
  for (const [uuid, summary] of Object.entries(doc)) {
    // The uuid names a file beside the manifest: nothing that could leave the folder.
    if (!/^[0-9A-Za-z-]{1,64}$/.test(uuid)) return `entry "${uuid.slice(0, 80)}" is not an event uuid`;
    const ts = timestampOf((summary as { timestamp?: unknown } | null)?.timestamp);
    if (ts === null) return `entry ${uuid} has no valid "timestamp"`;
    entries.push([uuid, ts]);
  }
  return entries;
}
