// What the UDP and the TCP/TLS listeners share: the input's options and context, the batcher
// their event lines go to, the status detail, and how a message becomes an event line.
import type { InputContext } from "../../agent/plugin.ts";
import type { Batcher } from "./batcher.ts";
import type { MessageSink } from "./framer.ts";
import type { SyslogOptions } from "./options.ts";
import { eventTail, writeSyslogEvent, type MessageContext } from "./parse.ts";

export interface ListenerContext {
  readonly opts: SyslogOptions;
  readonly ctx: InputContext;
  readonly batcher: Batcher;
  /** Shows the input's status detail again (a count changed). */
  showDetail(): void;
}

/** Writes the messages of one source as event lines; `mc.now` is set before each read. */
export interface EventWriter {
  mc: MessageContext;
  write: MessageSink;
}

/** Writes each message it is given as an event line from this source. */
export function eventWriter(l: ListenerContext, sourceIp: string | null, transport: string): EventWriter {
  const mc: MessageContext = { tail: eventTail(sourceIp, transport), now: Date.now(), defaultTz: l.opts.timezone };
  return { mc, write: (buf, start, end) => writeSyslogEvent(l.batcher.lines, buf, start, end, mc) };
}

export const normaliseIp = (ip: string | undefined): string | null =>
  ip ? (ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : ip) : null;

/** Resolves once `start` reports the socket bound; a bind error (e.g. port in use) rejects. */
export function bound(socket: { once(e: "error", f: (err: Error) => void): unknown; off(e: "error", f: (err: Error) => void): unknown }, start: (done: () => void) => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    start(() => {
      socket.off("error", reject);
      resolve();
    });
  });
}
