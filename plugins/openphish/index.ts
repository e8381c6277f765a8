// The `openphish` input: OpenPhish's feed of phishing URLs (the public feed.txt, or the
// premium JSON-lines feed), posting each URL once.
import { z } from "zod";
import { defineInput } from "../../agent/plugin.ts";
import { dedupTtlOption, feedState, httpUrl, intervalOption, maxSeenOption, timeoutOption, tlsOptions } from "../common/feed.ts";
import { DEFAULT_FEED_URL, OpenphishInput } from "./input.ts";

const options = z.object({
  url: httpUrl().default(DEFAULT_FEED_URL)
    .describe("The feed to fetch: the public feed.txt, or your premium feed's URL (with format = \"jsonl\")."),
  interval: intervalOption("1h", "How often the feed is fetched. OpenPhish asks the public feed to be fetched at most hourly: shorter intervals are warned about."),
  format: z.enum(["text", "jsonl"]).default("text")
    .describe("text: one URL a line, each posted as a text event; jsonl: the premium feed, one JSON object a line, posted as it is."),
  username: z.string().min(1).optional().describe("Premium feed: user name for HTTP basic authentication."),
  password: z.string().min(1).optional().describe("Premium feed: password for HTTP basic authentication; never logged or shown."),
  timeout: timeoutOption("60s", "Longest wait for the server's answer, and for each piece of the download."),
  dedup_ttl: dedupTtlOption("A URL no longer in the feed is forgotten after this long (if it comes back later, it is posted again)."),
  max_seen: maxSeenOption("Most URLs remembered; beyond it the ones gone longest from the feed are forgotten first."),
  ...tlsOptions("Verify the server's TLS certificate.", "PEM file of CA certificates to trust."),
}).strict().superRefine((o, ctx) => {
  if ((o.username === undefined) === (o.password === undefined)) return;
  const missing = o.username === undefined ? "username" : "password";
  const other = missing === "username" ? "password" : "username";
  ctx.addIssue({ code: "custom", path: [missing], message: `required together with ${other} (premium feed basic authentication)` });
});

export type OpenphishOptions = z.infer<typeof options>;

export default defineInput({
  type: "openphish",
  description: "OpenPhish's phishing URL feed (public feed.txt or the premium JSON lines): posts each URL once",
  options,
  state: feedState,
  create(opts, ctx) {
    const input = new OpenphishInput(opts, ctx);
    return { run: () => input.run() };
  },
});
