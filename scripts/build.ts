// npm run build: one self-contained executable, dist/cybexp-agent (no Node, Bun or Deno needed to run it).
import { spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";

mkdirSync("dist", { recursive: true });
const args = ["build", "--compile", "--minify-syntax", "--minify-whitespace", "--sourcemap=none", "agent/main.ts", "--outfile", "dist/cybexp-agent"];
const r = spawnSync(process.execPath, args, { stdio: "inherit" });
if (r.status !== 0) process.exit(r.status ?? 1);
const v = spawnSync("dist/cybexp-agent", ["version"], { encoding: "utf8" });
if (v.status !== 0) {
  console.error("the built executable does not run:", v.stderr);
  process.exit(1);
}
console.log(`built dist/cybexp-agent (${v.stdout.trim()})`);
