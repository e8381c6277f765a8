// Real nats-server processes for tests: a single node, or a 3-node JetStream cluster, each on
// free ports of 127.0.0.1 with its own temp store, written as a small config file per node.
//
//   const skip = natsSkip;                              // a reason string, or false
//   const srv = await startNatsServer({ jetstream: true });
//   srv.url                                             // nats://127.0.0.1:PORT
//   await srv.kill9(); await srv.restart();             // same port, same store
//   await srv.close();                                  // stopped, its folder removed
//
//   const cluster = await startNatsCluster(3);          // n1..n3, JetStream meta leader elected
//   const leader = await cluster.leaderOf("STREAM");    // "n2"
//   await cluster.node(leader).kill9();
//   await cluster.close();
//
// Readiness is checked, never slept for: the client port answers with the NATS INFO line, and
// JetStream answers (account info; in a cluster the monitoring endpoint /jsz shows a meta
// leader with every peer current). Every process started here is killed at close(), and with
// SIGKILL when the test process exits, whatever happened.
//
// Also here: messages in the format the `nats` output publishes (edgeMessage), and a TCP proxy
// that can swallow what clients send and cut connections (a network that fails mid-stream).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect as netConnect, createServer, type Server, type Socket } from "node:net";
import { freePort } from "./ports.ts";
export { freePort };
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { headers as natsHeaders, type MsgHdrs, type NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager, type PubAck } from "@nats-io/jetstream";
import { errorFirstLine } from "../../agent/errortext.ts";
import { NATS_DEFAULTS, NATS_HEADERS, natsSubject } from "../../agent/nats.ts";

/** How long a server (or a cluster) gets to become ready. */
const READY_MS = 30_000;

// ---- finding nats-server ------------------------------------------------------------------

/** The nats-server executable: $NATS_SERVER, else on PATH, else /usr/sbin or /usr/bin. */
export function natsServerBinary(): string | null {
  const fromEnv = process.env.NATS_SERVER;
  if (fromEnv) return existsSync(fromEnv) ? fromEnv : null;
  const dirs = [...(process.env.PATH ?? "").split(delimiter).filter(Boolean), "/usr/sbin", "/usr/bin", "/usr/local/bin"];
  for (const dir of dirs) {
    const path = join(dir, "nats-server");
    if (existsSync(path)) return path;
  }
  return null;
}

/** Why NATS tests cannot run here (a skip reason), or false when they can. */
export const natsSkip: string | false = (() => {
  const bin = natsServerBinary();
  if (!bin) return "nats-server not found (install the Debian package `nats-server`, or set NATS_SERVER)";
  const r = spawnSync(bin, ["--version"], { encoding: "utf8", timeout: 10_000 });
  if (r.status !== 0) return `${bin} --version failed: ${errorFirstLine(r.error ?? r.stderr ?? "exit " + r.status)}`;
  return false;
})();

// ---- processes ------------------------------------------------------------------------------

/** Every server process still running, killed with SIGKILL when the test process exits. */
const live = new Set<ChildProcess>();
let exitHook = false;
function track(child: ChildProcess): void {
  live.add(child);
  child.once("exit", () => live.delete(child));
  if (!exitHook) {
    exitHook = true;
    process.once("exit", () => {
      for (const c of live) {
        try {
          c.kill("SIGKILL");
        } catch {
          // gone already
        }
      }
    });
  }
}


const pause = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** True once something on 127.0.0.1:port answers with a NATS INFO line. */
function answersNats(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = netConnect({ host: "127.0.0.1", port });
    let text = "";
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 1000);
    sock.on("data", (d: Uint8Array) => {
      text += new TextDecoder().decode(d);
      if (text.includes("\r\n")) done(text.startsWith("INFO "));
    });
    sock.on("error", () => done(false));
    sock.on("close", () => done(false));
  });
}

/** One nats-server process with a fixed config file: started, killed and started again. */
class ServerProcess {
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  /** The last 32 KiB of what the server printed (for failure messages). */
  output = "";

  constructor(readonly name: string, readonly port: number, readonly configFile: string) {}

  get running(): boolean {
    return this.child !== null;
  }

