// The `openphish` input's options: the public text feed by default, the premium JSON-lines
// feed with format = "jsonl" and basic authentication.
import { z } from "zod";
import { dedupTtlOption, httpUrl, intervalOption, maxSeenOption, timeoutOption, tlsOptions } from "../common/options.ts";

export const DEFAULT_FEED_URL = "https://openphish.com/feed.txt";

export const options = z.object({
  url: httpUrl().default(DEFAULT_FEED_URL)
    .describe("The feed to fetch (http or https): the public feed.txt, or your premium feed's URL (with format = \"jsonl\")."),
  interval: intervalOption("1h", "How often the feed is fetched. OpenPhish asks the public feed to be fetched at most hourly: an interval under an hour (under 5 minutes with username) is logged as a warning at start."),
  format: z.enum(["text", "jsonl"]).default("text")
    .describe("text: one URL a line, each posted as a text event; jsonl: the premium feed, one JSON object a line, posted as it is."),
  username: z.string().min(1).optional()
    .describe("Premium feed: user name for HTTP basic authentication. Set together with password (validate reports one without the other)."),
  password: z.string().min(1).optional()
    .describe("Premium feed: password for HTTP basic authentication; never logged or shown in status."),
  timeout: timeoutOption("60s", "Longest wait for the server's answer, and for each piece of the download."),
  dedup_ttl: dedupTtlOption("A URL that has left the feed is forgotten this long after it was last in it; if it comes back later, it is posted again."),
  max_seen: maxSeenOption("Most URLs remembered (at least 1000); beyond it the ones gone from the feed longest are forgotten first."),
  ...tlsOptions("Verify the server's TLS certificate.", "PEM file of CA certificates to trust; one that does not exist or cannot be read is a config error naming the key and the path."),
}).strict().superRefine((o, ctx) => {
  if ((o.username === undefined) === (o.password === undefined)) return;
  const missing = o.username === undefined ? "username" : "password";
  const other = missing === "username" ? "password" : "username";
  ctx.addIssue({ code: "custom", path: [missing], message: `required together with ${other} (premium feed basic authentication)` });
});

export type OpenphishOptions = z.infer<typeof options>;
