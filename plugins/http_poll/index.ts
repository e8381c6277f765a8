// The `http_poll` input (the original module's "calling an API"): request a URL on a schedule,
// read the answer as JSON, NDJSON, text or CSV (gzip/bzip2/zip undone), follow its pages, and
// post the records not posted before.
import { z } from "zod";
import { defineInput } from "../../agent/plugin.ts";
import { dedupTtlOption, httpUrl, intervalOption, timeoutOption, tlsOptions } from "../common/feed.ts";
import { HttpPoller, httpPollState } from "./poller.ts";

const options = z.object({
  url: httpUrl()
    .describe("The API to call. Credentials may be given as https://user:pass@host/ (sent as basic auth); use ${VAR} for secrets."),
  method: z.enum(["GET", "POST"]).default("GET").describe("GET or POST."),
  headers: z.record(z.string(), z.string()).default({})
    .describe("HTTP headers sent with every request (e.g. Authorization, X-Api-Key); their values are treated as secrets: never logged, and not sent to another origin."),
  body: z.string().optional()
    .describe("Request body for method = \"POST\" (sent as application/json when it is JSON and no Content-Type header is given)."),
  interval: intervalOption("5m", "From the start of one poll to the start of the next."),
  timeout: timeoutOption("30s", "Longest wait for the answer's headers, and for each piece of its body."),
  format: z.enum(["json", "ndjson", "text", "csv"]).default("json")
    .describe("json: an array of records (see records) or one object; ndjson: a JSON object a line; text: a text event a line; csv: a JSON object a row."),
  records: z.string().min(1).regex(/^[^.]+(\.[^.]+)*$/, "expected object keys joined by dots, e.g. \"data.items\"").optional()
    .describe("json: dotted path of object keys to the array of records in the answer (e.g. \"data.items\"); default: the answer itself."),
  dedup: z.boolean().default(true)
    .describe("Post only records not posted before (by dedup_key, else by content); false posts every record of every poll."),
  dedup_key: z.string().min(1).optional()
    .describe("Dotted path of the field that identifies a record: a new key, or a known key with changed content, is posted. text: \"line\" (the default anyway)."),
  dedup_ttl: dedupTtlOption("A record not seen in the source for this long is forgotten (posted again if it comes back)."),
  max_seen: z.number().int().positive().default(1_000_000)
    .describe("Most records remembered; beyond it the longest unseen are forgotten first."),
  next_field: z.string().min(1).optional()
    .describe("json: dotted path of the field holding the next page's URL (absolute or relative); pages end when it is absent, null or empty."),
  next_link_header: z.boolean().default(false)
    .describe("Follow the answer's Link header with rel=\"next\" (RFC 8288, e.g. GitHub's API) to the next page."),
  page_param: z.string().min(1).optional()
    .describe("Query parameter set to the page number (page_start, page_start + 1, ...) until a page has no records."),
  page_start: z.number().int().min(0).default(1).describe("The first page number with page_param."),
  max_pages: z.number().int().positive().default(100).describe("Most pages read in one poll."),
  csv_header: z.boolean().default(true)
    .describe("csv: the first row names the columns (skipped when csv_columns is given)."),
  csv_columns: z.array(z.string().min(1)).min(1).optional()
    .describe("csv: the column names, for an answer without a header row (csv_header = false) or to rename its columns."),
  csv_delimiter: z.string().length(1).refine((d) => d !== '"' && d !== "\r" && d !== "\n", { message: "not a quote or a line break" })
    .default(",").describe("csv: the field separator, e.g. \"\\t\" or \";\"."),
  user_agent: z.string().min(1).optional().describe("The User-Agent header; default cybexp-agent/<version>."),
  ...tlsOptions("Check the server's TLS certificate.", "PEM file of CA certificates to trust for this API."),
}).strict().superRefine((o, ctx) => {
  const issue = (path: string, message: string) => ctx.addIssue({ code: "custom", path: [path], message });
  if (o.body !== undefined && o.method !== "POST") issue("body", 'needs method = "POST"');
  if (o.format !== "json") {
    if (o.records !== undefined) issue("records", 'only for format = "json"');
    if (o.next_field !== undefined) issue("next_field", 'only for format = "json"');
  }
  const paging = [o.next_field !== undefined && "next_field", o.next_link_header && "next_link_header", o.page_param !== undefined && "page_param"]
    .filter((x): x is string => typeof x === "string");
  if (paging.length > 1) issue(paging[1]!, `choose one way of paging (${paging.join(", ")} are set)`);
  if (o.dedup_key !== undefined) {
    if (!o.dedup) issue("dedup_key", "has no use with dedup = false");
    else if (o.format === "text" && o.dedup_key !== "line") issue("dedup_key", 'format = "text" records are lines: only "line"');
  }
  if (o.format !== "csv" && o.csv_columns !== undefined) issue("csv_columns", 'only for format = "csv"');
  if (o.format === "csv" && !o.csv_header && o.csv_columns === undefined) issue("csv_columns", "required when csv_header = false");
});

export type HttpPollOptions = z.infer<typeof options>;

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
