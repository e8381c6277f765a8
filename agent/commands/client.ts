// What the CLI's commands share to talk to a running daemon: exit codes, the error a command
// ends with, finding the daemon through <data_dir>/runningconfig, and calling its control server.
import { ConfigError, loadConfig, readDataDir, type AgentConfig } from "../config.ts";
import { errorMessage } from "../errortext.ts";
import type { InputPlugins } from "../plugin.ts";
import { readRunningConfig, type RunningConfig } from "../runningconfig.ts";

export const EXIT = { ok: 0, error: 1, usage: 2, noDaemon: 3 } as const;

export class CliError extends Error {
  constructor(message: string, readonly code: number = EXIT.error) {
    super(message);
  }
}

export type DaemonTarget = Pick<AgentConfig, "file"> & { agent: Pick<AgentConfig["agent"], "dataDir"> };

/** Client commands need only data_dir: a config broken since the daemon started must not hide it. */
export async function loadConfigForClient(path: string, plugins: InputPlugins): Promise<DaemonTarget> {
  try {
    return await loadConfig(path, plugins);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const dataDir = readDataDir(path);
    if (dataDir === undefined) throw err;
    return { file: path, agent: { dataDir } };
  }
}

export async function requireDaemon(config: DaemonTarget): Promise<RunningConfig> {
  const rc = await readRunningConfig(config.agent.dataDir);
  if (!rc) throw new CliError(`no daemon is running for ${config.file} (data_dir ${config.agent.dataDir})`, EXIT.noDaemon);
  return rc;
}

/** A control server call with the token; the answer parsed as JSON (or {error: its text}). Throws a CliError when the daemon does not answer, or (unless anyStatus) on an error status. */
export async function callDaemon(
  rc: RunningConfig,
  method: string,
  path: string,
  body?: Uint8Array,
  anyStatus = false,
  contentType?: string,
): Promise<{ status: number; body: unknown }> {
  let res: Response;
  try {
    res = await fetch(rc.url + path, {
      method,
      body: body as BodyInit | undefined,
      headers: { authorization: `Bearer ${rc.token}`, ...(contentType ? { "content-type": contentType } : {}) },
      signal: AbortSignal.timeout(60_000),
    });
  } catch (err) {
    throw noAnswer(rc, err);
  }
  const parsed = parseAnswer(await res.text());
  if (!anyStatus && !res.ok) throw new CliError((parsed as { error?: string }).error ?? `HTTP ${res.status}`);
  return { status: res.status, body: parsed };
}

/** The error of a daemon that did not answer. */
export function noAnswer(rc: RunningConfig, err: unknown): CliError {
  return new CliError(`the daemon (pid ${rc.pid}) does not answer at ${rc.url}: ${errorMessage(err)}`);
}

/** A control server answer: its JSON, or {error: the start of its text}. */
export function parseAnswer(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return { error: text.slice(0, 200) };
  }
}

/** Writes to standard output, waiting while the reader of a pipe is behind. */
export function writeStdout(text: string): Promise<void> {
  return new Promise((resolve) => {
    if (process.stdout.write(text)) resolve();
    else process.stdout.once("drain", () => resolve());
  });
}
