// The `misp_api` input's options.
import { z } from "zod";
import { duration } from "../../agent/units.ts";
import { httpUrl, intervalOption, maxSeenOption, timeoutOption, tlsOptions } from "../common/options.ts";

/** Body keys the input sets itself; a filter must not override them. */
const RESERVED_FILTERS = new Set(["returnFormat", "timestamp", "limit", "page"]);

export const options = z.object({
  url: httpUrl()
    .describe("The MISP base URL (https://misp.example.org, or with a path prefix); the input calls {url}/events/restSearch."),
  key: z.string().min(1)
    .describe("The MISP automation key of an API-enabled user, sent raw as Authorization: <key> (no \"Bearer\"); never logged, never shown in status or errors."),
  interval: intervalOption("5m", "How often MISP is searched for events changed since the last poll: from the start of one poll to the start of the next."),
  page_size: z.number().int().min(1).max(100_000).default(100)
    .describe("MISP's limit: events per restSearch page; a page shorter than this ends the poll."),
  since: duration().prefault("7d")
    .describe("First run: search events whose timestamp is at most this old; also used when url or filters change."),
  filters: z.record(z.string(), z.unknown()).default({})
    .refine((f) => !Object.keys(f).some((k) => RESERVED_FILTERS.has(k)), {
      message: `${[...RESERVED_FILTERS].join(", ")} are set by the input and cannot be filters`,
    })
    .describe("A table merged into every restSearch body: published, tags (\"!tag\" for NOT), org, to_ids, type, category, eventid, threat_level_id, ... as MISP documents them, e.g. { published = true, tags = [\"tlp:white\"] }; without published = true MISP returns unpublished events too. returnFormat, timestamp, limit and page are set by the input and are refused here."),
  timeout: timeoutOption("60s", "Longest wait for MISP's answer headers, and for each piece of a page's body."),
  max_seen: maxSeenOption("Most event uuids remembered (with the timestamp last posted), to post each version once; beyond it the least recently seen are forgotten, and such an event, seen again, is posted again."),
  ...tlsOptions(
    "Verify MISP's certificate. Under Deno false cannot be applied per request (a warning says so; run with --unsafely-ignore-certificate-errors).",
    "PEM file of CA certificates to trust (a MISP with a private CA); one that does not exist or cannot be read is a config error naming the key and the path.",
  ),
}).strict();

export type MispApiOptions = z.infer<typeof options>;
