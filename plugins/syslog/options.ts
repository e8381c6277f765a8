// The `syslog` input's options, and the listen addresses they name.
import { z } from "zod";
import { pathOption } from "../../agent/plugin.ts";
import { duration, size } from "../../agent/units.ts";

const LISTEN = /^(udp|tcp|tls):\/\/(\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]+):(\d{1,5})$/;

export const options = z.object({
  listen: z.array(z.string().regex(LISTEN, 'expected "udp://host:port", "tcp://host:port" or "tls://host:port"')).min(1)
    .describe('Listeners, e.g. ["udp://0.0.0.0:514", "tcp://0.0.0.0:514", "tls://0.0.0.0:6514"] (IPv6 as "tcp://[::]:514"); port 0 picks a free port, and the bound addresses are shown in status (listening).'),
  max_message_bytes: size().prefault("64KiB").describe("Longer messages are cut to this many bytes and counted (truncated)."),
  idle_timeout: duration().prefault("5m")
    .describe("A TCP or TLS connection that sends nothing for this long is closed. A TLS client must also finish its handshake within this time (at most 60 s)."),
  max_connections: z.number().int().positive().default(1000)
    .describe("TCP and TLS connections (all listeners together) beyond this are closed at once, counted (rejected_connections) and logged, at most one line per 10 s."),
  timezone: z.string().default("UTC")
    .describe('Zone of timestamps sent without one (RFC 3164, rsyslog ISO without offset): "UTC", "+02:00" or an IANA name such as "Europe/Berlin".'),
  tls_cert: pathOption("readable").optional()
    .describe("PEM file with the server certificate, followed by any intermediate certificates clients need; required when listen has a tls:// address. Relative to the config file's folder."),
  tls_key: pathOption("readable").optional()
    .describe("PEM file with the (unencrypted) private key of tls_cert; required when listen has a tls:// address. Relative to the config file's folder."),
  tls_ca: pathOption("readable").optional()
    .describe("PEM file of CA certificates (relative to the config file's folder): when set, TLS clients must present a certificate signed by one of them (mutual TLS); when not set, client certificates are not asked for."),
  tls_min_version: z.enum(["TLSv1.2", "TLSv1.3"]).default("TLSv1.2").describe("Oldest TLS version a client may use."),
}).strict().superRefine((o, ctx) => {
  if (!o.listen.some((url) => url.startsWith("tls://"))) return;
  for (const key of ["tls_cert", "tls_key"] as const) {
    if (!o[key]) ctx.addIssue({ code: "custom", path: [key], message: "required when listen has a tls:// address" });
  }
});

export type SyslogOptions = z.infer<typeof options>;

export interface Listener {
  protocol: "udp" | "tcp" | "tls";
  host: string;
  port: number;
}

/** A listen address ("tcp://[::1]:514") as protocol, host (IPv6 without brackets) and port. */
export function parseListen(url: string): Listener {
  const m = LISTEN.exec(url);
  if (!m) throw new Error(`bad listen address ${url}`);
  const host = m[2]!.startsWith("[") ? m[2]!.slice(1, -1) : m[2]!;
  return { protocol: m[1] as Listener["protocol"], host, port: Number(m[3]) };
}
