// <data_dir>/runningconfig: how the CLI finds the daemon. Written (0600) once the control
// server listens, removed on clean exit; a file whose pid is dead is stale.
import { chmod, open, readFile, rename, unlink } from "node:fs/promises";
import { join } from "node:path";
import type { Reserve } from "./reserve.ts";

export interface RunningConfig {
  pid: number;
  url: string;
  token: string;
}

export function runningConfigPath(dataDir: string): string {
  return join(dataDir, "runningconfig");
}

/** The temp files writeRunningConfig writes before its rename: runningconfig.<pid>.tmp. */
export const RUNNING_CONFIG_TEMP = /^runningconfig\.\d+\.tmp$/;

/** Written through a temp file and a rename, so a reader sees the old file or the new one. On a
 *  full disk the reserve, when given, is released and the write tried once more: the daemon
 *  must come up to deliver (and so free) what is spooled. */
export async function writeRunningConfig(dataDir: string, rc: RunningConfig, reserve?: Reserve): Promise<void> {
  const write = () => writeAtomic(runningConfigPath(dataDir), JSON.stringify(rc) + "\n");
  await (reserve ? reserve.retryOnFull("the runningconfig", write) : write());
}

async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    const fh = await open(tmp, "w", 0o600);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await chmod(tmp, 0o600);
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
}

/** The runningconfig of a live daemon, or undefined (no file, unreadable, or its pid is dead). */
export async function readRunningConfig(dataDir: string): Promise<RunningConfig | undefined> {
  let rc: RunningConfig;
  try {
    rc = JSON.parse(await readFile(runningConfigPath(dataDir), "utf8"));
  } catch {
    return undefined;
  }
  if (typeof rc?.pid !== "number" || typeof rc.url !== "string" || typeof rc.token !== "string") return undefined;
  return isAlive(rc.pid) ? rc : undefined;
}

/** Remove the file, but only if it is ours (another daemon may have replaced a stale one). */
export async function removeRunningConfig(dataDir: string, pid = process.pid): Promise<void> {
  try {
    const rc = JSON.parse(await readFile(runningConfigPath(dataDir), "utf8"));
    if (rc.pid !== pid) return;
    await unlink(runningConfigPath(dataDir));
  } catch {
    // already gone
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
