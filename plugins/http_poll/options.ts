// The `http_poll` input's options.
import { z } from "zod";
import { dedupTtlOption, httpUrl, intervalOption, timeoutOption, tlsOptions } from "../common/options.ts";

export const options = z.object({
  url: httpUrl()
    .describe("The API, http:// or https://; https://user:pass@host/... sends HTTP basic auth (to this origin only). Use ${VAR} for secrets."),
  method: z.enum(["GET", "POST"]).default("GET").describe("GET or POST."),
  headers: z.record(z.string(), z.string()).default({})
    .describe("Headers sent with every request, a table of strings (Authorization, X-Api-Key, Accept, ...); their values are secrets: never logged, and not sent to another origin."),
  body: z.string().optional()
    .describe("The request body, only with method = \"POST\"; when it is JSON and headers has no Content-Type, it is sent as application/json."),
  interval: intervalOption("5m", "From the start of one poll to the start of the next (at least 10ms; under 1s a warning is logged)."),
  timeout: timeoutOption("30s", "Longest wait for the answer's headers (over redirects), and for each piece of its body."),
  format: z.enum(["json", "ndjson", "text", "csv"]).default("json")
    .describe("json: an array of records (see records) or one object; ndjson: a JSON object a line; text: a text event a line; csv: a JSON object a row."),
  records: z.string().min(1).regex(/^[^.]+(\.[^.]+)*$/, "expected object keys joined by dots, e.g. \"data.items\"").optional()
    .describe("format = \"json\": object keys joined by dots leading to the array of records, e.g. \"data.items\" for {\"data\": {\"items\": [...]}}; default: the answer itself."),
  dedup: z.boolean().default(true)
    .describe("Post only records not posted before (by dedup_key, else by content); false posts every record of every poll, for APIs that return only new data (a since or cursor in the URL)."),
  dedup_key: z.string().min(1).optional()
    .describe("The field that identifies a record, a dotted path (\"id\", \"Event.uuid\", a CSV column name): a new key, or a known key with changed content, is posted; without it records are identified by their content. format = \"text\": only \"line\", which is what text dedup does anyway."),
  dedup_ttl: dedupTtlOption("A record the source has not shown for this long is forgotten: if it comes back it is posted again."),
  max_seen: z.number().int().positive().default(1_000_000)
    .describe("Most records remembered; past it the ones unseen longest are forgotten first."),
  next_field: z.string().min(1).optional()
    .describe("format = \"json\": dotted path of the field holding the next page's URL, absolute or relative to the page's URL (\"next\", \"links.next\"); paging stops when it is absent, null, \"\" or false."),
  next_link_header: z.boolean().default(false)
    .describe("Follow the answer's Link: <...>; rel=\"next\" header (RFC 8288; GitHub, GitLab and many REST APIs) to the next page, in any format."),
  page_param: z.string().min(1).optional()
    .describe("Query parameter set to the page number (page_start, page_start + 1, ...) until a page has no records. Only one of next_field, next_link_header and page_param may be set."),
  page_start: z.number().int().min(0).default(1).describe("The first page number with page_param."),
  max_pages: z.number().int().positive().default(100).describe("Most pages read in one poll; more remaining is logged and shown in the status."),
  csv_header: z.boolean().default(true)
    .describe("format = \"csv\": the first row names the columns (skipped when csv_columns is given)."),
  csv_columns: z.array(z.string().min(1)).min(1).optional()
    .describe("format = \"csv\": the column names, for an answer without a header row (csv_header = false, then required) or to replace the header row's names."),
  csv_delimiter: z.string().length(1).refine((d) => d !== '"' && d !== "\r" && d !== "\n", { message: "not a quote or a line break" })
    .default(",").describe("format = \"csv\": the field separator, one character, e.g. \";\" or \"\\t\"."),
  user_agent: z.string().min(1).optional().describe("The User-Agent header; default cybexp-agent/<version>."),
  ...tlsOptions(
    "Check the server's certificate. Under Deno it cannot be turned off per request (a warning says so).",
    "PEM file of CA certificates to trust (a private CA); one that does not exist or cannot be read is a config error naming the key and the path.",
  ),
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
