#!/usr/bin/env bun
// Entry point of the cybexp-agent executable, and the one place that wires the input plugins
// into the core: nothing else in agent/ imports plugins/.
import { inputPlugins } from "../plugins/index.ts";
import { main } from "./cli.ts";

const code = await main(process.argv.slice(2), inputPlugins);
process.exit(code);
