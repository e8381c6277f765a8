// The output an agent's config asks for: the Cybex-P API ([api]) or NATS JetStream ([output.nats]).
import { agentId } from "../agentid.ts";
import type { AgentConfig } from "../config.ts";
import type { Logger } from "../plugin.ts";
import { CybexApiTransport, type ApiOptions } from "./http.ts";
import { NatsTransport } from "./nats.ts";
import type { OutputTransport } from "./transport.ts";

export function createOutput(config: AgentConfig, log: Logger): OutputTransport {
  if (config.output.type === "nats") {
    return new NatsTransport(config.output.nats!, agentId(config.agent.dataDir, config.agent.hostname), config.agent.hostname, log);
  }
  return new CybexApiTransport(apiOptions(config), log);
}

/**
 * Applies a reloaded config to the running output: "changed" when where or how it delivers
 * changed (worth an attempt now rather than after the old backoff), "restart" when the config
 * asks for another kind of output, which takes a restart of the agent.
 */
export async function reconfigureOutput(output: OutputTransport, config: AgentConfig): Promise<"changed" | "unchanged" | "restart"> {
  if (output instanceof CybexApiTransport && config.output.type === "cybexp_api") {
    const next = apiOptions(config);
    const prev = output.options;
    output.setApi(next);
    return prev.url !== next.url || prev.token !== next.token ? "changed" : "unchanged";
  }
  if (output instanceof NatsTransport && config.output.type === "nats") {
    return (await output.reconfigure(config.output.nats!)) ? "changed" : "unchanged";
  }
  return "restart";
}

function apiOptions(c: AgentConfig): ApiOptions {
  const api = c.api!;
  return { url: api.url, token: api.token, timeoutMs: api.timeoutMs, concurrency: api.concurrency, tlsVerify: api.tlsVerify };
}
