// The `phishtank` input: PhishTank's hourly dump of online, verified phishes
// (online-valid.json.bz2), read as it downloads, posting each record that is new or changed.
import { z } from "zod";
import { defineInput } from "../../agent/plugin.ts";
import { dedupTtlOption, feedState, httpUrl, intervalOption, maxSeenOption, timeoutOption, tlsOptions } from "../common/feed.ts";
import { PhishtankInput } from "./input.ts";

const options = z.object({
  url: httpUrl().optional()
    .describe("The dump to fetch. Default: http://data.phishtank.com/data/<app_key>/online-valid.json.bz2 (without app_key: http://data.phishtank.com/data/online-valid.json.bz2). bzip2, gzip and plain JSON are all read, recognised by their content."),
  app_key: z.string().min(1).optional()
    .describe("PhishTank application key. It goes into the URL path; it is never logged or shown in status."),
  username: z.string().regex(/^[!-~]+$/, { message: "expected a PhishTank username (visible ASCII characters, no spaces)" })
    .describe("Your PhishTank username: requests carry User-Agent phishtank/<username>, as PhishTank asks (required)."),
  interval: intervalOption("1h", "How often the dump is fetched. PhishTank rebuilds it hourly and answers 509 to clients that download it more often: shorter intervals are warned about."),
  timeout: timeoutOption("60s", "Longest wait for the server's answer, and for each piece of the download."),
  dedup_ttl: dedupTtlOption("A phish_id no longer in the dump is forgotten after this long (if it comes back later, it is posted again)."),
  max_seen: maxSeenOption("Most phish_ids remembered; beyond it the ones gone longest from the dump are forgotten first."),
  ...tlsOptions("Verify the server's TLS certificate (https URLs).", "PEM file of CA certificates to trust for https URLs."),
}).strict();

export type PhishtankOptions = z.infer<typeof options>;

export default defineInput({
  type: "phishtank",
  description: "PhishTank's hourly dump of verified online phishes: posts each new or changed record",
  options,
  state: feedState,
  create(opts, ctx) {
    const input = new PhishtankInput(opts, ctx);
    return { run: () => input.run() };
  },
});
