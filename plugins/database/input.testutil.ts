// Test scaffolding for the database input: InputTestEnv (a real spool and state store in a
// temp dir) with `database` inputs named "db", and the waits both database test files use.
import plugin from "./index.ts";
import { InputTestEnv } from "../../test/testing/plugin-harness.ts";
import { until } from "../../test/testing/until.ts";

export type DatabaseTestEnv = InputTestEnv;

export function createDatabaseTestEnv(): Promise<DatabaseTestEnv> {
  return InputTestEnv.create(plugin, { name: "db" });
}

/** The rows spooled since the last call, parsed. */
export function spooledRows(env: DatabaseTestEnv): Array<Record<string, unknown>> {
  return env.jsonLines().map((line) => JSON.parse(line) as Record<string, unknown>);
}

function pollCount(env: DatabaseTestEnv): number {
  return env.logs.filter((l) => l.includes('"msg":"polled"')).length;
}

/** Waits for `n` more polls of the input to finish. */
export async function polls(env: DatabaseTestEnv, n = 2): Promise<void> {
  const from = pollCount(env);
  await until(() => pollCount(env) >= from + n, `${n} more polls`);
}

/** Waits until `want` rows have been spooled in all (taking them into `into`). */
export async function collect(env: DatabaseTestEnv, into: Array<Record<string, unknown>>, want: number): Promise<void> {
  await until(() => {
    into.push(...spooledRows(env));
    return into.length >= want;
  }, `${want} events (have ${into.length})`);
}
