#!/usr/bin/env bun
// Entry point of the cybexp-agent executable.
import { main } from "./cli.ts";

const code = await main(process.argv.slice(2));
process.exit(code);
