// What a failed file operation means for the agent. One home for the rule, used by the spool,
// the state store, the dead letters and start-up.

/** ENOSPC or EDQUOT: the filesystem (or the user's quota) is out of space. A full disk is a
 *  reason to wait, like a full spool, never a reason to drop data or to crash. */
export function isNoSpace(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === "ENOSPC" || code === "EDQUOT";
}
