// A throwaway PostgreSQL server for tests: a fresh cluster in a temp dir, listening on a free
// port on 127.0.0.1 (and a unix socket inside the temp dir), removed again by destroy().
//
//   const reason = postgresUnavailable();               // a skip reason, or null
//   const pg = await startPostgres();
//   pg.url()                                             // superuser, trust auth: for setup
//   await pg.stop(); await pg.start();                   // the server down and up again
//   await pg.destroy();
//
// PostgreSQL refuses to run as root, and tests may run as root (CI does): then every server
// command runs as the `postgres` system user (runuser), which owns the temp dir.
//
// Host connections: the superuser `postgres` is trusted (setup needs no password); every
// other role must give its password (scram-sha-256), so tests can check password logins.
import { execFile } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { chown, mkdtemp, rm, writeFile } from "node:fs/promises";
import { freePort } from "./ports.ts";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface PostgresServer {
  readonly host: string;
  readonly port: number;
  /** A postgres:// URL; by default the superuser's, which needs no password. */
  url(opts?: { user?: string; password?: string; database?: string }): string;
  /** Stop the server (fast shutdown); start() brings it back with the same data and port. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stop the server and remove its files. Idempotent. */
  destroy(): Promise<void>;
}

const SERVER_USER = "postgres";

/** Where initdb and pg_ctl are: $PG_BINDIR, else the newest /usr/lib/postgresql/N/bin. */
export function postgresBinDir(): string | null {
  const fromEnv = process.env.PG_BINDIR;
  if (fromEnv) return existsSync(join(fromEnv, "initdb")) ? fromEnv : null;
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return null;
  const versions = readdirSync(root)
    .filter((v) => /^\d+$/.test(v) && existsSync(join(root, v, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return versions.length > 0 ? join(root, versions[0]!, "bin") : null;
}

const runningAsRoot = () => process.getuid?.() === 0;

/** Why a test server cannot be started here, or null if it can. */
export function postgresUnavailable(): string | null {
  if (!postgresBinDir()) return "PostgreSQL server binaries not found (install the Debian package `postgresql`, or set PG_BINDIR)";
  if (runningAsRoot() && !existsSync("/usr/sbin/runuser") && !existsSync("/sbin/runuser")) {
    return "running as root and runuser is missing (PostgreSQL will not run as root)";
  }
  return null;
}

function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<string> {
  const [file, argv] = runningAsRoot() ? ["runuser", ["-u", SERVER_USER, "--", cmd, ...args]] : [cmd, args];
  return new Promise((resolve, reject) => {
    execFile(file, argv, { timeout: timeoutMs, encoding: "utf8" }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(" ")} failed: ${err.message}\n${stderr}${stdout}`));
      else resolve(stdout);
    });
  });
}

function idOf(flag: "-u" | "-g", user: string): Promise<number> {
  return new Promise((resolve, reject) => {
    execFile("id", [flag, user], { encoding: "utf8" }, (err, stdout) => {
      if (err) reject(new Error(`no system user ${user}: ${err.message}`));
      else resolve(Number(stdout.trim()));
    });
  });
}


export async function startPostgres(): Promise<PostgresServer> {
  const reason = postgresUnavailable();
  if (reason) throw new Error(reason);
  const bin = postgresBinDir()!;
  const dir = await mkdtemp(join(tmpdir(), "pg-test-"));
  const data = join(dir, "data");
  const logFile = join(dir, "server.log");
  let destroyed = false;
  let port = 0;

  try {
    if (runningAsRoot()) await chown(dir, await idOf("-u", SERVER_USER), await idOf("-g", SERVER_USER));
    await run(join(bin, "initdb"), ["-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]);
    const hba = [
      "local all all trust",
      "host all postgres 127.0.0.1/32 trust",
      "host all all 127.0.0.1/32 scram-sha-256",
      "",
    ].join("\n");
    await writeFile(join(data, "pg_hba.conf"), hba);

    const pgCtl = (...args: string[]) => run(join(bin, "pg_ctl"), ["-D", data, ...args]);
    const startOn = (p: number) =>
      pgCtl("-l", logFile, "-w", "-t", "30", "-o",
        `-p ${p} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c shared_buffers=16MB -c max_connections=20`,
        "start");

    // Another process may take the free port before the server binds it: try a few.
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      try {
        await startOn(port);
        break;
      } catch (err) {
        if (attempt >= 3) throw err;
      }
    }

    const server: PostgresServer = {
      host: "127.0.0.1",
      port,
      url({ user = "postgres", password, database = "postgres" } = {}) {
        const auth = password === undefined ? encodeURIComponent(user) : `${encodeURIComponent(user)}:${encodeURIComponent(password)}`;
        return `postgres://${auth}@127.0.0.1:${port}/${encodeURIComponent(database)}`;
      },
      async stop() {
        await pgCtl("-m", "fast", "-w", "stop");
      },
      async start() {
        await startOn(port);
      },
      async destroy() {
        if (destroyed) return;
        destroyed = true;
        await pgCtl("-m", "immediate", "-w", "stop").catch(() => {});
        await rm(dir, { recursive: true, force: true });
      },
    };
    return server;
  } catch (err) {
    await run(join(bin, "pg_ctl"), ["-D", data, "-m", "immediate", "stop"]).catch(() => {});
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
