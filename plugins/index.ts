// The input types this agent knows. Adding a plugin: create plugins/<type>/ and list it here.
import type { InputPlugin } from "../agent/plugin.ts";
import database from "./database/index.ts";
import file from "./file/index.ts";
import http_poll from "./http_poll/index.ts";
import manual from "./manual/index.ts";
import misp_api from "./misp_api/index.ts";
import misp_file from "./misp_file/index.ts";
import nats from "./nats/index.ts";
import openphish from "./openphish/index.ts";
import phishtank from "./phishtank/index.ts";
import syslog from "./syslog/index.ts";
import websocket from "./websocket/index.ts";

export const inputPlugins: Record<string, InputPlugin> = Object.fromEntries(
  [database, file, http_poll, manual, misp_api, misp_file, nats, openphish, phishtank, syslog, websocket].map((p) => [p.type, p as unknown as InputPlugin]),
);
