// Throwaway certificates for the TLS tests, made with the openssl CLI in a temp dir: a CA, a
// server certificate for 127.0.0.1/localhost and a client certificate signed by it, and a
// second CA with a client certificate of its own (which the first CA must not accept).
import { existsSync } from "node:fs";
import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";

export const OPENSSL = ["/usr/bin/openssl", "/usr/local/bin/openssl"].find((p) => existsSync(p));

export interface TestCerts {
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  otherCaCert: string;
  /** Signed by the other CA, for the same key as clientKey. */
  otherClientCert: string;
}

function openssl(args: string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile(OPENSSL!, args, { cwd, timeout: 30_000 }, (err, _stdout, stderr) => (err ? reject(new Error(`openssl ${args[0]}: ${stderr || err}`)) : resolve())),
  );
}

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

async function selfSignedCa(dir: string, name: string): Promise<void> {
  await openssl(["req", "-x509", ...EC_KEY, "-keyout", `${name}.key`, "-out", `${name}.pem`, "-days", "2", "-subj", `/CN=${name}`], dir);
}

async function signed(dir: string, ca: string, csr: string, out: string, ext: string, serial: number): Promise<void> {
  await openssl(["x509", "-req", "-in", csr, "-CA", `${ca}.pem`, "-CAkey", `${ca}.key`, "-set_serial", String(serial), "-out", out, "-days", "2", "-extfile", ext], dir);
}

/** Writes the certificates and keys into `dir` (which the caller removes). */
export async function makeTestCerts(dir: string): Promise<TestCerts> {
  await writeFile(join(dir, "server.ext"), "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n");
  await writeFile(join(dir, "client.ext"), "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
  await Promise.all([
    selfSignedCa(dir, "ca"),
    selfSignedCa(dir, "other-ca"),
    openssl(["req", ...EC_KEY, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"], dir),
    openssl(["req", ...EC_KEY, "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=syslog-client"], dir),
  ]);
  await Promise.all([
    signed(dir, "ca", "server.csr", "server.pem", "server.ext", 1),
    signed(dir, "ca", "client.csr", "client.pem", "client.ext", 2),
    signed(dir, "other-ca", "client.csr", "other-client.pem", "client.ext", 3),
  ]);
  const at = (f: string) => join(dir, f);
  return {
    caCert: at("ca.pem"),
    serverCert: at("server.pem"),
    serverKey: at("server.key"),
    clientCert: at("client.pem"),
    clientKey: at("client.key"),
    otherCaCert: at("other-ca.pem"),
    otherClientCert: at("other-client.pem"),
  };
}
