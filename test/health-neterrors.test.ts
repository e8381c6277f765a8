// Network failures in the agent's own words, the same under Bun and Deno: the address and the
// cause ("cannot connect to 127.0.0.1:5000: connection refused"), never the runtime's advice
// ("Is the computer able to access the url?"). Real sockets only.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpsServer } from "node:https";
import { createServer as createTcpServer, type AddressInfo, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Agent } from "../agent/agent.ts";
import { inputPlugins } from "../plugins/index.ts";
import { HttpClient, HttpError } from "../plugins/common/http.ts";
import { hostPort, networkErrorText } from "../agent/neterrors.ts";
import { createLogger } from "../agent/log.ts";
import { makeTestCerts, OPENSSL } from "../plugins/syslog/certs.testutil.ts";
import { until } from "./testing/until.ts";
import { freePort } from "./testing/ports.ts";
import { AGENT_AND_CONTROL, startTestAgent } from "./testing/agent.ts";

const RUNTIME_WORDS = /Is the computer able|verbose: true|error sending request|client error|fetch failed|os error/i;

async function listening(server: Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return (server.address() as AddressInfo).port;
}


async function pollError(url: string, client = new HttpClient({ timeoutMs: 5000 })): Promise<HttpError> {
  try {
    await client.request(url);
  } catch (err) {
    assert.ok(err instanceof HttpError, String(err));
    return err;
  } finally {
    client.close();
  }
  assert.fail(`a request to ${url} succeeded`);
}

test("hostPort names the scheme's port when the URL has none", () => {
  assert.equal(hostPort("http://example.org/feed"), "example.org:80");
  assert.equal(hostPort("https://example.org/feed"), "example.org:443");
  assert.equal(hostPort("http://127.0.0.1:5000/raw"), "127.0.0.1:5000");
  assert.equal(hostPort(new URL("https://[::1]:8443/")), "[::1]:8443");
});

test("connection refused: a poll names the URL, the host and port, and the cause", async () => {
  const port = await freePort();
  const err = await pollError(`http://127.0.0.1:${port}/feed.txt`);
  assert.equal(err.kind, "retryable");
  assert.equal(err.message, `cannot reach http://127.0.0.1:${port}/feed.txt: cannot connect to 127.0.0.1:${port}: connection refused`);
});

test("a server that drops the connection: 'closed before an answer'", async () => {
  const server = createTcpServer((s) => s.destroy());
  const port = await listening(server);
  try {
    const err = await pollError(`http://127.0.0.1:${port}/`);
    assert.match(err.message, new RegExp(`^cannot reach http://127\\.0\\.0\\.1:${port}/: connection to 127\\.0\\.0\\.1:${port} closed before an answer$`));
  } finally {
    server.close();
  }
});

test("a connection lost in the middle of the body: said without the runtime's advice", async () => {
  const server = createTcpServer((s) => {
    s.write("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100000\r\n\r\npart of it\n", () => s.destroy());
  });
  const port = await listening(server);
  const client = new HttpClient({ timeoutMs: 5000 });
  try {
    const res = await client.request(`http://127.0.0.1:${port}/feed.txt`, { decompress: false });
    const err = await new Response(res.body).text().then(() => assert.fail("the body read succeeded"), (e: unknown) => e as Error);
    assert.match(err.message, new RegExp(`^connection lost reading http://127\\.0\\.0\\.1:${port}/feed\\.txt: `));
    assert.doesNotMatch(err.message, RUNTIME_WORDS);
    assert.doesNotMatch(err.message, /: E[A-Z]+:/, "no bare error code");
  } finally {
    client.close();
    server.close();
  }
});

test("a host name that does not resolve: named, with the scheme's port", async () => {
  const err = await pollError("https://no-such-host.invalid/feed");
  assert.match(err.message, /^cannot reach https:\/\/no-such-host\.invalid\/feed: cannot connect to no-such-host\.invalid:443: host name (not found|lookup failed)/);
  assert.doesNotMatch(err.message, RUNTIME_WORDS);
});

test("a certificate from an unknown CA: 'TLS certificate not accepted'", { skip: OPENSSL ? false : "no openssl" }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "neterr-tls-"));
  const certs = await makeTestCerts(dir);
  const server = createHttpsServer({ cert: readFileSync(certs.serverCert), key: readFileSync(certs.serverKey) }, (_q, r) => r.end("x"));
  const port = await listening(server as unknown as Server);
  try {
    const err = await pollError(`https://127.0.0.1:${port}/`);
    assert.match(err.message, new RegExp(`: cannot connect to 127\\.0\\.0\\.1:${port}: TLS certificate not accepted \\(.+\\)$`));
    assert.doesNotMatch(err.message, RUNTIME_WORDS);
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("networkErrorText on a plain fetch failure of this runtime", async () => {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/raw`;
  const err = await fetch(url).then(() => assert.fail("fetch succeeded"), (e: unknown) => e);
  assert.equal(networkErrorText(err, url), `cannot connect to 127.0.0.1:${port}: connection refused`);
});

test("the output says the same: an API that is not listening", async () => {
  const port = await freePort();
  const a = await startTestAgent(`${AGENT_AND_CONTROL}[api]
url = "http://127.0.0.1:${port}"
token = "api-token"
orgid = "org-test"
timeout = "2s"
[api.batch]
max_wait = "10ms"
[inputs.desk]
type = "manual"
typetag = "manual"
`);
  try {
    const posted = await a.control("/inputs/desk/events", { method: "POST", headers: { "content-type": "text/plain" }, body: "198.51.100.7\n" });
    assert.equal(posted.status, 202, JSON.stringify(posted.body));
    let lastError = "";
    await until(async () => {
      const { body } = await a.control<{ output: { last_error: string | null } }>("/status");
      lastError = body.output.last_error ?? "";
      return lastError !== "";
    }, "the output's error");
    assert.equal(lastError, `network error posting to http://127.0.0.1:${port}/raw: cannot connect to 127.0.0.1:${port}: connection refused`);
    const health = (await (await fetch(`${a.url}/health`)).json()) as { problems?: string[] };
    assert.ok(health.problems?.some((p) => p.includes(`cannot connect to 127.0.0.1:${port}: connection refused`)), JSON.stringify(health));
  } finally {
    await a.close();
  }
});

test("a control port already taken: the error names control.listen and the address in words", async () => {
  const taken = createTcpServer();
  const port = await listening(taken);
  const dir = mkdtempSync(join(tmpdir(), "neterr-control-"));
  const configPath = join(dir, "agent.toml");
  writeFileSync(configPath, `[agent]\ndata_dir = "data"\n[control]\nlisten = "127.0.0.1:${port}"\n[api]\nurl = "http://127.0.0.1:1"\ntoken = "t"\norgid = "o"\n`);
  try {
    await assert.rejects(
      Agent.start({ configPath, plugins: inputPlugins, log: createLogger("error", { write() {} }) }),
      (err: Error) => err.message === `control.listen: cannot listen on 127.0.0.1:${port}: address already in use`,
    );
  } finally {
    taken.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
