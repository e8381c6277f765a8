// A real small filesystem for the tests of a full disk: a tmpfs of a few MiB mounted under the
// temp dir (root only, as CI runs). Where mounting is not permitted, the tests that need one
// are skipped with the reason instead of pretending.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { errorFirstLine } from "../../agent/errortext.ts";

export interface SmallDisk {
  dir: string;
  /** Free bytes as the filesystem reports them to an unprivileged writer. */
  free(): number;
  /** Write a file of zeros that leaves about `leave` bytes free; returns its path. */
  fill(leave?: number, name?: string): string;
  unmount(): void;
}

/** Why a tmpfs cannot be mounted here, or false when it can (tried once). */
export const cannotMount: string | false = (() => {
  let probe: SmallDisk | undefined;
  try {
    probe = mountSmallDisk(1);
    return false;
  } catch (err) {
    return `needs root to mount a small tmpfs (${errorFirstLine(err)})`;
  } finally {
    probe?.unmount();
  }
})();

/** A tmpfs of `mib` MiB on a new temp dir, or on `at` (an empty folder, created if missing). */
export function mountSmallDisk(mib: number, at?: string): SmallDisk {
  const dir = at ?? mkdtempSync(join(tmpdir(), "small-disk-"));
  mkdirSync(dir, { recursive: true });
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${mib}m`, "tmpfs", dir], { stdio: "pipe" });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const free = () => {
    const s = statfsSync(dir);
    return Number(s.bavail) * Number(s.bsize);
  };
  let fillers = 0;
  return {
    dir,
    free,
    fill(leave = 0, name = `filler-${++fillers}`) {
      const file = join(dir, name);
      const bytes = Math.max(0, free() - leave);
      const chunk = Buffer.alloc(1 << 20);
      let written = 0;
      writeFileSync(file, "");
      while (written < bytes) {
        const n = Math.min(chunk.length, bytes - written);
        try {
          writeFileSync(file, chunk.subarray(0, n), { flag: "a" });
        } catch {
          break; // full: as far as it goes
        }
        written += n;
      }
      return file;
    },
    unmount() {
      try {
        execFileSync("umount", ["-l", dir], { stdio: "pipe" });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
