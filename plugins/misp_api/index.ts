// The `misp_api` input: a MISP instance's events through POST /events/restSearch,
// incrementally by event timestamp, page by page, with the user's filters.
import { z } from "zod";
import { defineInput } from "../../agent/plugin.ts";
import { duration } from "../../agent/units.ts";
import { httpUrl, intervalOption, maxSeenOption, timeoutOption, tlsOptions } from "../common/feed.ts";
import { MispApiInput, mispApiState, RESERVED_FILTERS } from "./input.ts";

const options = z.object({
  url: httpUrl()
    .describe("The MISP instance's base URL, e.g. https://misp.example.org (events are searched at {url}/events/restSearch)."),
  key: z.string().min(1)
    .describe("MISP automation (API) key, sent as the raw Authorization header; never logged or shown."),
  interval: intervalOption("5m", "How often MISP is searched for events changed since the last poll."),
  page_size: z.number().int().min(1).max(100_000).default(100)
    .describe("Events per restSearch page (MISP's limit); a page shorter than this ends a poll."),
  since: duration().prefault("7d")
    .describe("First run (or after url/filters change): how far back to search, by event timestamp."),
  filters: z.record(z.string(), z.unknown()).default({})
    .refine((f) => !Object.keys(f).some((k) => RESERVED_FILTERS.has(k)), {
      message: `${[...RESERVED_FILTERS].join(", ")} are set by the input and cannot be filters`,
    })
    .describe("restSearch filters merged into every request body, e.g. { published = true, tags = [\"tlp:white\"], to_ids = true, org = \"CIRCL\", type = \"url\" }."),
  timeout: timeoutOption("60s", "Longest wait for MISP's answer, and for each piece of a page."),
  max_seen: maxSeenOption("Most event versions remembered (to post each version once); beyond it the least recently seen are forgotten."),
  ...tlsOptions("Verify MISP's TLS certificate.", "PEM file of CA certificates to trust (a MISP with a private CA)."),
}).strict();

export type MispApiOptions = z.infer<typeof options>;

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
