// Realistic OpenSSH auth-log lines (~123 bytes) for log-file benchmarks. Each line carries its
// sequence number as the sshd pid, so a receiver's copy can be checked for loss and duplicates.
import { closeSync, openSync, writeSync } from "node:fs";

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const USERS = ["root", "admin", "oracle", "postgres", "ubuntu", "test", "git", "deploy", "support", "guest", "pi", "ftpuser"];
const NETS = ["203.0.113", "198.51.100", "192.0.2", "185.220.101", "45.155.205"];
const KEY_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const encoder = new TextEncoder();

/** A well-mixed 32-bit hash of n, so fields vary without a random generator's state. */
function mix(n: number): number {
  let h = Math.imul(n ^ 0x9e3779b9, 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

const START_MS = Date.UTC(2026, 10, 27, 6, 25, 0);

/** Line `seq` of the log (without its newline): about 20 lines a second of sshd activity. */
export function sshdLine(seq: number): string {
  const t = new Date(START_MS + seq * 50);
  const day = t.getUTCDate();
  const stamp = `${MONTHS[t.getUTCMonth()]} ${day < 10 ? ` ${day}` : day} ${pad2(t.getUTCHours())}:${pad2(t.getUTCMinutes())}:${pad2(t.getUTCSeconds())}`;
  const h = mix(seq);
  const ip = `${NETS[h % NETS.length]}.${1 + ((h >>> 8) % 254)}`;
  const port = 1024 + ((h >>> 4) % 64000);
  const user = USERS[(h >>> 16) % USERS.length];
  const head = `${stamp} sensor01 sshd[${seq}]: `;
  switch ((h >>> 24) % 4) {
    case 0:
      return `${head}Failed password for invalid user ${user} from ${ip} port ${port} ssh2`;
    case 1: {
      let key = "";
      for (let i = 0, k = h; i < 16; i++, k = mix(k)) key += KEY_CHARS[k % 64];
      return `${head}Accepted publickey for ${user} from ${ip} port ${port} ssh2: ED25519 SHA256:${key}`;
    }
    case 2:
      return `${head}Disconnected from authenticating user ${user} ${ip} port ${port} [preauth]`;
    default:
      return `${head}pam_unix(sshd:auth): authentication failure; tty=ssh ruser= rhost=${ip}  user=${user}`;
  }
}

/** Writes lines 0..count-1, each ending in "\n". Returns the file's size in bytes. */
export function writeSshdLog(path: string, count: number): number {
  const fd = openSync(path, "w");
  let bytes = 0;
  try {
    const chunk = 10_000;
    for (let i = 0; i < count; i += chunk) {
      const lines: string[] = [];
      for (let j = i; j < Math.min(count, i + chunk); j++) lines.push(sshdLine(j));
      const buf = encoder.encode(lines.join("\n") + "\n");
      writeSync(fd, buf);
      bytes += buf.length;
    }
  } finally {
    closeSync(fd);
  }
  return bytes;
}

/** The sequence number of a line made by sshdLine (also inside a JSON event), or -1. */
export function seqOfSshdLine(line: string): number {
  const at = line.indexOf(" sshd[");
  if (at === -1) return -1;
  const end = line.indexOf("]", at + 6);
  const seq = end === -1 ? NaN : Number(line.slice(at + 6, end));
  return Number.isInteger(seq) ? seq : -1;
}
