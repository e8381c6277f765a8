// The `http_poll` input (the original module's "calling an API"): request a URL on a schedule,
// read the answer as JSON, NDJSON, text or CSV (gzip/bzip2/zip undone), follow its pages, and
// post the records not posted before.
import { defineInput } from "../../agent/plugin.ts";
import { options } from "./options.ts";
import { HttpPoller, httpPollState } from "./poller.ts";

export default defineInput({
  type: "http_poll",
  description: "Call an API on a schedule (JSON, NDJSON, text or CSV answers; pages; conditional GET; post new records only)",
  options,
  state: httpPollState,
  create(opts, ctx) {
    const poller = new HttpPoller(opts, ctx);
    return { run: () => poller.run() };
  },
});
