// `cybexp-agent test`: a dry run of inputs. They run as in the agent (the same plugins, spool
// and batching) but on a throwaway data directory, and each upload is printed instead of sent.
// - The throwaway directory starts with a copy of the inputs' saved state, so what is printed
//   is what the next real run would send; the real data_dir is only read, never written: no
//   checkpoint and no seen-set moves, and a real run afterwards sends all of it.
// - Inputs that read a source (polls, files) make one pass; inputs that listen run for the
//   duration (default 10 s).
// - Standard output carries the uploads only (a header line, then the events); what the run
//   did goes to standard error. Exit 1 when an input failed.
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Parsed } from "../cli.ts";
import { sleep } from "../backoff.ts";
import { loadConfig, type InputConfig } from "../config.ts";
import { Forwarder } from "../forwarder.ts";
import type { OutputTransport } from "../output/transport.ts";
import { createLogger, stderrSink } from "../log.ts";
import type { EventKind } from "../plugin.ts";
import { Spool } from "../spool/index.ts";
import { StateStore } from "../state.ts";
import { Supervisor } from "../supervisor.ts";
import type { RouteMeta } from "../upload.ts";
import { formatBytes } from "../units.ts";
import { CliError, EXIT, writeStdout } from "./client.ts";
import { plural } from "./format.ts";

const DEFAULT_DURATION_MS = 10_000;
/** How often the run looks whether the inputs are done and the spool is empty. */
const LOOK_MS = 50;

export async function testCommand(p: Parsed): Promise<number> {
  const config = await loadConfig(p.configPath, p.plugins);
  const inputs = chooseInputs(config.inputs, p.positionals);
  const durationMs = p.durationMs ?? DEFAULT_DURATION_MS;
  const dir = mkdtempSync(join(tmpdir(), "cybexp-agent-test-"));
  // Warnings and errors of the run, in the format the config asks for; stdout stays the uploads'.
  const log = createLogger(config.agent.logLevel === "debug" ? "debug" : "warn", stderrSink, config.agent.logFormat);
  const realState = new StateStore(join(config.agent.dataDir, "state"));
  const state = new StateStore(join(dir, "state"));
  for (const input of inputs.values()) copyStateFile(realState, state, input.key);

  const spool = await Spool.open({ dir: join(dir, "spool"), maxBytes: config.spool.maxBytes, whenFull: "block", fsync: "never", log: log.child({ component: "spool" }) });
  const printed = new Map<string, number>();
  // The output: standard output, one batch at a time, so that uploads print whole and in order.
  const printer: OutputTransport = {
    type: "test",
    concurrency: 1,
    recordPerBatch: false,
    destination: () => "standard output",
    async send(batch) {
      printed.set(batch.meta.input, (printed.get(batch.meta.input) ?? 0) + batch.events);
      await writeStdout(uploadText(batch.meta, batch.kind, batch.records.map((r) => r.payload), batch.events));
      return { type: "sent" };
    },
  };
  const forwarder = new Forwarder({
    spool,
    output: printer,
    batchFor: (meta) => inputs.get(meta.input)?.batch ?? config.output.batch,
    deadLetterDir: join(dir, "dead-letter"),
    log: log.child({ component: "output" }),
  });
  const supervisor = new Supervisor({ spool, state, plugins: p.plugins, log, hostname: config.agent.hostname, once: true, dryRun: true });

  const interrupted = new AbortController();
  const onSignal = () => interrupted.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const listening = [...inputs.values()].filter((i) => p.plugins[i.type]!.listens).map((i) => i.key);
  const reading = [...inputs.values()].filter((i) => !p.plugins[i.type]!.listens).map((i) => i.key);
  process.stderr.write(
    `test: ${[
      reading.length ? `one pass of ${reading.join(", ")}` : "",
      listening.length ? `listening ${Math.round(durationMs / 100) / 10}s with ${listening.join(", ")}` : "",
    ].filter(Boolean).join("; ")}; nothing is sent\n`,
  );
  try {
    forwarder.start();
    await supervisor.apply(inputs);
    const listenUntil = Date.now() + durationMs;
    // Readers end by themselves; listeners when the duration is up.
    while (!interrupted.signal.aborted) {
      const readersDone = reading.every((name) => !supervisor.running(name));
      if (readersDone && (listening.length === 0 || Date.now() >= listenUntil)) break;
      await sleep(LOOK_MS, interrupted.signal);
    }
    const status = supervisor.status();
    await supervisor.stopAll();
    // Everything the inputs handed over is printed before the run ends (batches wait at most max_wait).
    while (spool.stats().events > 0 && !interrupted.signal.aborted) await sleep(LOOK_MS, interrupted.signal);
    await forwarder.stop(1000);
    let failed = 0;
    for (const s of status) {
      const events = printed.get(s.name) ?? 0;
      const what = s.state === "failed" ? `failed: ${s.last_error}` : listening.includes(s.name) ? "listened" : "read to its end";
      if (s.state === "failed") failed++;
      process.stderr.write(`test: ${s.name} [${s.type}] ${what}; ${plural(events, "event")} (${formatBytes(s.bytes)}) would be sent\n`);
    }
    if (interrupted.signal.aborted) process.stderr.write("test: interrupted; what was printed is what the inputs had handed over\n");
    return failed ? EXIT.error : EXIT.ok;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await supervisor.stopAll();
    await forwarder.stop(0);
    await spool.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The named inputs (each must exist), or every enabled one. Named disabled inputs run too. */
function chooseInputs(all: Map<string, InputConfig>, names: string[]): Map<string, InputConfig> {
  const chosen = new Map<string, InputConfig>();
  if (names.length === 0) {
    for (const [name, c] of all) if (c.enabled) chosen.set(name, c);
    if (chosen.size === 0) throw new CliError("no enabled input in the config: name the inputs to test");
    return chosen;
  }
  const unknown = names.filter((n) => !all.has(n));
  if (unknown.length) throw new CliError(`no input named ${unknown.map((n) => `"${n}"`).join(", ")} in the config (inputs: ${[...all.keys()].join(", ") || "none"})`);
  for (const name of names) chosen.set(name, { ...all.get(name)!, enabled: true });
  return chosen;
}

/** The input's saved state, copied into the throwaway store (nothing is written to the real one). */
function copyStateFile(from: StateStore, to: StateStore, key: string): void {
  try {
    mkdirSync(to.dir, { recursive: true, mode: 0o700 });
    copyFileSync(from.fileFor(key), to.fileFor(key));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return; // never ran, or no state: it starts afresh
    throw new CliError(`cannot read the saved state of input ${key} (${from.fileFor(key)}): ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
}

/** One upload as printed: a header line, then its events, one a line. */
export function uploadText(meta: RouteMeta, kind: EventKind, payloads: Uint8Array[], events: number): string {
  const header = `=== upload input=${meta.input} name=${meta.name} orgid=${meta.orgid} typetag=${meta.typetag} timezone=${meta.timezone} kind=${kind} events=${events}\n`;
  const decoder = new TextDecoder();
  let body = "";
  for (const p of payloads) body += decoder.decode(p);
  return header + (body.endsWith("\n") || body === "" ? body : body + "\n");
}
