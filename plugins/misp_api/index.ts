// The `misp_api` input: a MISP instance's events through POST /events/restSearch,
// incrementally by event timestamp, page by page, with the user's filters.
import { z } from "zod";
import { defineInput } from "../../agent/plugin.ts";
import { duration } from "../../agent/units.ts";
import { MispApiInput, RESERVED_FILTERS } from "./input.ts";

const httpUrl = () =>
  z.string().refine((s) => {
    try {
      const u = new URL(s);
      return u.protocol === "http:" || u.protocol === "https:";
    } catch {
      return false;
    }
  }, { message: "expected an http:// or https:// URL" });

const options = z.object({
  url: httpUrl()
    .describe("The MISP instance's base URL, e.g. https://misp.example.org (events are searched at {url}/events/restSearch)."),
  key: z.string().min(1)
    .describe("MISP automation (API) key, sent as the raw Authorization header; never logged or shown."),
  interval: duration().prefault("5m").refine((ms) => ms >= 10, { message: "expected at least 10ms" })
    .describe("How often MISP is searched for events changed since the last poll."),
  page_size: z.number().int().min(1).max(100_000).default(100)
    .describe("Events per restSearch page (MISP's limit); a page shorter than this ends a poll."),
  since: duration().prefault("7d")
    .describe("First run (or after url/filters change): how far back to search, by event timestamp."),
  filters: z.record(z.string(), z.unknown()).default({})
    .refine((f) => !Object.keys(f).some((k) => RESERVED_FILTERS.has(k)), {
      message: `${[...RESERVED_FILTERS].join(", ")} are set by the input and cannot be filters`,
    })
    .describe("restSearch filters merged into every request body, e.g. { published = true, tags = [\"tlp:white\"], to_ids = true, org = \"CIRCL\", type = \"url\" }."),
  timeout: duration().prefault("60s").refine((ms) => ms >= 1, { message: "expected a positive duration" })
    .describe("Longest wait for MISP's answer, and for each piece of a page."),
  max_seen: z.number().int().min(1000).default(1_000_000)
    .describe("Most event versions remembered (to post each version once); beyond it the least recently seen are forgotten."),
  tls_verify: z.boolean().default(true).describe("Verify MISP's TLS certificate."),
  ca_file: z.string().min(1).optional().describe("PEM file of CA certificates to trust (a MISP with a private CA)."),
}).strict();

export type MispApiOptions = z.infer<typeof options>;

export default defineInput({
  type: "misp_api",
  description: "A MISP instance's events via /events/restSearch: incremental by timestamp, paginated, filtered",
  options,
  create(opts, ctx) {
    const input = new MispApiInput(opts, ctx);
    return { run: () => input.run() };
  },
});
