// npm start: the bundled reference Cybex-P API receiver plus the agent with agent.config.toml,
// so data is seen flowing end to end on a fresh clone. Ctrl-C stops both.
import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { startReceiver } from "./receiver.ts";

const dir = resolve(".receiver-data");
const receiver = await startReceiver({ port: 5000, hostname: "127.0.0.1", dir, token: "dev-token" });
console.log(`reference Cybex-P API receiver on ${receiver.url} (token "dev-token"), uploads stored in ${dir}/`);
console.log(`agent control on http://127.0.0.1:8765; in another terminal try:
  npx bun agent/main.ts status
  echo '{"indicator":"198.51.100.7","type":"ip","tags":["ssh-bruteforce"]}' | npx bun agent/main.ts post --input analyst -
  ls ${dir}/
`);

const agent = spawn(process.execPath, ["agent/main.ts", "run", "-c", "agent.config.toml"], { stdio: "inherit" });
let reported = 0;
const ticker = setInterval(() => {
  if (receiver.uploads.length !== reported) {
    reported = receiver.uploads.length;
    console.log(`receiver: ${reported} uploads, ${receiver.totalLines()} events so far`);
  }
}, 2000);
const stop = () => agent.kill("SIGTERM");
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
agent.on("exit", async (code) => {
  clearInterval(ticker);
  await receiver.close();
  process.exit(code ?? 0);
});
