// A file emptied before any of it was read. A writer can create a file, write it, copy it and
// truncate it (copytruncate) faster than the first watch event about it is handled: the input
// then opens an empty file and never sees what it held, which is only in the copy.
//
// The signs, on an empty file none of whose bytes were seen: its modification time is later
// than its creation (it was written or truncated after it was made), or a change event came
// for it. Time stamps are coarse (a kernel tick, some milliseconds), so a burst within one
// tick leaves the times equal; the change event then tells, though a chmod sends one too.
// What settles it is the copy: a file named after it, made no earlier than it, and last
// written no later than it was seen emptied. A file made empty and chmod-ed (logrotate's
// create) has no such file beside it: older rotations were made before it, later ones are
// written after it.
import { basename, extname } from "node:path";

interface Times {
  size: number;
  mtimeMs: number;
  atimeMs: number;
  birthtimeMs: number;
}

/** How long after an emptied file is seen a copy of it is looked for. */
export const COPY_WINDOW_MS = 10_000;

/** When a file was made: its birth time where the file system keeps one, else its last access (reading it was its writer's business, not ours). */
function madeAt(st: Times): number {
  return st.birthtimeMs > 0 ? st.birthtimeMs : st.atimeMs;
}

/**
 * Whether an empty file none of whose bytes were read may have held some: written after it
 * was made, or (`changed`) a change event came for it and its birth time is known, so that a
 * copy can be told by being made after it.
 */
export function mayHaveBeenEmptied(st: Times, changed: boolean): boolean {
  return st.size === 0 && (st.mtimeMs > madeAt(st) || (changed && st.birthtimeMs > 0));
}

/**
 * Whether `copy` may be the copy of the emptied file `original` (its times as it was seen
 * emptied): named after it (app.log → app.log.1, app.log-20261202, app.1.log), not empty,
 * made no earlier than it and last written no later than it was seen emptied. A rotation made
 * before it, or a file written after that (a rotated file compressed later, say), is not.
 */
export function mayBeCopyOf(copyPath: string, copy: Times, originalPath: string, original: Times): boolean {
  const name = basename(originalPath);
  const stem = name.slice(0, name.length - extname(name).length) || name;
  if (!basename(copyPath).startsWith(stem) || copy.size === 0) return false;
  if (copy.birthtimeMs > 0 && original.birthtimeMs > 0 && copy.birthtimeMs < original.birthtimeMs) return false;
  return copy.mtimeMs <= original.mtimeMs;
}
