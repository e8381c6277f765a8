// The `database` input (the original module's "reading from a database"): poll a SQL query
// whose only parameter $1 is a cursor, post each row as a JSON event, and move the cursor to
// the last row's cursor_column. SQLite (node:sqlite) and PostgreSQL (the `postgres` client).
import { z } from "zod";
import { defineInput, pathOption } from "../../agent/plugin.ts";
import { intervalOption, timeoutOption } from "../common/feed.ts";
import { DatabaseInput, databaseState } from "./input.ts";

/** $1 as a parameter, not the start of $10. */
const CURSOR_PARAM = /\$1(?!\d)/;

const options = z.object({
  driver: z.enum(["sqlite", "postgres"]).describe("sqlite: a database file, read through the runtime's built-in SQLite; postgres: a PostgreSQL server."),
  dsn: pathOption("dsn")
    .describe("sqlite: the database file's path (or a file: or sqlite: URL), relative to the config file's folder; postgres: a postgres:// URL, e.g. \"postgres://reader:${PGPASSWORD}@db.example:5432/logs\". Its password is never logged or shown."),
  query: z.string().min(1).refine((q) => CURSOR_PARAM.test(q), {
    message: "must use $1, the cursor (e.g. \"SELECT * FROM events WHERE id > $1 ORDER BY id\")",
  }).describe("The SQL query, with $1 as its only parameter: the cursor. It must ORDER BY cursor_column; e.g. \"SELECT * FROM events WHERE id > $1 ORDER BY id\"."),
  cursor_column: z.string().min(1).describe("The result column whose value in the last row becomes the next cursor (best a strictly increasing one, like an id)."),
  cursor_start: z.union([z.number(), z.string()]).default(0)
    .describe("The cursor of the first poll (when no state is saved), e.g. 0 or \"2024-01-01T00:00:00Z\". Changing it later starts over from the new value."),
  interval: intervalOption("1m", "How often the query runs while it finds nothing new."),
  max_rows: z.number().int().min(1).max(1_000_000).default(10_000)
    .describe("Most rows read in one poll; a full page is followed by the next poll at once. With a LIMIT in the query, set it to the same number."),
  query_timeout: timeoutOption("30s", "postgres: longest run of one query (statement_timeout) and of connecting."),
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

export type DatabaseInputOptions = z.infer<typeof options>;

export default defineInput({
  type: "database",
  description: "Poll a SQL query (SQLite or PostgreSQL) with an increasing cursor column; each row is a JSON event",
  options,
  state: databaseState,
  create(opts, ctx) {
    const input = new DatabaseInput(opts, ctx);
    return { run: () => input.run() };
  },
});
