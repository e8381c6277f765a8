// Console logins: one-time login codes (printed by `cybexp-agent console`) and the sessions they
// start. Both live in memory only: a restart of the agent ends every session, and nothing of a
// session is ever written to disk. A session carries its own CSRF token, which the page sends
// back on every state-changing request.
import { randomBytes, timingSafeEqual } from "node:crypto";

/** How long a login code may wait to be used (it works once). */
export const LOGIN_CODE_TTL_MS = 2 * 60_000;
/** A session ends after this long without a request. */
export const SESSION_IDLE_MS = 8 * 3_600_000;
/** Codes and sessions kept at most; the oldest go first (each login is a fresh one). */
const MAX_CODES = 32;
const MAX_SESSIONS = 64;

export interface ConsoleSession {
  id: string;
  csrf: string;
  lastSeen: number;
}

function token(): string {
  return randomBytes(24).toString("base64url");
}

/** Equal strings, compared in a time that does not depend on where they differ. */
export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a), y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export class ConsoleSessions {
  private readonly codes = new Map<string, number>();
  private readonly sessions = new Map<string, ConsoleSession>();

  constructor(private readonly now: () => number = Date.now) {}

  /** A new one-time login code. */
  issueCode(): string {
    this.prune();
    const code = token();
    this.codes.set(code, this.now() + LOGIN_CODE_TTL_MS);
    while (this.codes.size > MAX_CODES) this.codes.delete(this.codes.keys().next().value!);
    return code;
  }

  /** Uses up a login code: a new session if it was issued, unused and in time; else null. */
  redeem(code: string): ConsoleSession | null {
    this.prune();
    let found: string | undefined;
    for (const c of this.codes.keys()) if (sameSecret(c, code)) found = c;
    if (found === undefined) return null;
    this.codes.delete(found);
    const session: ConsoleSession = { id: token(), csrf: token(), lastSeen: this.now() };
    this.sessions.set(session.id, session);
    while (this.sessions.size > MAX_SESSIONS) this.sessions.delete(this.sessions.keys().next().value!);
    return session;
  }

  /** The live session with this id (its idle clock restarts), or null. */
  find(id: string | undefined): ConsoleSession | null {
    if (!id) return null;
    this.prune();
    let found: ConsoleSession | null = null;
    for (const [sid, s] of this.sessions) if (sameSecret(sid, id)) found = s;
    if (found) found.lastSeen = this.now();
    return found;
  }

  end(id: string): void {
    this.sessions.delete(id);
  }

  private prune(): void {
    const now = this.now();
    for (const [code, until] of this.codes) if (until <= now) this.codes.delete(code);
    for (const [id, s] of this.sessions) if (now - s.lastSeen > SESSION_IDLE_MS) this.sessions.delete(id);
  }
}