  /** Spawns the server and waits until its client port answers; throws with its output if it exits first. */
  async start(): Promise<void> {
    if (this.child) return;
    const child = spawn(natsServerBinary()!, ["-c", this.configFile], { stdio: ["ignore", "pipe", "pipe"] });
    track(child);
    this.child = child;
    const keep = (d: Uint8Array) => {
      this.output = (this.output + new TextDecoder().decode(d)).slice(-32_768);
    };
    child.stdout!.on("data", keep);
    child.stderr!.on("data", keep);
    let exitedEarly = false;
    this.exited = new Promise<void>((resolve) => {
      child.once("exit", () => {
        exitedEarly = true;
        if (this.child === child) this.child = null;
        resolve();
      });
      child.once("error", () => resolve());
    });
    const end = Date.now() + READY_MS;
    while (!(await answersNats(this.port))) {
      if (exitedEarly || this.child !== child) throw new Error(`nats-server ${this.name} exited before it listened on ${this.port}:\n${this.output.slice(-2000)}`);
      if (Date.now() > end) {
        await this.kill9();
        throw new Error(`nats-server ${this.name} did not listen on ${this.port} within ${READY_MS} ms:\n${this.output.slice(-2000)}`);
      }
      await pause(20);
    }
  }

  async kill9(): Promise<void> {
    const child = this.child;
    if (!child) return;
    child.kill("SIGKILL");
    await this.exited;
    this.child = null;
  }

