// The `misp_api` input: a MISP instance's events through POST /events/restSearch,
// incrementally by event timestamp, page by page, with the user's filters.
import { defineInput } from "../../agent/plugin.ts";
import { MispApiInput, mispApiState } from "./input.ts";
import { options } from "./options.ts";

export default defineInput({
  type: "misp_api",
  description: "A MISP instance's events via /events/restSearch: incremental by timestamp, paginated, filtered",
  options,
  state: mispApiState,
  create(opts, ctx) {
    const input = new MispApiInput(opts, ctx);
    return { run: () => input.run() };
  },
});
