// The `websocket` input's options.
import { z } from "zod";
import { duration, size } from "../../agent/units.ts";

export const options = z.object({
  url: z.string().refine((s) => {
    try {
      const u = new URL(s);
      return u.protocol === "ws:" || u.protocol === "wss:";
    } catch {
      return false;
    }
  }, { message: "expected a ws:// or wss:// URL" })
    .describe("The websocket server to connect to: ws://host:port/path, or wss://... (TLS, verified against the system's CAs)."),
  headers: z.record(z.string(), z.string()).default({})
    .describe("Extra HTTP headers of the opening handshake, a table of strings (e.g. Authorization); header values, and a user and password in the URL, are never logged."),
  format: z.enum(["json", "text"]).default("json")
    .describe("json: each frame is a JSON object event (one that is not is sent as {\"message\", \"parse_error\"}); text: each line of a frame is a text event."),
  ping_interval: duration().prefault("30s")
    .describe("How often the server is pinged; no pong before the next ping means the connection is dead: it is closed and dialled again. A connection that does not open within this time is given up too."),
  reconnect_min: duration().prefault("1s")
    .describe("Reconnect delays follow exponential backoff with full jitter: a random delay between 0 and reconnect_min × 2^attempt, at most reconnect_max."),
  reconnect_max: duration().prefault("1m")
    .describe("Largest reconnect delay. The backoff starts afresh after a connection that stayed up for 60 s."),
  max_message_size: size().prefault("16MiB")
    .refine((n) => n >= 1024, { message: "expected at least 1KiB" })
    .describe("Largest message accepted (at least 1KiB), all its fragments together; a larger one is not delivered: it closes the connection with code 1009 (message too big), is logged and counted as an error, and the connection is dialled again."),
}).strict();

export type WebsocketOptions = z.infer<typeof options>;
