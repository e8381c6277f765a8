// `cybexp-agent tap`: the daemon's GET /tap on standard output, one JSON object a line, and what
// sampling left out as notices on standard error.
import type { Parsed } from "../cli.ts";
import { errorMessage } from "../errortext.ts";
import { CliError, EXIT, loadConfigForClient, noAnswer, parseAnswer, requireDaemon, writeStdout } from "./client.ts";
import { readSse } from "./sse.ts";

export async function tapCommand(p: Parsed): Promise<number> {
  const config = await loadConfigForClient(p.configPath, p.plugins);
  const rc = await requireDaemon(config);
  const query = new URLSearchParams(p.positionals.map((name) => ["input", name]));
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    let res: Response;
    try {
      res = await fetch(`${rc.url}/tap?${query}`, { headers: { authorization: `Bearer ${rc.token}` }, signal: stop.signal });
    } catch (err) {
      if (stop.signal.aborted) return EXIT.ok;
      throw noAnswer(rc, err);
    }
    if (!res.ok || !res.body) throw new CliError((parseAnswer(await res.text()) as { error?: string }).error || `HTTP ${res.status}`);
    const what = p.positionals.length ? `input${p.positionals.length > 1 ? "s" : ""} ${p.positionals.join(", ")}` : "every input";
    process.stderr.write(`tapping ${what} (at most 100 events a second; Ctrl-C to end)\n`);
    let printed = 0;
    try {
      for await (const m of readSse(res.body)) {
        if (m.event === "skipped") {
          const { skipped } = JSON.parse(m.data) as { skipped: number };
          process.stderr.write(`tap: ${skipped} event${skipped === 1 ? "" : "s"} not shown (sampling, or this reader was slower than the events)\n`);
        } else if (m.event === "message") {
          await writeStdout(m.data + "\n");
          if (p.limit !== undefined && ++printed >= p.limit) return EXIT.ok;
        }
      }
    } catch (err) {
      if (stop.signal.aborted) return EXIT.ok;
      throw new CliError(`the tap ended: ${errorMessage(err)}`);
    }
    if (stop.signal.aborted) return EXIT.ok;
    throw new CliError("the daemon ended the tap (it stopped)");
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    stop.abort();
  }
}
