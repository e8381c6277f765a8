// NATS JetStream as the agent speaks it: the connection options both the `nats` output and the
// `nats` input (the relay) take, connecting with them, and the message format between them
// (README "Fleets"): one message per batch of one input, on `<prefix>.<orgid>.<typetag>`,
// carrying exactly the upload's file part, with the upload's other parts in headers.
// Part of the plugin API (a rule module the core and the `nats` input share).
import { readFileSync } from "node:fs";
import type { ConnectionOptions, NatsConnection } from "@nats-io/nats-core";
import { z } from "zod";
import { errorMessage } from "./errortext.ts";
import { redactUrl } from "./redact.ts";
import { duration } from "./units.ts";

/** The headers of a message: the upload's parts besides the file, and where it comes from. */
export const NATS_HEADERS = {
  name: "Cybexp-Name",
  orgid: "Cybexp-Orgid",
  typetag: "Cybexp-Typetag",
  timezone: "Cybexp-Timezone",
  kind: "Cybexp-Kind",
  host: "Cybexp-Host",
  msgId: "Nats-Msg-Id",
} as const;

export const NATS_DEFAULTS = { stream: "CYBEXP_RAW", subjectPrefix: "cybexp.raw" } as const;

/** A server URL: nats:// or tls:// (host and port; credentials go in their own keys). */
export const natsServerUrl = () =>
  z.string().superRefine((s, ctx) => {
    let url: URL;
    try {
      url = new URL(s);
    } catch {
      ctx.addIssue({ code: "custom", message: `expected a nats:// or tls:// URL like "nats://127.0.0.1:4222", got ${JSON.stringify(s)}` });
      return;
    }
    if (url.protocol !== "nats:" && url.protocol !== "tls:") {
      ctx.addIssue({ code: "custom", message: `expected a nats:// or tls:// URL, got ${JSON.stringify(s)} (${url.protocol.replace(/:$/, "")}://)` });
    } else if (!url.hostname) {
      ctx.addIssue({ code: "custom", message: `${JSON.stringify(s)} names no host` });
    } else if (url.username || url.password) {
      ctx.addIssue({ code: "custom", message: `${JSON.stringify(redactUrl(s))}: put credentials in token, user and password, or creds_file, not in the URL` });
    }
  });

/**
 * How to reach a NATS cluster. File paths (creds_file, tls_ca) are resolved by whoever declares
 * the schema: the core for [output.nats], the input's pathOption() for the `nats` input.
 */
export const natsConnectionShape = {
  servers: z.array(natsServerUrl()).min(1).describe("NATS server URLs (nats:// or tls://); any of the cluster's servers, the client learns the rest"),
  creds_file: z.string().min(1).optional().describe("A NATS credentials file (JWT and NKey seed); relative to the config file"),
  token: z.string().min(1).optional().describe("Token authentication"),
  user: z.string().min(1).optional().describe("User authentication (with password)"),
  password: z.string().min(1).optional().describe("Password for user"),
  tls_ca: z.string().min(1).optional().describe("CA certificate (PEM) that signs the servers' certificates, for tls:// servers; relative to the config file"),
  timeout: duration().prefault("10s").describe("Connecting, and each JetStream request (publish, fetch, acknowledgement)"),
};

export type NatsConnectionConfig = {
  servers: string[];
  creds_file?: string | undefined;
  token?: string | undefined;
  user?: string | undefined;
  password?: string | undefined;
  tls_ca?: string | undefined;
  timeout: number;
};

/** The secrets of a connection config, to keep out of messages. */
export function natsSecrets(c: NatsConnectionConfig): string[] {
  return [c.token, c.password].filter((s): s is string => !!s);
}

/**
 * Connects, retrying for ever in the background once connected (the client reconnects by
 * itself and fails pending requests meanwhile, which callers retry). The first connection is
 * waited for up to `timeout`; it throws when no server answers. The client is loaded on first
 * use: an agent without NATS never loads it.
 */
export async function connectNats(c: NatsConnectionConfig, name: string): Promise<NatsConnection> {
  const [{ connect }, { credsAuthenticator }] = await Promise.all([import("@nats-io/transport-node"), import("@nats-io/nats-core")]);
  const opts: ConnectionOptions & { tls?: { caFile?: string } | null } = {
    servers: c.servers.map((s) => s.replace(/^(nats|tls):\/\//, "")),
    name,
    timeout: c.timeout,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 1000,
    pingInterval: 10_000,
  };
  if (c.servers.some((s) => s.startsWith("tls://")) || c.tls_ca) opts.tls = c.tls_ca ? { caFile: c.tls_ca } : {};
  if (c.token) opts.token = c.token;
  if (c.user) {
    opts.user = c.user;
    opts.pass = c.password;
  }
  if (c.creds_file) {
    let creds: Uint8Array;
    try {
      creds = readFileSync(c.creds_file);
    } catch (err) {
      throw new Error(`cannot read creds_file ${c.creds_file}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`);
    }
    opts.authenticator = credsAuthenticator(creds);
  }
  return connect(opts);
}

/** A subject token from an orgid or typetag: NATS subjects split at "." and treat " ", "*" and ">" specially. */
export function subjectToken(value: string): string {
  const token = value.replace(/[\s.*>]/g, "_");
  return token === "" ? "_" : token;
}

/** The subject a batch is published on. */
export function natsSubject(prefix: string, orgid: string, typetag: string): string {
  return `${prefix}.${subjectToken(orgid)}.${subjectToken(typetag)}`;
}
