// Which Host headers the control server answers. A page on another site can make the browser
// send requests to 127.0.0.1 under its own name (DNS rebinding); such requests carry that name
// in Host and are refused. The names of this machine are allowed: localhost, the loopback
// addresses, the listen address, and, when listening on every address, the host's own names.
import { hostname, networkInterfaces } from "node:os";

const WILDCARDS = new Set(["0.0.0.0", "::", ""]);

/** Host names (without port, IPv6 without brackets, lower case) this server answers to. */
export function allowedHostNames(listenHost: string): Set<string> {
  const names = new Set(["localhost", "127.0.0.1", "::1", listenHost.toLowerCase()]);
  if (WILDCARDS.has(listenHost)) {
    names.add(hostname().toLowerCase());
    for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) names.add(a.address.toLowerCase());
  }
  return names;
}

/** The host and port a Host header names, or null when it is not a host[:port]. */
export function parseHostHeader(value: string): { host: string; port: number | null } | null {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s/@]+))(?::(\d{1,5}))?$/.exec(value.trim());
  if (!m) return null;
  return { host: (m[1] ?? m[2]!).toLowerCase().replace(/\.$/, ""), port: m[3] === undefined ? null : Number(m[3]) };
}

/** Whether a request with this Host header is for this server (names as above, and its port). */
export function hostAllowed(value: string | undefined, names: Set<string>, port: number): boolean {
  if (value === undefined) return false;
  const h = parseHostHeader(value);
  if (!h || !names.has(h.host)) return false;
  return h.port === null ? port === 80 : h.port === port;
}
