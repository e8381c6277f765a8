// The input types this agent knows. Adding a plugin: create plugins/<type>/ and list it here.
import type { InputPlugin } from "../agent/plugin.ts";
import file from "./file/index.ts";
import manual from "./manual/index.ts";
import syslog from "./syslog/index.ts";
import websocket from "./websocket/index.ts";

export const inputPlugins: Record<string, InputPlugin> = Object.fromEntries(
  [file, manual, syslog, websocket].map((p) => [p.type, p as unknown as InputPlugin]),
);
