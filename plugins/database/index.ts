// The `database` input (the original module's "reading from a database"): poll a SQL query
// whose only parameter $1 is a cursor, post each row as a JSON event, and move the cursor to
// the last row's cursor_column. SQLite (node:sqlite) and PostgreSQL (the `postgres` client).
import { defineInput } from "../../agent/plugin.ts";
import { DatabaseInput, databaseState } from "./input.ts";
import { options } from "./options.ts";

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
