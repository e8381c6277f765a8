// The `nats` input, a relay: consumes the batches edge agents published to NATS JetStream with
// their `nats` output, and spools each one under the edge's own parts (name, orgid, typetag,
// timezone), acknowledging a message only once the spool holds its events.
import { defineInput } from "../../agent/plugin.ts";
import { options } from "./options.ts";
import { relayState } from "./state.ts";

export default defineInput({
  type: "nats",
  description: "Relay: consumes the batches edge agents published to NATS JetStream (their nats output) and uploads them as the edge made them",
  options,
  state: relayState,
  listens: true,
  create(opts, ctx) {
    // The worker and the NATS client it needs load when a relay runs, not in every agent.
    return {
      run: async () => {
        const { NatsRelay } = await import("./input.ts");
        await new NatsRelay(opts, ctx).run();
      },
    };
  },
});
