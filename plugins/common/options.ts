// Option fragments the polling inputs share: zod pieces with the same checks everywhere. Each
// input gives its own default and description, so the config's documentation speaks of that
// input's source.
//
//   const options = z.object({
//     url: httpUrl().describe("..."),
//     interval: intervalOption("1h", "How often ..."),
//     timeout: timeoutOption("60s", "Longest wait ..."),
//     dedup_ttl: dedupTtlOption("A URL no longer in the feed ..."),
//     max_seen: maxSeenOption("Most URLs remembered ..."),
//     ...tlsOptions("Verify the server's TLS certificate.", "PEM file of CA certificates to trust."),
//   }).strict();
import { z } from "zod";
import { pathOption } from "../../agent/plugin.ts";
import { duration } from "../../agent/units.ts";

export function isHttpUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return u.protocol === "http:" || u.protocol === "https:";
  } catch {
    return false;
  }
}

/** A URL option that must be http:// or https://. */
export const httpUrl = () => z.string().refine(isHttpUrl, { message: "expected an http:// or https:// URL" });

/**
 * How often the source is polled. Only 10 ms is refused: a source's own minimum is warned
 * about at start (warnShortInterval), so tests can poll fast.
 */
export const intervalOption = (byDefault: string, description: string) =>
  duration().prefault(byDefault).refine((ms) => ms >= 10, { message: "expected at least 10ms" }).describe(description);

/** A positive duration bounding a wait for the source (a request, a query). */
export const timeoutOption = (byDefault: string, description: string) =>
  duration().prefault(byDefault).refine((ms) => ms >= 1, { message: "expected a positive duration" }).describe(description);

/** How long a record gone from the source is remembered (default 30 days). */
export const dedupTtlOption = (description: string) => duration().prefault("30d").describe(description);

/** Most entries in the seen-set (default 1,000,000, at least 1000). */
export const maxSeenOption = (description: string) => z.number().int().min(1000).default(1_000_000).describe(description);

/** tls_verify (default true) and ca_file, to spread into an HTTP source's options. */
export const tlsOptions = (verifyDescription: string, caFileDescription: string) => ({
  tls_verify: z.boolean().default(true).describe(verifyDescription),
  ca_file: pathOption("readable").optional().describe(`${caFileDescription} Relative to the config file's folder.`),
});
