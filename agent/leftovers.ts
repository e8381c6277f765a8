// Temp files an earlier run of the agent left behind when it died between writing a temp file
// and renaming it (kill -9, a full disk): runningconfig.<pid>.tmp in the data_dir and
// <key>.json.tmp-<pid>-<n> under <data_dir>/state (see StateStore's atomic write), plus a
// half-written reserve.tmp. Removed at start, and only once the data_dir lock is held, so that
// a running agent's temp files are never touched. Removing needs no free space.
import { readdir, unlink } from "node:fs/promises";
import { join } from "node:path";
import { errorMessage } from "./errortext.ts";
import type { Logger } from "./plugin.ts";
import { RESERVE_TEMP } from "./reserve.ts";
import { RUNNING_CONFIG_TEMP } from "./runningconfig.ts";
import { STATE_TEMP_FILE } from "./state.ts";


/** Removes the leftovers; resolves to the paths removed. Never rejects. */
export async function removeLeftoverTempFiles(dataDir: string, log?: Logger): Promise<string[]> {
  const removed: string[] = [];
  const sweep = async (dir: string, leftover: (name: string) => boolean) => {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return; // no such folder yet
    }
    for (const name of names) {
      if (!leftover(name)) continue;
      const path = join(dir, name);
      try {
        await unlink(path);
        removed.push(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") log?.warn("cannot remove a leftover temp file", { path, error: errorMessage(err) });
      }
    }
  };
  await sweep(dataDir, (name) => RUNNING_CONFIG_TEMP.test(name) || name === RESERVE_TEMP);
  await sweep(join(dataDir, "state"), (name) => STATE_TEMP_FILE.test(name));
  if (removed.length) log?.info("removed temp files left by an earlier run", { files: removed });
  return removed;
}
