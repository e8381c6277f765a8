// Prometheus text exposition (format 0.0.4) of the agent's counters and gauges.
import type { InputStatus } from "./supervisor.ts";

export interface MetricsSnapshot {
  uptimeSeconds: number;
  inputs: InputStatus[];
  output: { state: string; sent_events: number; sent_uploads: number; retries: number; dead_lettered: number; dead_letter_bytes?: number; dead_letter_removed?: number };
  /** Upload bytes, uploads in flight, and what the API accepted per input. */
  delivery: { bytes: number; inflight: number; per_input: Map<string, { events: number; uploads: number; bytes: number }> };
  spool: {
    events: number; bytes: number; max_bytes: number; oldest_event_age_s: number; dropped: number; blocked?: boolean;
    full?: string | null; free_bytes?: number | null; min_free_bytes?: number; skipped_bytes?: number; skipped_events?: number;
  };
}

type Sample = [labels: Record<string, string>, value: number];

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

export function renderMetrics(s: MetricsSnapshot): string {
  const out: string[] = [];
  const metric = (name: string, type: "counter" | "gauge", help: string, samples: Sample[]) => {
    out.push(`# HELP cybexp_agent_${name} ${help}`, `# TYPE cybexp_agent_${name} ${type}`);
    for (const [labels, value] of samples) {
      const l = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",");
      out.push(`cybexp_agent_${name}${l ? `{${l}}` : ""} ${Number.isFinite(value) ? value : 0}`);
    }
  };
  const perInput = (pick: (i: InputStatus) => number): Sample[] =>
    s.inputs.map((i) => [{ input: i.name, type: i.type }, pick(i)]);

  metric("uptime_seconds", "gauge", "Seconds since the agent started.", [[{}, s.uptimeSeconds]]);
  metric("input_events_total", "counter", "Events an input handed to the spool.", perInput((i) => i.events));
  metric("input_bytes_total", "counter", "Bytes of events an input handed to the spool.", perInput((i) => i.bytes));
  metric("input_errors_total", "counter", "Problems an input counted.", perInput((i) => i.errors));
  metric("input_restarts_total", "counter", "Times an input was restarted after failing.", perInput((i) => i.restarts));
  metric("input_up", "gauge", "1 while the input is running.", perInput((i) => (i.state === "running" ? 1 : 0)));
  metric("input_problem", "gauge", "1 while /health counts the input as a problem (failed, failing polls, a listener that cannot bind).", perInput((i) => (i.problem ? 1 : 0)));
  // Losses an input counts in its status detail (syslog, websocket), where it has them.
  const detail = (key: string): Sample[] =>
    s.inputs.filter((i) => typeof i[key] === "number").map((i) => [{ input: i.name, type: i.type }, i[key] as number]);
  metric("input_udp_dropped_total", "counter", "Datagrams dropped: the input's queue was full or the kernel's socket buffer overflowed.", detail("udp_dropped"));
  metric("input_connections_refused_total", "counter", "TCP connections refused over max_connections.", detail("rejected_connections"));
  metric("input_emit_failures_total", "counter", "Hand-overs the spool refused (kept and tried again).", detail("emit_failures"));
  metric("output_events_total", "counter", "Events the API accepted.", [[{}, s.output.sent_events]]);
  metric("output_uploads_total", "counter", "Uploads the API accepted.", [[{}, s.output.sent_uploads]]);
  metric("output_bytes_total", "counter", "Upload bytes the API accepted.", [[{}, s.delivery.bytes]]);
  metric("output_inflight_uploads", "gauge", "Uploads in flight.", [[{}, s.delivery.inflight]]);
  const perInputSent = [...s.delivery.per_input];
  metric("output_input_events_total", "counter", "Events of an input the API accepted.", perInputSent.map(([input, m]) => [{ input }, m.events]));
  metric("output_input_uploads_total", "counter", "Uploads of an input the API accepted.", perInputSent.map(([input, m]) => [{ input }, m.uploads]));
  metric("output_retries_total", "counter", "Uploads retried after a failure.", [[{}, s.output.retries]]);
  metric("output_dead_lettered_total", "counter", "Uploads the API refused for good, kept in dead-letter/.", [[{}, s.output.dead_lettered]]);
  metric("dead_letter_bytes", "gauge", "Bytes in the dead-letter folder (bounded by dead_letter.max_bytes).", [[{}, s.output.dead_letter_bytes ?? 0]]);
  metric("dead_letter_removed_total", "counter", "Dead letters removed, oldest first, to keep the folder within dead_letter.max_bytes.", [[{}, s.output.dead_letter_removed ?? 0]]);
  metric("output_up", "gauge", "1 while the output is ok (not retrying, failing or unauthorized).", [[{}, s.output.state === "ok" ? 1 : 0]]);
  metric("output_state", "gauge", "1 for the output's current state.",
    (["ok", "retrying", "unauthorized", "failing"] as const).map((state) => [{ state }, s.output.state === state ? 1 : 0]));
  metric("spool_events", "gauge", "Events waiting in the spool.", [[{}, s.spool.events]]);
  metric("spool_bytes", "gauge", "Bytes waiting in the spool.", [[{}, s.spool.bytes]]);
  metric("spool_max_bytes", "gauge", "Spool bound.", [[{}, s.spool.max_bytes]]);
  metric("spool_oldest_event_age_seconds", "gauge", "Age of the oldest undelivered event.", [[{}, s.spool.oldest_event_age_s]]);
  metric("spool_dropped_events_total", "counter", "Events discarded because the spool was full (drop_oldest).", [[{}, s.spool.dropped]]);
  metric("spool_full", "gauge", "1 while appends wait for room, by reason (max_bytes reached, or free disk below min_free).",
    (["max_bytes", "min_free"] as const).map((reason) => [{ reason }, s.spool.full === reason ? 1 : 0]));
  if (s.spool.free_bytes !== undefined && s.spool.free_bytes !== null)
    metric("spool_filesystem_free_bytes", "gauge", "Free bytes on the data_dir's filesystem at the spool's last look.", [[{}, s.spool.free_bytes]]);
  metric("spool_min_free_bytes", "gauge", "Free bytes the spool keeps on its filesystem (spool.min_free).", [[{}, s.spool.min_free_bytes ?? 0]]);
  metric("spool_skipped_bytes_total", "counter", "Bytes of torn or corrupt spool records skipped.", [[{}, s.spool.skipped_bytes ?? 0]]);
  metric("spool_skipped_events_total", "counter", "Events in torn or corrupt spool records skipped (where their header was readable).", [[{}, s.spool.skipped_events ?? 0]]);
  return out.join("\n") + "\n";
}
