// The `database` input's options.
import { z } from "zod";
import { pathOption } from "../../agent/plugin.ts";
import { intervalOption, timeoutOption } from "../common/options.ts";

/** $1 as a parameter, not the start of $10. */
const CURSOR_PARAM = /\$1(?!\d)/;

export const options = z.object({
  driver: z.enum(["sqlite", "postgres"]).describe("sqlite: a database file, read through the runtime's built-in SQLite; postgres: a PostgreSQL server."),
  dsn: pathOption("dsn")
    .describe("sqlite: the database file's path, a file: URL or a sqlite: URL (\"db/events.sqlite\", \"file:db/events.sqlite\", \"sqlite:db/events.sqlite\"), relative to the config file's folder; postgres: a postgres:// (or postgresql://) URL, e.g. \"postgres://reader:${PGPASSWORD}@db.example:5432/logs?sslmode=require\", best with the password as ${VAR}. The usual PG* environment variables (PGPASSWORD, PGHOST, ...) fill in what the URL leaves out; the password is never logged or shown."),
  query: z.string().min(1).refine((q) => CURSOR_PARAM.test(q), {
    message: "must use $1, the cursor (e.g. \"SELECT * FROM events WHERE id > $1 ORDER BY id\")",
  }).describe("The SQL query, with $1 as its only parameter: the cursor (a query without $1 is a config error). It must ORDER BY cursor_column; e.g. \"SELECT * FROM events WHERE id > $1 ORDER BY id\"."),
  cursor_column: z.string().min(1).describe("The result column whose value in the last row becomes the next cursor: best a strictly increasing one (an id, a sequence). Its values must be numbers, strings or timestamps."),
  cursor_start: z.union([z.number(), z.string()]).default(0)
    .describe("The cursor of the first poll (when no state is saved), e.g. 0 or \"2024-01-01T00:00:00Z\". Changing it later starts over from the new value (the saved cursor is dropped)."),
  interval: intervalOption("1m", "How often the query runs while it finds nothing new."),
  max_rows: z.number().int().min(1).max(1_000_000).default(10_000)
    .describe("Most rows read in one poll; a poll that fills its page is followed by the next at once, so a backlog is read in pages of this size. With a LIMIT in the query, set it to the same number."),
  query_timeout: timeoutOption("30s", "postgres: longest run of one query (the session's statement_timeout) and of connecting; a query that takes longer is cancelled, reported and retried."),
}).strict().superRefine((o, ctx) => {
  if (o.driver !== "postgres") return;
  let ok = false;
  try {
    const u = new URL(o.dsn);
    ok = u.protocol === "postgres:" || u.protocol === "postgresql:";
  } catch {
    ok = false;
  }
  // The dsn may hold a password: the message never repeats it.
  if (!ok) ctx.addIssue({ code: "custom", path: ["dsn"], message: "expected a postgres:// or postgresql:// URL" });
});

export type DatabaseOptions = z.infer<typeof options>;
