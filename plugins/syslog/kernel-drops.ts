// Datagrams the kernel dropped before the input could read them (its receive buffer was full
// while the event loop was busy): Linux counts them per socket, in the last column ("drops") of
// /proc/net/udp and /proc/net/udp6. The input's own sockets are found by their bound port and
// confirmed by inode against this process's descriptors (/proc/self/fd links "socket:[inode]"),
// so another process's socket on the same port is never counted. Without /proc (not Linux)
// there is nothing to read and nothing is counted.
import { readdir, readFile, readlink } from "node:fs/promises";

const TABLES = ["/proc/net/udp", "/proc/net/udp6"];

export interface UdpSocketRow {
  port: number;
  inode: string;
  drops: number;
}

/** The rows of a /proc/net/udp or /proc/net/udp6 table. */
export function parseUdpTable(text: string): UdpSocketRow[] {
  const rows: UdpSocketRow[] = [];
  for (const line of text.split("\n").slice(1)) {
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
    const f = line.trim().split(/\s+/);
    if (f.length < 13) continue;
    const colon = f[1]!.lastIndexOf(":");
    const port = parseInt(f[1]!.slice(colon + 1), 16);
    const drops = Number(f[f.length - 1]);
    if (colon < 0 || !Number.isFinite(port) || !Number.isFinite(drops)) continue;
    rows.push({ port, inode: f[9]!, drops });
  }
  return rows;
}

export class KernelUdpDrops {
  /** Inodes known to be (true) or not to be (false) sockets of this process. */
  private readonly owned = new Map<string, boolean>();
  private unavailable = false;

  constructor(private readonly ports: () => number[]) {}

  /** Drops counted by the kernel on this process's sockets bound to the ports; null without /proc. */
  async read(): Promise<number | null> {
    if (this.unavailable) return null;
    const ports = new Set(this.ports());
    if (ports.size === 0) return 0;
    const rows: UdpSocketRow[] = [];
    let tables = 0;
    for (const table of TABLES) {
      try {
        rows.push(...parseUdpTable(await readFile(table, "utf8")).filter((r) => ports.has(r.port)));
        tables++;
      } catch {
        // This table is absent (no IPv6, or not Linux).
      }
    }
    if (tables === 0) {
      this.unavailable = true;
      return null;
    }
    if (rows.some((r) => !this.owned.has(r.inode))) await this.learnOwned(rows.map((r) => r.inode));
    let drops = 0;
    for (const r of rows) if (this.owned.get(r.inode)) drops += r.drops;
    return drops;
  }

  /** Marks each inode as this process's or not, from the links in /proc/self/fd. */
  private async learnOwned(inodes: string[]): Promise<void> {
    const mine = new Set<string>();
    try {
      for (const fd of await readdir("/proc/self/fd")) {
        const target = await readlink(`/proc/self/fd/${fd}`).catch(() => "");
        const m = /^socket:\[(\d+)\]$/.exec(target);
        if (m) mine.add(m[1]!);
      }
    } catch {
      // Descriptors cannot be listed: no socket can be confirmed, so none is counted.
    }
    for (const inode of inodes) this.owned.set(inode, mine.has(inode));
  }
}
