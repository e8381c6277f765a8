// The `phishtank` input's options.
import { z } from "zod";
import { dedupTtlOption, httpUrl, intervalOption, maxSeenOption, timeoutOption, tlsOptions } from "../common/options.ts";

export const options = z.object({
  url: httpUrl().optional()
    .describe("The dump to fetch. Default: http://data.phishtank.com/data/<app_key>/online-valid.json.bz2 (without app_key: http://data.phishtank.com/data/online-valid.json.bz2). bzip2, gzip and plain JSON are all read, recognised by their content, not the name; if you write the key into url yourself, set app_key too so it is kept out of logs."),
  app_key: z.string().min(1).optional()
    .describe("Your PhishTank application key. It goes into the URL path (/data/<app_key>/...) and is a secret: replaced by *** in every log line, status entry and error message."),
  username: z.string().regex(/^[!-~]+$/, { message: "expected a PhishTank username (visible ASCII characters, no spaces)" })
    .describe("Your PhishTank username: requests carry User-Agent phishtank/<username>, as PhishTank asks of dump downloaders (required)."),
  interval: intervalOption("1h", "How often the dump is fetched. PhishTank rebuilds it hourly and answers 509 to clients that download it more often: an interval under an hour is logged as a warning at start."),
  timeout: timeoutOption("60s", "Longest wait for the server's answer, and for each piece of the download."),
  dedup_ttl: dedupTtlOption("A phish_id that has left the dump is forgotten this long after it was last in it; if it comes back later, it is posted again."),
  max_seen: maxSeenOption("Most phish_ids remembered (at least 1000); beyond it the ones gone from the dump longest are forgotten first. Keep it well above the number of records in the dump (about 60,000-100,000), or records forgotten this way are posted again."),
  ...tlsOptions("Verify the server's TLS certificate (https URLs).", "PEM file of CA certificates to trust for https URLs; one that does not exist or cannot be read is a config error naming the key and the path."),
}).strict();

export type PhishtankOptions = z.infer<typeof options>;
