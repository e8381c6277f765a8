// The `websocket` input: a client of a websocket server that pushes one event per text frame
// (e.g. Logstash's websocket output relaying a honeypot's events).
import { defineInput } from "../../agent/plugin.ts";
import { WebsocketClient } from "./client.ts";
import { options } from "./options.ts";

export default defineInput({
  type: "websocket",
  description: "Client of a websocket server that pushes events as text frames (e.g. Logstash's websocket output)",
  options,
  listens: true,
  create(opts, ctx) {
    const client = new WebsocketClient({ ...opts, ping_interval: Math.max(10, opts.ping_interval) }, ctx);
    return { run: () => client.run() };
  },
});
