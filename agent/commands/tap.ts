import type { Parsed } from "../cli.ts";
import { CliError } from "./client.ts";

export async function tapCommand(_p: Parsed): Promise<number> {
  throw new CliError("not built yet");
}
