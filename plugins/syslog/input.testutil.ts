// Test harness of the syslog input: runs it against a real spool on 127.0.0.1 listeners and
// reads back what it spooled. Shared by syslog.test.ts and tls.test.ts.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:net";
import plugin from "./index.ts";
import type { QueueLimits } from "./batcher.ts";
import { runSyslog } from "./input.ts";
import type { SyslogEvent } from "./parse.ts";
import type { InputContext, Logger } from "../../agent/plugin.ts";
import { Spool } from "../../agent/spool/index.ts";
import { StateStore } from "../../agent/state.ts";
import { createInputContext } from "../../agent/context.ts";
import type { InputCounters } from "../../agent/context.ts";
import { silentLogger } from "../../agent/log.ts";
import { drainSpool } from "../../test/testing/plugin-harness.ts";

export interface Harness {
  /** The bound address of the first listener of `proto` ("udp", "tcp", "tls"). */
  addr(proto: string): { host: string; port: number };
  /** Waits until at least `n` events were spooled; returns all spooled so far, in order (events(0): no waiting). */
  events(n: number): Promise<SyslogEvent[]>;
  counters: InputCounters;
}

/**
 * Failure injection for the spool's write path: while `failing`, the input's emitJsonLines
 * rejects with an EIO error (as a failing disk would) without reaching the spool, which stays
 * real, as do the sockets. `rejected` counts the refusals.
 */
export interface EmitFault {
  failing: boolean;
  rejected: number;
}

export interface HarnessOptions {
  spoolBytes?: number;
  limits?: QueueLimits;
  log?: Logger;
  emitFault?: EmitFault;
}

function injectEmitFault(c: InputContext, fault: EmitFault): void {
  const emit = c.emitJsonLines;
  c.emitJsonLines = (lines, opts) => {
    if (!fault.failing) return emit(lines, opts);
    fault.rejected++;
    return Promise.reject(Object.assign(new Error("EIO: i/o error, write"), { code: "EIO", errno: -5, syscall: "write" }));
  };
}

export async function withInput(raw: Record<string, unknown>, fn: (t: Harness) => Promise<void>, o: HarnessOptions = {}): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "syslog-input-"));
  const spool = await Spool.open({ dir: join(dir, "spool"), maxBytes: o.spoolBytes ?? 64 << 20, whenFull: "block", fsync: 5, log: silentLogger });
  const state = new StateStore(join(dir, "state"));
  const ac = new AbortController();
  const c = createInputContext({ name: "sys", spool, state, route: "sys", log: o.log ?? silentLogger, signal: ac.signal, hostname: "test" });
  if (o.emitFault) injectEmitFault(c, o.emitFault);
  const opts = plugin.options.parse(raw);
  const done = o.limits ? runSyslog(opts, c, o.limits) : plugin.create(opts, c).run();
  let failed: unknown;
  done.catch((err) => (failed = err));
  const got: SyslogEvent[] = [];
  try {
    const deadline = Date.now() + 3000;
    while (!(c.counters.detail.listening as string[] | undefined)?.length) {
      if (failed) throw failed;
      if (Date.now() > deadline) assert.fail("not listening");
      await new Promise((r) => setTimeout(r, 5));
    }
    await fn({
      counters: c.counters,
      addr(proto) {
        const url = (c.counters.detail.listening as string[]).find((u) => u.startsWith(proto))!;
        const u = new URL(url.replace(/^\w+:/, "http:"));
        return { host: u.hostname, port: Number(u.port) };
      },
      async events(n) {
        const until = Date.now() + 5000;
        for (;;) {
          for (const { event } of drainSpool(spool, [])) got.push(JSON.parse(event));
          if (got.length >= n) break;
          if (Date.now() > until) assert.fail(`expected ${n} events, got ${got.length}`);
          await new Promise((r) => setTimeout(r, 5));
        }
        return got;
      },
    });
  } finally {
    const t0 = Date.now();
    ac.abort();
    await done.catch(() => {});
    assert.ok(Date.now() - t0 < 1000, "stops within a second");
    await spool.close();
    await rm(dir, { recursive: true, force: true });
  }
}

export function sendTcp(port: number, chunks: Uint8Array[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect(port, "127.0.0.1", async () => {
      for (const c of chunks) {
        s.write(c);
        await new Promise((r) => setTimeout(r, 2));
      }
      s.end(() => resolve());
    });
    s.on("error", reject);
  });
}

/** `bytes` cut at the given offsets (taken modulo its length + 1). */
export function split(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  let prev = 0;
  for (const p of points) {
    chunks.push(bytes.slice(prev, p));
    prev = p;
  }
  chunks.push(bytes.slice(prev));
  return chunks;
}

// Debian's loggen (syslog-ng-core), a real syslog client, against the real input.
export const LOGGEN = ["/usr/bin/loggen", "/usr/sbin/loggen"].find((p) => existsSync(p));

export function loggen(args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(LOGGEN!, args, { timeout: 60_000, env }, (err, stdout, stderr) => (err ? reject(new Error(`loggen: ${stderr || err}`)) : resolve(stderr + stdout))),
  );
}
