// How many files the input may hold open. Each followed file costs a descriptor, and a process
// that runs out of them fails in unrelated places (the spool, sockets), so the input keeps
// well under the process's limit.
import { readFile } from "node:fs/promises";

/** The process's soft limit on open files (Linux /proc), or undefined where it cannot be read. */
export async function openFilesLimit(): Promise<number | undefined> {
  try {
    const text = await readFile("/proc/self/limits", "utf8");
    const m = /^Max open files\s+(\d+)/m.exec(text);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** At most half the process's limit, so the rest of the agent keeps its descriptors. */
export function openFilesCap(wanted: number, limit: number | undefined): number {
  if (limit === undefined) return wanted;
  return Math.max(1, Math.min(wanted, Math.floor(limit / 2)));
}
