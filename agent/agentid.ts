// The agent's id: made once per data_dir and kept in <data_dir>/agent_id, so that it stays the
// same across restarts and crashes. The nats output names each message with it (with the
// record's spool position and append time), which is what lets JetStream drop a resend.
import { randomBytes } from "node:crypto";
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const FILE = "agent_id";

export function agentId(dataDir: string, hostname: string): string {
  const path = join(dataDir, FILE);
  try {
    const id = readFileSync(path, "utf8").trim();
    if (/^[\w.-]{8,128}$/.test(id)) return id;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  // The host's name makes ids readable in the stream; the random part keeps copies of one
  // host (a cloned VM) apart once each has made its own data_dir.
  const id = `${hostname.replace(/[^\w.-]+/g, "_").slice(0, 48) || "agent"}-${randomBytes(8).toString("hex")}`;
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, id + "\n", { mode: 0o644 });
  renameSync(tmp, path);
  return id;
}
