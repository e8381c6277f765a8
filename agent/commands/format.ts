// How the CLI shows the daemon's /status: the status table, and the small formatters of counts,
// ages and durations that status and top share.
import type { RunningConfig } from "../runningconfig.ts";
import { formatBytes } from "../units.ts";

/** "1 upload", "2 uploads", "1 retry", "3 retries". */
export function plural(n: number, word: string): string {
  return `${n} ${n === 1 ? word : word.endsWith("y") ? `${word.slice(0, -1)}ies` : `${word}s`}`;
}

/** The /status document, as the CLI reads it. */
export interface StatusJson {
  agent: { version: string; pid: number; uptime_s: number; hostname: string };
  inputs: {
    name: string; type: string; state: string; events: number; bytes: number; errors: number; restarts: number; last_event_at: string | null; last_error: string | null;
    /** Poll inputs (their status detail). */
    last_success?: string | null; next_poll?: string | null;
    /** Why /health counts it as a problem, or null. */
    problem?: string | null;
  }[];
  output: {
    state: string; sent_events: number; sent_uploads: number; retries: number; dead_lettered: number; last_error: string | null;
    /** "cybexp_api" or "nats"; a nats output also names its stream and the server it is connected to. */
    type?: string; stream?: string; server?: string | null;
  };
  spool: {
    events: number; bytes: number; max_bytes: number; oldest_event_age_s: number; dropped: number;
    /** Why the spool takes no more (inputs are paused meanwhile), or null. */
    full?: "min_free" | "max_bytes" | null;
  };
}

/** How long until an ISO time: "in 3s", "now". */
export function until(iso: string | null): string {
  if (!iso) return "-";
  const s = Math.round((Date.parse(iso) - Date.now()) / 1000);
  return s <= 0 ? "now" : `in ${duration(s)}`;
}

/** How long ago an ISO time was: "12s ago". */
export function ago(iso: string | null): string {
  if (!iso) return "-";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}

export function duration(s: number): string {
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
}

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + 2))).join("").trimEnd()).join("\n");
}

export function formatStatus(s: StatusJson, rc: RunningConfig): string {
  const rows = [["INPUT", "TYPE", "STATE", "EVENTS", "BYTES", "ERRORS", "RESTARTS", "LAST EVENT", "LAST ERROR"]];
  for (const i of s.inputs)
    rows.push([i.name, i.type, i.state, String(i.events), formatBytes(i.bytes), String(i.errors), String(i.restarts), ago(i.last_event_at), i.last_error ?? "-"]);
  const o = s.output;
  const sp = s.spool;
  const polls = s.inputs
    .filter((i) => i.next_poll !== undefined && i.state !== "stopped" && i.state !== "disabled")
    .map((i) => `POLL    ${i.name}: last success ${i.last_success ? ago(i.last_success) : "never"}, next poll ${until(i.next_poll ?? null)}`);
  const problems = s.inputs.filter((i) => i.problem).map((i) => `PROBLEM ${i.name}: ${i.problem}`);
  return [
    `cybexp-agent ${s.agent.version}  pid ${s.agent.pid}  up ${duration(s.agent.uptime_s)}  host ${s.agent.hostname}  control ${rc.url}`,
    "",
    s.inputs.length ? table(rows) : "no inputs configured",
    ...(polls.length || problems.length ? ["", ...polls, ...problems] : []),
    "",
    `OUTPUT  ${o.state}${o.type === "nats" ? ` (nats stream ${o.stream}, ${o.server ? `connected to ${o.server}` : "not connected"})` : ""}: ` +
      `${plural(o.sent_events, "event")} in ${plural(o.sent_uploads, o.type === "nats" ? "message" : "upload")}, ${plural(o.retries, "retry")}, ${o.dead_lettered} dead-lettered${o.last_error ? `; last error: ${o.last_error}` : ""}`,
    `SPOOL   ${plural(sp.events, "event")}, ${formatBytes(sp.bytes)} of ${formatBytes(sp.max_bytes)}, oldest ${duration(Math.round(sp.oldest_event_age_s))}, ${sp.dropped} dropped`,
  ].join("\n");
}
