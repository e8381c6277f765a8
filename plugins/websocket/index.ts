// The `websocket` input: a client of a websocket server that pushes one event per text frame
// (e.g. Logstash's websocket output relaying a honeypot's events).
import { z } from "zod";
import { defineInput } from "../../agent/plugin.ts";
import { duration, size } from "../../agent/units.ts";
import { WebsocketClient } from "./client.ts";

const options = z.object({
  url: z.string().refine((s) => {
    try {
      const u = new URL(s);
      return u.protocol === "ws:" || u.protocol === "wss:";
    } catch {
      return false;
    }
  }, { message: "expected a ws:// or wss:// URL" })
    .describe("The websocket server to connect to: ws://host:port/path or wss://..."),
  headers: z.record(z.string(), z.string()).default({})
    .describe("Extra HTTP headers of the opening handshake (e.g. Authorization); their values are never logged."),
  format: z.enum(["json", "text"]).default("json")
    .describe("json: each frame is a JSON object event (one that is not is sent as {\"message\", \"parse_error\"}); text: each line of a frame is a text event."),
  ping_interval: duration().prefault("30s")
    .describe("How often the server is pinged; no pong before the next ping (or no connection within it) means the connection is dead and is reopened."),
  reconnect_min: duration().prefault("1s").describe("Ceiling of the first reconnect delay (exponential backoff with full jitter)."),
  reconnect_max: duration().prefault("1m").describe("Largest reconnect delay."),
  max_message_size: size().prefault("16MiB")
    .refine((n) => n >= 1024, { message: "expected at least 1KiB" })
    .describe("Largest message (all its fragments together) accepted; a larger one closes the connection with code 1009, logged, and it is dialled again."),
}).strict();

export default defineInput({
  type: "websocket",
  description: "Client of a websocket server that pushes events as text frames (e.g. Logstash's websocket output)",
  options,
  create(opts, ctx) {
    const client = new WebsocketClient({ ...opts, ping_interval: Math.max(10, opts.ping_interval) }, ctx);
    return { run: () => client.run() };
  },
});