  /** SIGTERM (a clean shutdown), SIGKILL after 10 s. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    child.kill("SIGTERM");
    const t = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await this.exited;
    clearTimeout(t);
    this.child = null;
  }
}

/** A client for tests: no reconnects unless asked, a short timeout. */
export async function natsClient(servers: string | string[], opts: { reconnect?: boolean; timeout?: number; token?: string; user?: string; pass?: string } = {}): Promise<NatsConnection> {
  const list = (Array.isArray(servers) ? servers : [servers]).map((s) => s.replace(/^nats:\/\//, ""));
  return connect({
    servers: list,
    ...(opts.token ? { token: opts.token } : {}),
    ...(opts.user ? { user: opts.user, pass: opts.pass } : {}),
    name: "cybexp-test",
    timeout: opts.timeout ?? 5000,
    reconnect: opts.reconnect ?? false,
    maxReconnectAttempts: opts.reconnect ? -1 : 0,
    reconnectTimeWait: 250,
  });
}

/** Waits until JetStream answers account info on one of `servers` (through a fresh connection each try). */
async function waitJetStream(servers: string[], what: string, ms = READY_MS, extra?: () => Promise<boolean>, auth?: { token?: string; user?: string; pass?: string }): Promise<void> {
  const end = Date.now() + ms;
  let last = "";
  for (;;) {
    let nc: NatsConnection | undefined;
    try {
      nc = await natsClient(servers, { timeout: 2000, ...auth });
      const jsm = await jetstreamManager(nc, { timeout: 2000 });
      await jsm.getAccountInfo();
      if (!extra || (await extra())) return;
      last = "peers not all current yet";
    } catch (err) {
      last = errorFirstLine(err);
    } finally {
      await nc?.close().catch(() => {});
    }
    if (Date.now() > end) throw new Error(`${what}: JetStream did not answer within ${ms} ms (${last})`);
    await pause(50);
  }
}

// ---- a single node --------------------------------------------------------------------------

export interface NatsNode {
  /** "n1" ... in a cluster, "nats" for a single node: the server_name. */
  readonly name: string;
  /** nats://127.0.0.1:PORT */
  readonly url: string;
  readonly port: number;
  readonly running: boolean;
  /** What the server printed lately. */
  output(): string;
  /** SIGKILL; resolves once it is gone. */
  kill9(): Promise<void>;
  /** Starts it again on the same port with the same store (after kill9 or stop), and waits until it answers. */
  restart(): Promise<void>;
}

export interface NatsServer extends NatsNode {
  /** SIGTERM, a clean shutdown. */
  stop(): Promise<void>;
  /** Stops it and removes its folder. Idempotent. */
  close(): Promise<void>;
}

export interface NatsServerOptions {
  /** JetStream on, with a store in the server's temp folder. Default true. */
  jetstream?: boolean;
  /** The client port; default a free one. */
  port?: number;
  /** More lines of the server's config file (e.g. `authorization { token: "..." }`). */
  config?: string[];
  /** How the harness's own readiness check logs in, when `config` asks for it. */
  auth?: { token?: string; user?: string; pass?: string };
}

export async function startNatsServer(opts: NatsServerOptions = {}): Promise<NatsServer> {
  if (natsSkip) throw new Error(natsSkip);
  const jsOn = opts.jetstream ?? true;
  const dir = await mkdtemp(join(tmpdir(), "nats-test-"));
  let proc: ServerProcess | undefined;
  try {
    // Another process may take a free port before the server binds it: try a few.
    for (let attempt = 1; ; attempt++) {
      const port = opts.port ?? (await freePort());
      const configFile = join(dir, "nats.conf");
      const config = [
        `server_name: "nats"`,
        `listen: "127.0.0.1:${port}"`,
        jsOn ? `jetstream { store_dir: ${JSON.stringify(join(dir, "store"))} }` : "",
        ...(opts.config ?? []),
        "",
      ].join("\n");
      await writeFile(configFile, config);
      proc = new ServerProcess("nats", port, configFile);
      try {
        await proc.start();
        break;
      } catch (err) {
        if (opts.port !== undefined || attempt >= 3 || !/address already in use/i.test(proc.output)) throw err;
      }
    }
    const p = proc;
    const url = `nats://127.0.0.1:${p.port}`;
    const ready = () => (jsOn ? waitJetStream([url], `nats-server on ${p.port}`, READY_MS, undefined, opts.auth) : Promise.resolve());
    await ready();
    let closed = false;
    return {
      name: "nats",
      url,
      port: p.port,
      get running() {
        return p.running;
      },
      output: () => p.output,
      kill9: () => p.kill9(),
      stop: () => p.stop(),
      async restart() {
        await p.start();
        await ready();
      },
      async close() {
        if (closed) return;
        closed = true;
        await p.stop().catch(() => p.kill9());
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await proc?.kill9().catch(() => {});
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

// ---- a cluster ------------------------------------------------------------------------------

export interface NatsClusterNode extends NatsNode {
  /** http://127.0.0.1:PORT, the node's monitoring endpoint (/jsz, /healthz). */
  readonly monitorUrl: string;
}

export interface NatsCluster {
  /** Every node's client URL, n1 first. */
  readonly urls: string[];
  readonly nodes: NatsClusterNode[];
  node(name: string): NatsClusterNode;
  /** The server name of the stream's leader (asks $JS.API.STREAM.INFO.<stream>), waiting out an election. */
  leaderOf(stream: string, ms?: number): Promise<string>;
  /**
   * Every running node answers, JetStream answers account info, and the meta group has a leader
   * with every other running node current.
   */
  waitReady(ms?: number): Promise<void>;
  /** Kills every node and removes the folder. Idempotent. */
  close(): Promise<void>;
}

interface JszMeta {
  meta_cluster?: { leader?: string; replicas?: Array<{ name: string; current: boolean; offline?: boolean }> };
}

export async function startNatsCluster(size = 3): Promise<NatsCluster> {
  if (natsSkip) throw new Error(natsSkip);
  const dir = await mkdtemp(join(tmpdir(), "nats-cluster-"));
  const procs: ServerProcess[] = [];
  try {
    const ports = await distinctFreePorts(size * 3);
    const specs = Array.from({ length: size }, (_, i) => ({
      name: `n${i + 1}`,
      client: ports[i * 3]!,
      route: ports[i * 3 + 1]!,
      monitor: ports[i * 3 + 2]!,
    }));
    for (const s of specs) {
      const routes = specs.filter((o) => o !== s).map((o) => JSON.stringify(`nats-route://127.0.0.1:${o.route}`));
      await mkdir(join(dir, s.name), { recursive: true });
      const config = [
        `server_name: "${s.name}"`,
        `listen: "127.0.0.1:${s.client}"`,
        `http: "127.0.0.1:${s.monitor}"`,
        `jetstream { store_dir: ${JSON.stringify(join(dir, s.name, "store"))} }`,
        `cluster {`,
        `  name: "cybexp-test"`,
        `  listen: "127.0.0.1:${s.route}"`,
        `  routes: [${routes.join(", ")}]`,
        `}`,
        "",
      ].join("\n");
      const configFile = join(dir, s.name, "nats.conf");
      await writeFile(configFile, config);
      procs.push(new ServerProcess(s.name, s.client, configFile));
    }
    await Promise.all(procs.map((p) => p.start()));

    const nodes: NatsClusterNode[] = procs.map((p, i) => ({
      name: p.name,
      url: `nats://127.0.0.1:${p.port}`,
      port: p.port,
      monitorUrl: `http://127.0.0.1:${specs[i]!.monitor}`,
      get running() {
        return p.running;
      },
      output: () => p.output,
      kill9: () => p.kill9(),
      restart: () => p.start(),
    }));
    const urls = nodes.map((n) => n.url);
    const runningUrls = () => nodes.filter((n) => n.running).map((n) => n.url);

    /** The meta group as one running node sees it: a leader and every other running node current. */
    const metaReady = async (): Promise<boolean> => {
      const up = nodes.filter((n) => n.running);
      for (const n of up) {
        let jsz: JszMeta;
        try {
          const res = await fetch(`${n.monitorUrl}/jsz`, { signal: AbortSignal.timeout(2000) });
          jsz = (await res.json()) as JszMeta;
        } catch {
          return false;
        }
        const meta = jsz.meta_cluster;
        if (!meta?.leader) return false;
        if (meta.leader !== n.name) continue;
        // The leader's view: every other running node is a current peer.
        const current = new Set((meta.replicas ?? []).filter((r) => r.current && !r.offline).map((r) => r.name));
        return up.every((o) => o.name === n.name || current.has(o.name));
      }
      return false;
    };

    const cluster: NatsCluster = {
      urls,
      nodes,
      node(name) {
        const n = nodes.find((x) => x.name === name);
        if (!n) throw new Error(`no node ${name} (nodes: ${nodes.map((x) => x.name).join(", ")})`);
        return n;
      },
      async leaderOf(stream, ms = READY_MS) {
        const end = Date.now() + ms;
        let last = "";
        for (;;) {
          let nc: NatsConnection | undefined;
          try {
            nc = await natsClient(runningUrls(), { timeout: 2000 });
            const res = await nc.request(`$JS.API.STREAM.INFO.${stream}`, undefined, { timeout: 2000 });
            const info = res.json<{ cluster?: { leader?: string }; error?: { description?: string } }>();
            if (info.error) last = info.error.description ?? JSON.stringify(info.error);
            else if (info.cluster?.leader) return info.cluster.leader;
            else last = "no leader yet";
          } catch (err) {
            last = errorFirstLine(err);
          } finally {
            await nc?.close().catch(() => {});
          }
          if (Date.now() > end) throw new Error(`stream ${stream} has no leader after ${ms} ms (${last})`);
          await pause(50);
        }
      },
      waitReady: (ms = READY_MS) => waitJetStream(runningUrls(), "cluster", ms, metaReady),
      async close() {
        await Promise.all(procs.map((p) => p.kill9().catch(() => {})));
        await rm(dir, { recursive: true, force: true });
      },
    };
    await cluster.waitReady();
    return cluster;
  } catch (err) {
    await Promise.all(procs.map((p) => p.kill9().catch(() => {})));
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

async function distinctFreePorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

// ---- streams and messages as the agent makes them --------------------------------------------

/** Creates (or updates) a stream for the edge format's subjects; R1 unless `replicas`. */
export async function createStream(jsm: JetStreamManager, opts: { name?: string; subjects?: string[]; replicas?: number } = {}): Promise<void> {
  const name = opts.name ?? NATS_DEFAULTS.stream;
  const cfg = { name, subjects: opts.subjects ?? [`${NATS_DEFAULTS.subjectPrefix}.>`], num_replicas: opts.replicas ?? 1 };
  try {
    await jsm.streams.add(cfg);
  } catch (err) {
    if (!/already in use|already exists/i.test(errorFirstLine(err))) throw err;
    await jsm.streams.update(name, cfg);
  }
}

export interface EdgeParts {
  name: string;
  orgid: string;
  typetag: string;
  timezone?: string;
  kind: "json" | "text";
  host?: string;
  /** Nats-Msg-Id; default a fresh random id. */
  id?: string;
}

export interface EdgeMessage {
  subject: string;
  headers: MsgHdrs;
  body: Uint8Array;
}

/**
 * A message as the `nats` output publishes a batch: subject `<prefix>.<orgid>.<typetag>`, body
 * the events each ending in "\n", headers Cybexp-* and Nats-Msg-Id.
 */
export function edgeMessage(parts: EdgeParts, events: string[], prefix: string = NATS_DEFAULTS.subjectPrefix): EdgeMessage {
  const h = natsHeaders();
  h.set(NATS_HEADERS.name, parts.name);
  h.set(NATS_HEADERS.orgid, parts.orgid);
  h.set(NATS_HEADERS.typetag, parts.typetag);
  h.set(NATS_HEADERS.timezone, parts.timezone ?? "UTC");
  h.set(NATS_HEADERS.kind, parts.kind);
  h.set(NATS_HEADERS.host, parts.host ?? "edge01");
  h.set(NATS_HEADERS.msgId, parts.id ?? crypto.randomUUID());
  return { subject: natsSubject(prefix, parts.orgid, parts.typetag), headers: h, body: new TextEncoder().encode(events.map((e) => `${e}\n`).join("")) };
}

/** Publishes with JetStream, retrying (an election, a reconnect) until acknowledged or `ms` passed. */
export async function publishAcked(js: JetStreamClient, subject: string, body: Uint8Array | string, opts: { headers?: MsgHdrs; msgID?: string; ms?: number } = {}): Promise<PubAck> {
  const end = Date.now() + (opts.ms ?? READY_MS);
  for (;;) {
    try {
      return await js.publish(subject, body, { headers: opts.headers, msgID: opts.msgID, timeout: 2000 });
    } catch (err) {
      if (Date.now() > end) throw new Error(`publish on ${subject} not acknowledged: ${errorFirstLine(err)}`);
      await pause(100);
    }
  }
}

/** Publishes an edge message (with its Nats-Msg-Id as the de-duplication id). */
export function publishEdge(js: JetStreamClient, m: EdgeMessage, ms?: number): Promise<PubAck> {
  return publishAcked(js, m.subject, m.body, { headers: m.headers, msgID: m.headers.get(NATS_HEADERS.msgId), ms });
}

export { jetstream, jetstreamManager };

// ---- a proxy that fails like a network ----------------------------------------------------

export interface TcpProxy {
  /** nats://127.0.0.1:PORT */
  readonly url: string;
  readonly port: number;
  /**
   * From now on, what the clients of the connections open now send is swallowed (never reaches
   * the server); what the server sends still arrives. New connections are not affected.
   */
  blackhole(): void;
  /** The text swallowed so far. */
  swallowed(): string;
  /** Destroys every connection (both sides), as a dead network would end them. */
  cutAll(): void;
  /** Connections currently open. */
  connections(): number;
  close(): Promise<void>;
}

/** A TCP proxy on 127.0.0.1 to 127.0.0.1:targetPort. */
export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const pairs = new Set<{ client: Socket; server: Socket; hole: boolean }>();
  let swallowed = "";
  const server: Server = createServer((client) => {
    const upstream = netConnect({ host: "127.0.0.1", port: targetPort });
    const pair = { client, server: upstream, hole: false };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("data", (d: Uint8Array) => {
      if (pair.hole) swallowed += new TextDecoder().decode(d);
      else upstream.write(d);
    });
    upstream.on("data", (d: Uint8Array) => client.write(d));
    client.on("error", end);
    upstream.on("error", end);
    client.on("close", end);
    upstream.on("close", end);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  const proxy: TcpProxy = {
    url: `nats://127.0.0.1:${port}`,
    port,
    blackhole() {
      for (const p of pairs) p.hole = true;
    },
    swallowed: () => swallowed,
    cutAll() {
      for (const p of [...pairs]) {
        p.client.destroy();
        p.server.destroy();
      }
      pairs.clear();
    },
    connections: () => pairs.size,
    close() {
      proxy.cutAll();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return proxy;
}
