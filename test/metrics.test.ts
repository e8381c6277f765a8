// The Prometheus text shows what operators watch for: a full spool and why, the disk's free
// space, skipped spool damage, dead letters, and the losses inputs count.
import { test } from "node:test";
import assert from "node:assert/strict";
import { renderMetrics } from "../agent/metrics.ts";

test("metrics show the spool's full reason, free space, skipped damage, dead letters and input losses", () => {
  const text = renderMetrics({
    uptimeSeconds: 5,
    inputs: [
      { name: "sys", type: "syslog", state: "running", events: 10, bytes: 100, errors: 0, last_error: null, last_event_at: null, restarts: 0, udp_dropped: 7, rejected_connections: 2, emit_failures: 1 },
      { name: "hand", type: "manual", state: "running", events: 1, bytes: 10, errors: 0, last_error: null, last_event_at: null, restarts: 0 },
    ],
    output: { state: "failing", sent_events: 0, sent_uploads: 0, retries: 0, dead_lettered: 3, dead_letter_bytes: 4096, dead_letter_removed: 1 },
    delivery: { bytes: 0, inflight: 0, per_input: new Map() },
    spool: { events: 0, bytes: 0, max_bytes: 100, oldest_event_age_s: 0, dropped: 0, blocked: true, full: "min_free", free_bytes: 1234, min_free_bytes: 2048, skipped_bytes: 300, skipped_events: 4 },
  });
  const has = (line: string) => assert.ok(text.split("\n").includes(line), `${line} in\n${text}`);
  has('cybexp_agent_spool_full{reason="min_free"} 1');
  has('cybexp_agent_spool_full{reason="max_bytes"} 0');
  has("cybexp_agent_spool_filesystem_free_bytes 1234");
  has("cybexp_agent_spool_min_free_bytes 2048");
  has("cybexp_agent_spool_skipped_bytes_total 300");
  has("cybexp_agent_spool_skipped_events_total 4");
  has("cybexp_agent_dead_letter_bytes 4096");
  has("cybexp_agent_dead_letter_removed_total 1");
  has('cybexp_agent_output_state{state="failing"} 1');
  has('cybexp_agent_input_udp_dropped_total{input="sys",type="syslog"} 7');
  has('cybexp_agent_input_connections_refused_total{input="sys",type="syslog"} 2');
  has('cybexp_agent_input_emit_failures_total{input="sys",type="syslog"} 1');
  assert.ok(!/input_udp_dropped_total\{input="hand"/.test(text), "only inputs that count drops");
});
