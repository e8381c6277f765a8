// `cybexp-agent console`: a one-time login URL for the running daemon's web console, printed as
// the last line of standard output so that scripts can take it with `tail -1`.
import type { Parsed } from "../cli.ts";
import { callDaemon, EXIT, loadConfigForClient, requireDaemon } from "./client.ts";

export async function consoleCommand(p: Parsed): Promise<number> {
  const config = await loadConfigForClient(p.configPath, p.plugins);
  const rc = await requireDaemon(config);
  const { body } = await callDaemon(rc, "POST", "/console/login-code");
  const { url, expires_in_s } = body as { url: string; expires_in_s: number };
  console.log(`Open this link in a browser on this host to log in to the console (it works once, within ${Math.round(expires_in_s / 60)} minutes):`);
  console.log(url);
  return EXIT.ok;
}
