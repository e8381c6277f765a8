// An in-process agent for tests: a config written to a fresh folder, the agent started on it
// with a silent log, and its control server's address and token read from runningconfig.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent, type RunOptions } from "../../agent/agent.ts";
import { createLogger } from "../../agent/log.ts";
import { inputPlugins } from "../../plugins/index.ts";

/** The [agent] and [control] tables of a test config: data in ./data, any free control port. */
export const AGENT_AND_CONTROL = `[agent]\ndata_dir = "data"\n[control]\nlisten = "127.0.0.1:0"\n`;

export interface TestAgent {
  agent: Agent;
  dir: string;
  /** The control server's base URL. */
  url: string;
  /** The Authorization header the control server wants. */
  auth: { authorization: string };
  /** GET or POST on the control server with the token, the answer's body parsed as JSON. */
  control<T = unknown>(path: string, init?: RequestInit): Promise<{ status: number; body: T }>;
  /** Shuts the agent down and removes its folder. */
  close(): Promise<void>;
}

/** Starts an agent on `config` (the whole TOML text) in a new temp folder. */
export async function startTestAgent(config: string, options: Partial<Pick<RunOptions, "restart">> = {}): Promise<TestAgent> {
  const dir = mkdtempSync(join(tmpdir(), "agent-"));
  const configPath = join(dir, "agent.toml");
  writeFileSync(configPath, config);
  let agent: Agent;
  try {
    agent = await Agent.start({ configPath, plugins: inputPlugins, log: createLogger("error", { write() {} }), ...options });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const rc = JSON.parse(readFileSync(join(dir, "data", "runningconfig"), "utf8")) as { url: string; token: string };
  const auth = { authorization: `Bearer ${rc.token}` };
  return {
    agent,
    dir,
    url: rc.url,
    auth,
    async control<T>(path: string, init: RequestInit = {}) {
      const res = await fetch(`${rc.url}${path}`, { ...init, headers: { ...auth, ...(init.headers as Record<string, string> | undefined) } });
      const text = await res.text();
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        // not JSON: the text itself
      }
      return { status: res.status, body: body as T };
    },
    async close() {
      await agent.shutdown();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
