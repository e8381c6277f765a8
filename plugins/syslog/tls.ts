// TLS material for tls:// listeners (RFC 5425), read and checked when the input starts. Deno's
// node:tls accepts any bytes as a certificate or key and only fails later, in every
// handshake, so each file is parsed here: a bad file fails the input with a message that
// names the option and the file, instead of a listener no client can talk to.
import { readFile } from "node:fs/promises";
import { X509Certificate, createPrivateKey, type KeyObject } from "node:crypto";
import type { TlsOptions } from "node:tls";
import { FatalInputError } from "../../agent/plugin.ts";
import { isDeno } from "../../agent/runtime/detect.ts";
import type { SyslogOptions } from "./options.ts";

export type TlsFileOptions = Pick<SyslogOptions, "tls_cert" | "tls_key" | "tls_ca" | "tls_min_version">;

/** What the listeners need: node:tls server options, and when the certificate expires. */
export interface TlsMaterial {
  server: TlsOptions;
  certExpires: Date;
}

/**
 * Under Deno, node:tls keeps reading a paused TLS socket into memory (the sender sees no
 * backpressure) and, once data has piled up there, never delivers the end of the stream. So
 * TLS sockets are paused only where pause() stops reading.
 */
export const TLS_PAUSE_STOPS_READING = !isDeno();

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Reads and checks tls_cert, tls_key and tls_ca; a problem throws a FatalInputError naming the option and file. */
export async function loadTlsMaterial(opts: TlsFileOptions): Promise<TlsMaterial> {
  if (!opts.tls_cert) throw new FatalInputError("tls_cert: required when listen has a tls:// address");
  if (!opts.tls_key) throw new FatalInputError("tls_key: required when listen has a tls:// address");
  const certPem = await readPem("tls_cert", opts.tls_cert);
  const keyPem = await readPem("tls_key", opts.tls_key);
  const chain = certificates("tls_cert", opts.tls_cert, certPem);
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    throw new FatalInputError(`tls_key: ${opts.tls_key} is not a usable PEM private key (${reason(err)})`);
  }
  if (!chain[0]!.checkPrivateKey(key)) {
    throw new FatalInputError(`tls_key: ${opts.tls_key} does not belong to the certificate in tls_cert (${opts.tls_cert})`);
  }
  const server: TlsOptions = { cert: certPem, key: keyPem, minVersion: opts.tls_min_version };
  if (opts.tls_ca) {
    const caPem = await readPem("tls_ca", opts.tls_ca);
    certificates("tls_ca", opts.tls_ca, caPem);
    server.ca = caPem;
    server.requestCert = true;
    server.rejectUnauthorized = true;
  }
  return { server, certExpires: new Date(chain[0]!.validTo) };
}

async function readPem(key: string, path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    throw new FatalInputError(`${key}: cannot read ${path} (${reason(err)})`);
  }
}

/** Every certificate in a PEM file, in order; at least one, each of them parseable. */
function certificates(key: string, path: string, pem: string): X509Certificate[] {
  const blocks = pem.match(PEM_CERT);
  if (!blocks) throw new FatalInputError(`${key}: ${path} holds no PEM certificate ("-----BEGIN CERTIFICATE-----")`);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw new FatalInputError(`${key}: certificate ${i + 1} in ${path} is not valid (${reason(err)})`);
    }
  });
}

function reason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  return typeof code === "string" && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
}
