// Acceptance checks of the threat-intel inputs (openphish, phishtank, misp_api, misp_file,
// database), checked from outside with the compiled executable: it runs as its own process in
// an empty folder against fixture servers in this process that speak the real formats, and the
// reference receiver shows what arrived, per input. Each source is served, re-polled, changed,
// and the agent is stopped and run again on the same data_dir.
// Runs when CYBEXP_E2E_BINARY names the executable (npm run test:e2e, .ci/run).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type IncomingHttpHeaders } from "node:http";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { describe, test } from "node:test";
import { until } from "../testing/until.ts";
import {
  agentFolder, Arrivals, assertSameLines, canonical, configText, pause, referenceReceiver, settleOrFail, skip, startAgent, stopGracefully,
  type InputStatus, type RunningAgent,
} from "../testing/e2e.ts";

const BZIP2 = ["/usr/bin/bzip2", "/bin/bzip2"].find((p) => existsSync(p));

const PHISHTANK_USER = "e2e-analyst";
const PHISHTANK_KEY = "e2e0app0key0c0ffee";
/** A MISP automation key is 40 characters; it goes out raw in Authorization. */
const MISP_KEY = "Xk2bN7qLr4TzW9mVc3HsDf8GjP1aYe6uR0oQiE5w";

/** A file of a plugin's own test data (plugins/<type>/testdata/). */
const pluginTestdata = (plugin: string, name: string) => readFileSync(fileURLToPath(new URL(`../../plugins/${plugin}/testdata/${name}`, import.meta.url)), "utf8");

// ---- fixture servers ----------------------------------------------------------------------

interface Request {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** Filled in once answered. */
  status: number;
  /** Which version of a document was current when answered (Document sources). */
  version: number;
}

interface Answer {
  status: number;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
}

interface FixtureServer {
  url: string;
  requests: Request[];
  close(): Promise<void>;
}

async function fixtureServer(answer: (req: Request) => Answer): Promise<FixtureServer> {
  const requests: Request[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const r: Request = { method: req.method ?? "", path: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks).toString("utf8"), status: 0, version: 0 };
      let a: Answer;
      try {
        a = answer(r);
      } catch (err) {
        a = { status: 500, body: String(err) };
      }
      r.status = a.status;
      requests.push(r);
      res.writeHead(a.status, a.headers);
      res.end(a.body);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((r) => {
        (server as { closeAllConnections?: () => void }).closeAllConnections?.();
        server.close(() => r());
      }),
  };
}

/** A downloadable document that changes now and then, answered with ETag / Last-Modified and
 *  304 to a conditional GET that names the current version. */
class Document {
  version = 0;
  body: Uint8Array = new Uint8Array(0);
  etag = "";
  lastModified = "";
  constructor(private readonly contentType: string) {}

  publish(body: Uint8Array): void {
    this.version++;
    this.body = body;
    this.etag = `"${this.version}-${createHash("sha1").update(body).digest("hex").slice(0, 16)}"`;
    // a minute apart, so that If-Modified-Since (second resolution) tells versions apart
    this.lastModified = new Date(Date.UTC(2026, 10, 27, 10, this.version)).toUTCString();
  }

  answer(req: Request): Answer {
    req.version = this.version;
    const validators = { etag: this.etag, "last-modified": this.lastModified };
    const inm = req.headers["if-none-match"];
    const ims = req.headers["if-modified-since"];
    // RFC 9110 13.2.2: If-None-Match, when sent, decides; If-Modified-Since only without it.
    const notModified = inm !== undefined
      ? inm.split(",").map((s) => s.trim()).includes(this.etag)
      : ims !== undefined && Date.parse(ims) >= Date.parse(this.lastModified);
    if (notModified) return { status: 304, headers: validators };
    return { status: 200, headers: { ...validators, "content-type": this.contentType }, body: this.body };
  }
}

const conditional = (r: Request) => r.headers["if-none-match"] !== undefined || r.headers["if-modified-since"] !== undefined;

// ---- source data ----------------------------------------------------------------------------

/** JSON as PhishTank's dump writes it (Python's separators: ", " and ": "). */
function pyJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(pyJson).join(", ")}]`;
  if (v !== null && typeof v === "object") return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${pyJson(x)}`).join(", ")}}`;
  return JSON.stringify(v);
}

type PhishRecord = Record<string, unknown> & { phish_id: string };

/** The fixture's records and more made after them (ids as strings, yes/no strings, details may be empty). */
function phishRecords(n: number): PhishRecord[] {
  const base = JSON.parse(pluginTestdata("phishtank", "online-valid.json")) as PhishRecord[];
  const out = [...base];
  const template = base[0]!;
  for (let i = out.length; i < n; i++) {
    const id = String(8_100_000 + i);
    const at = new Date(Date.UTC(2026, 10, 20, 0, i)).toISOString().replace(".000Z", "+00:00");
    out.push({
      ...template,
      phish_id: id,
      url: `https://secure-${i}.account-verify.example/login.php?session=${i * 7919}`,
      phish_detail_url: `http://www.phishtank.com/phish_detail.php?phish_id=${id}`,
      submission_time: at,
      verification_time: at,
      details: i % 4 === 0 ? [] : [{ ip_address: `198.51.100.${i % 250}`, cidr_block: "198.51.100.0/24", announcing_network: String(64_500 + (i % 30)), rir: "arin", country: "US", detail_time: at }],
      target: ["PayPal", "Microsoft", "Other", "AEON Card"][i % 4],
    });
  }
  return out;
}

function phishDump(records: PhishRecord[]): { texts: string[]; dump: string } {
  const texts = records.map(pyJson);
  return { texts, dump: `[${texts.join(", ")}]` };
}

function compress(text: string): Uint8Array {
  if (!BZIP2) return gzipSync(text);
  const r = spawnSync(BZIP2, ["-c", "-9"], { input: text, maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, `bzip2: ${r.stderr}`);
  return r.stdout;
}

type MispEvent = { Event: Record<string, unknown> & { uuid: string; timestamp: string } };

/** An event shaped as the fixture's restSearch answer, with its own id, uuid and timestamp. */
function mispEvent(i: number, timestamp: number, extra: Record<string, unknown> = {}): MispEvent {
  const template = (JSON.parse(pluginTestdata("misp_api", "events-restSearch.json")) as { response: MispEvent[] }).response[0]!.Event;
  const uuid = `5f8a3c1e-8d4c-4b7a-9a51-${String(i).padStart(12, "0")}`;
  const attributes = (template.Attribute as Array<Record<string, unknown>>).map((a, k) => ({
    ...a,
    id: String(90_000 + i * 10 + k),
    uuid: `a1b2c3d4-${String(i).padStart(4, "0")}-4000-8000-${String(k).padStart(12, "0")}`,
    event_id: String(1000 + i),
    timestamp: String(timestamp),
    value: `http://login-${i}.phish-campaign.example/verify`,
  }));
  return {
    Event: {
      ...template,
      id: String(1000 + i),
      uuid,
      info: `E2E phishing campaign ${i}`,
      timestamp: String(timestamp),
      publish_timestamp: String(timestamp),
      Attribute: attributes,
      ...extra,
    },
  };
}

/** The same event edited: a newer timestamp and a changed info. */
function edited(e: MispEvent, timestamp: number): MispEvent {
  return { Event: { ...e.Event, info: `${e.Event.info} (updated)`, timestamp: String(timestamp), publish_timestamp: String(timestamp) } };
}

/** MISP's restSearch `timestamp`: unix seconds (number or digits) or a relative "7d". */
function timestampFrom(v: unknown): number {
  if (typeof v === "number") return v;
  if (typeof v === "string" && /^\d+$/.test(v)) return Number(v);
  const m = typeof v === "string" ? /^(\d+)([smhdw])$/.exec(v) : null;
  if (m) return Math.floor(Date.now() / 1000) - Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 }[m[2] as "s"];
  return 0;
}

interface SearchBody {
  returnFormat?: unknown;
  timestamp?: unknown;
  limit?: unknown;
  page?: unknown;
  published?: unknown;
}

const searchOf = (r: Request) => JSON.parse(r.body) as SearchBody;

/** POST /events/restSearch as MISP answers it: the raw key, timestamp >= filtering, `published`,
 *  limit/page, X-Result-Count; a bad key gets MISP's 403. Anything else wrong is a violation. */
function mispSearch(events: () => MispEvent[], violations: string[]) {
  return (req: Request): Answer => {
    const json = { "content-type": "application/json; charset=UTF-8" };
    if (req.path !== "/events/restSearch") return { status: 404, headers: json, body: JSON.stringify({ name: "Not Found", message: "Not Found", url: req.path }) };
    if (req.method !== "POST") {
      violations.push(`MISP asked with ${req.method}`);
      return { status: 405, headers: json, body: "{}" };
    }
    if (req.headers.authorization !== MISP_KEY) {
      violations.push(`MISP asked with Authorization ${JSON.stringify(req.headers.authorization)}`);
      return { status: 403, headers: json, body: pluginTestdata("misp_api", "error-403.json") };
    }
    let q: SearchBody;
    try {
      q = searchOf(req);
    } catch {
      violations.push(`MISP asked with a body that is not JSON: ${req.body.slice(0, 200)}`);
      return { status: 400, headers: json, body: JSON.stringify({ name: "Bad Request", message: "Invalid JSON", url: req.path }) };
    }
    if (q.returnFormat !== "json") violations.push(`MISP asked for returnFormat ${JSON.stringify(q.returnFormat)}`);
    if (!/application\/json/.test(req.headers["content-type"] ?? "")) violations.push(`MISP asked with Content-Type ${req.headers["content-type"]}`);
    if (!/application\/json/.test(req.headers.accept ?? "")) violations.push(`MISP asked with Accept ${req.headers.accept}`);
    const from = timestampFrom(q.timestamp);
    const matched = events()
      .filter((e) => Number(e.Event.timestamp) >= from && (q.published !== true || e.Event.published === true))
      .sort((a, b) => Number(a.Event.id) - Number(b.Event.id));
    const limit = Number(q.limit ?? 0);
    const page = Number(q.page ?? 1);
    const shown = limit > 0 ? matched.slice((page - 1) * limit, page * limit) : matched;
    // MISP pretty-prints its answers
    return { status: 200, headers: { ...json, "x-result-count": String(matched.length) }, body: JSON.stringify({ response: shown }, null, 4) };
  };
}

// ---- the tests --------------------------------------------------------------------------------

describe("compiled binary: threat-intel inputs", { skip }, () => {
  test("openphish, phishtank, misp_api: every record once, re-polls post nothing, changes post exactly what changed, a restart posts nothing again", async () => {
    const violations: string[] = [];
    const noViolations = () => assert.deepEqual(violations, [], "what the fixture servers saw of the agent's requests");

    // OpenPhish: the fixture's feed (blank last line) and more URLs
    const opFixture = pluginTestdata("openphish", "feed.txt");
    const opUrls1 = [...opFixture.split("\n").filter(Boolean), ...Array.from({ length: 58 }, (_, i) => `http://paypal-${i}.account-check.example/signin/?id=${1000 + i}`)];
    const feedText = (urls: string[]) => urls.join("\n") + "\n\n";
    const feed = new Document("text/plain; charset=utf-8");
    feed.publish(new TextEncoder().encode(feedText(opUrls1)));
    const openphish = await fixtureServer((req) => (req.path === "/feed.txt" && req.method === "GET" ? feed.answer(req) : { status: 404 }));

    // PhishTank: the bzip2 dump of online-valid.json (gzip where no bzip2 is installed)
    const dumpName = BZIP2 ? "online-valid.json.bz2" : "online-valid.json.gz";
    const dumpPath = `/data/${PHISHTANK_KEY}/${dumpName}`;
    const records1 = phishRecords(200);
    const dump1 = phishDump(records1);
    const dump = new Document(BZIP2 ? "application/x-bzip2" : "application/x-gzip");
    dump.publish(compress(dump1.dump));
    const phishtank = await fixtureServer((req) => {
      if (req.headers["user-agent"] !== `phishtank/${PHISHTANK_USER}`) {
        violations.push(`PhishTank asked with User-Agent ${JSON.stringify(req.headers["user-agent"])}`);
        return { status: 403, body: "Forbidden" };
      }
      return req.path === dumpPath && req.method === "GET" ? dump.answer(req) : { status: 404 };
    });

    // MISP: 26 events an hour or two old, two of them unpublished (filtered out by published = true)
    const now = Math.floor(Date.now() / 1000);
    let mispEvents: MispEvent[] = Array.from({ length: 26 }, (_, i) => mispEvent(i, now - 7200 + i * 10, i === 5 || i === 17 ? { published: false } : {}));
    const misp = await fixtureServer(mispSearch(() => mispEvents, violations));
    const PAGE = 7;

    const receiver = await referenceReceiver();
    const dir = agentFolder(configText(receiver.url, `
[inputs.openphish]
type = "openphish"
typetag = "openphish"
url = "${openphish.url}/feed.txt"
interval = "500ms"
timeout = "10s"

[inputs.phishtank]
type = "phishtank"
typetag = "phishtank"
username = "${PHISHTANK_USER}"
app_key = "${PHISHTANK_KEY}"
url = "${phishtank.url}${dumpPath}"
interval = "500ms"
timeout = "10s"

[inputs.misp]
type = "misp_api"
typetag = "misp"
url = "${misp.url}"
key = "${MISP_KEY}"
interval = "500ms"
page_size = ${PAGE}
timeout = "10s"
[inputs.misp.filters]
published = true
`));
    let agent: RunningAgent | undefined;
    try {
      agent = await startAgent(dir);
      const op = new Arrivals(receiver, "openphish");
      const pt = new Arrivals(receiver, "phishtank");
      const mi = new Arrivals(receiver, "misp");
      const polls = () => ({ op: openphish.requests.length, pt: phishtank.requests.length, mi: misp.requests.filter((r) => searchOf(r).page === 1).length });
      /** Waits for `n` more polls of every source than `from` counted, then for their uploads to have arrived. */
      const morePolls = async (from: ReturnType<typeof polls>, n: number, what: string) => {
        await until(() => {
          noViolations();
          const p = polls();
          return p.op >= from.op + n && p.pt >= from.pt + n && p.mi >= from.mi + n;
        }, `${n} more polls of each source ${what} (${agent!.log().slice(-600)})`, 30_000);
        await pause(1000); // max_wait is 200ms: anything posted by those polls has arrived by then
      };

      // ---- 1. first polls: every record once
      const published1 = mispEvents.filter((e) => e.Event.published === true);
      await settleOrFail([[op, opUrls1.length], [pt, records1.length], [mi, published1.length]], `first polls (${agent.log().slice(-600)})`, noViolations);
      noViolations();
      assertSameLines(await op.lines(), opUrls1, "openphish: the feed's URLs as text events");
      assertSameLines(await pt.lines(), dump1.texts, "phishtank: the dump's records as they are in it");
      assertSameLines((await mi.lines()).map(canonical), published1.map((e) => JSON.stringify(e)), "misp: the published events as {\"Event\":...}");
      assert.deepEqual(op.kinds(), [["openphish", "openphish.txt"]]);
      assert.deepEqual(pt.kinds(), [["phishtank", "phishtank.ndjson"]]);
      assert.deepEqual(mi.kinds(), [["misp", "misp.ndjson"]]);

      // MISP was paged: the first poll asked pages 1..4 (24 events, 7 a page) from ~7 days ago
      const first = misp.requests.slice(0, 4).map(searchOf);
      assert.deepEqual(first.map((q) => [q.page, q.limit, q.published, q.returnFormat]), [1, 2, 3, 4].map((p) => [p, PAGE, true, "json"]), "the first MISP poll's pages");
      assert.equal(new Set(first.map((q) => q.timestamp)).size, 1, "one timestamp for all pages of a poll");
      assert.ok(Math.abs(timestampFrom(first[0]!.timestamp) - (now - 7 * 86_400)) < 600, `first search from since = 7d: ${first[0]!.timestamp}`);
      assert.equal(openphish.requests[0]!.status, 200);
      assert.equal(phishtank.requests[0]!.status, 200);

      // ---- 2. repeated polls post nothing; OpenPhish and PhishTank are asked conditionally (304)
      const mark2 = polls();
      const lines2 = { op: op.count(), pt: pt.count(), mi: mi.count() };
      await morePolls(mark2, 3, "after the first");
      assert.deepEqual({ op: op.count(), pt: pt.count(), mi: mi.count() }, lines2, "nothing posted by re-polls of unchanged sources");
      for (const [name, server, doc] of [["openphish", openphish, feed], ["phishtank", phishtank, dump]] as const) {
        const again = server.requests.slice(mark2[name === "openphish" ? "op" : "pt"]);
        assert.ok(again.every((r) => conditional(r) && r.status === 304),
          `${name} re-polls conditional and answered 304: ${JSON.stringify(again.map((r) => [r.headers["if-none-match"], r.headers["if-modified-since"], r.status]))} (ETag ${doc.etag})`);
      }
      const highest1 = Math.max(...published1.map((e) => Number(e.Event.timestamp)));
      const repolls = misp.requests.filter((r) => searchOf(r).page === 1).slice(mark2.mi).map(searchOf);
      assert.ok(repolls.every((q) => q.timestamp === highest1), `MISP re-polls search from the highest event timestamp ${highest1}: ${JSON.stringify(repolls.map((q) => q.timestamp))}`);

      // ---- 3. the sources change: exactly the new and changed records follow
      const opNew = Array.from({ length: 15 }, (_, i) => `https://microsoft-${i}.office-signin.example/owa/?login=${i}`);
      const opUrls2 = [...opUrls1.slice(10), ...opNew, opNew[0]!]; // 10 gone, 15 new, one listed twice
      feed.publish(new TextEncoder().encode(feedText(opUrls2)));

      // 8 gone (the fixture's two among them), 5 with a new detail, 12 new
      const changedIds = new Set([10, 50, 51, 120, 199].map((i) => records1[i]!.phish_id));
      const detail = { ip_address: "203.0.113.77", cidr_block: "203.0.113.0/24", announcing_network: "64511", rir: "ripencc", country: "NL", detail_time: "2026-11-27T09:00:00+00:00" };
      const records2: PhishRecord[] = records1.slice(8).map((r) => (changedIds.has(r.phish_id) ? { ...r, details: [...(r.details as unknown[]), detail] } : r));
      records2.push(...phishRecords(212).slice(200));
      const dump2 = phishDump(records2);
      dump.publish(compress(dump2.dump));
      const dumpChanged = dump2.texts.filter((t) => !dump1.texts.includes(t));
      assert.equal(dumpChanged.length, 5 + 12);

      const editedNow = Math.floor(Date.now() / 1000);
      const edits = [2, 9, 20].map((i, k) => edited(mispEvents[i]!, editedNow - 3000 + k));
      const republished = edited(mispEvents[5]!, editedNow - 2990);
      republished.Event.published = true;
      const added = Array.from({ length: 5 }, (_, k) => mispEvent(26 + k, editedNow - 2900 + k));
      const replaced = new Map([...edits, republished].map((e) => [e.Event.uuid, e]));
      mispEvents = [...mispEvents.map((e) => replaced.get(e.Event.uuid) ?? e), ...added];
      const mispChanged = [...edits, republished, ...added].map((e) => JSON.stringify(e));

      const from3 = { op: op.count(), pt: pt.count(), mi: mi.count() };
      await settleOrFail([[op, from3.op + opNew.length], [pt, from3.pt + dumpChanged.length], [mi, from3.mi + mispChanged.length]],
        () => `the changes (MISP's last answers: ${JSON.stringify(misp.requests.slice(-6).map((r) => [searchOf(r).page, searchOf(r).timestamp, r.status]))}; agent log: ${agent!.log().slice(-1200)})`, noViolations);
      await morePolls(polls(), 2, "after the changes");
      noViolations();
      assertSameLines(await op.since(from3.op), opNew, "openphish after the feed changed: only the new URLs");
      assertSameLines(await pt.since(from3.pt), dumpChanged, "phishtank after the dump changed: the new and changed records");
      assertSameLines((await mi.since(from3.mi)).map(canonical), mispChanged, "misp after edits: the edited, re-published and new events");

      // ---- 4. stop, run again on the same data_dir: nothing is posted again
      const lastSearch = searchOf(misp.requests.at(-1)!).timestamp;
      await stopGracefully(agent);
      const mark4 = polls();
      const lines4 = { op: op.count(), pt: pt.count(), mi: mi.count() };
      agent = await startAgent(dir);
      await morePolls(mark4, 1, "after the restart");
      // the first polls after the restart carry what was saved: the validators, the cursor
      for (const [name, server, doc, at] of [["openphish", openphish, feed, mark4.op], ["phishtank", phishtank, dump, mark4.pt]] as const) {
        const r = server.requests[at]!;
        assert.deepEqual([r.headers["if-none-match"] ?? r.headers["if-modified-since"], r.status], [doc.etag, 304], `${name}: the first request after the restart is conditional on the saved ETag`);
      }
      const restartSearch = misp.requests.filter((r) => searchOf(r).page === 1)[mark4.mi]!;
      assert.equal(searchOf(restartSearch).timestamp, lastSearch, "misp: the first search after the restart starts from the saved cursor");
      // the feed and the dump rebuilt with the same content (new ETag): read in full, nothing new in them
      feed.publish(feed.body);
      dump.publish(dump.body);
      const rebuilt = { op: feed.version, pt: dump.version };
      await until(() => openphish.requests.some((r) => r.version === rebuilt.op && r.status === 200) && phishtank.requests.some((r) => r.version === rebuilt.pt && r.status === 200),
        "the rebuilt feed and dump fetched in full", 30_000);
      await morePolls(polls(), 2, "after the rebuilt feed and dump");
      noViolations();
      assert.deepEqual({ op: op.count(), pt: pt.count(), mi: mi.count() }, lines4, "nothing posted again after the restart");
      for (const s of (await agent.status()).inputs) {
        assert.deepEqual([s.name, s.state, s.errors], [s.name, "running", 0], `after the restart: ${JSON.stringify(s)}`);
      }
    } finally {
      await agent?.stop();
      await Promise.all([openphish.close(), phishtank.close(), misp.close(), receiver.close()]);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("misp_file drop folder (restSearch answer, single event, list, feed folder, a broken file) and a SQLite table by cursor: posted once, changes only, nothing again after a restart", async () => {
    const receiver = await referenceReceiver();
    const dir = agentFolder(configText(receiver.url, `
[inputs.misp_drop]
type = "misp_file"
typetag = "misp"
path = "./drop"
interval = "500ms"
settle = "300ms"

[inputs.intel_db]
type = "database"
typetag = "intel-db"
driver = "sqlite"
dsn = "./intel.sqlite"
query = "SELECT id, seen_at, indicator, kind, confidence, source FROM indicators WHERE id > $1 ORDER BY id"
cursor_column = "id"
interval = "500ms"
max_rows = 25
`));
    const drop = join(dir, "drop");
    const feedDir = join(drop, "circl-feed");
    mkdirSync(feedDir, { recursive: true });
    const base = 1_714_563_600; // the fixture event's timestamp
    const ev = Array.from({ length: 20 }, (_, i) => mispEvent(i, base + i * 60));
    // MISP's exports are pretty-printed
    const writeJson = (path: string, v: unknown) => writeFileSync(path, JSON.stringify(v, null, 4));
    const writeFeed = (events: MispEvent[]) => {
      for (const e of events) writeJson(join(feedDir, `${e.Event.uuid}.json`), e);
      const manifest: Record<string, unknown> = {};
      const summary = JSON.parse(pluginTestdata("misp_file", "feed-manifest.json")) as Record<string, Record<string, unknown>>;
      const template = Object.values(summary)[0]!;
      for (const e of events) manifest[e.Event.uuid] = { ...template, info: e.Event.info, timestamp: e.Event.timestamp };
      writeJson(join(feedDir, "manifest.json"), manifest);
    };
    writeJson(join(drop, "export-restsearch.json"), { response: ev.slice(0, 5) });
    writeJson(join(drop, "event-single.json"), ev[5]);
    writeJson(join(drop, "events-list.json"), [ev[6], ev[7], ev[8], ev[1]]); // ev[1] also in the export: posted once
    let feedEvents = ev.slice(9, 13);
    writeFeed(feedEvents);
    const restSearchFixture = pluginTestdata("misp_api", "events-restSearch.json");
    writeFileSync(join(drop, "broken.json"), restSearchFixture.slice(0, Math.floor(restSearchFixture.length / 2))); // an export cut short

    const dbPath = join(dir, "intel.sqlite");
    const row = (id: number) => ({
      id,
      seen_at: new Date(Date.UTC(2026, 10, 27, 8, 0, id)).toISOString(),
      indicator: id % 3 === 0 ? `malware-${id}.example.net` : `198.51.100.${id % 250}`,
      kind: id % 3 === 0 ? "domain" : "ip-dst",
      confidence: 50 + (id % 50),
      source: id % 5 === 0 ? null : `honeypot-${id % 4}`,
    });
    const insertRows = (ids: number[]) => {
      const db = new DatabaseSync(dbPath);
      try {
        db.exec("BEGIN");
        const ins = db.prepare("INSERT INTO indicators (id, seen_at, indicator, kind, confidence, source) VALUES (?, ?, ?, ?, ?, ?)");
        for (const r of ids.map(row)) ins.run(r.id, r.seen_at, r.indicator, r.kind, r.confidence, r.source);
        db.exec("COMMIT");
      } finally {
        db.close();
      }
    };
    const rowsOf = (ids: number[]) => ids.map((id) => JSON.stringify(row(id)));
    const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
    {
      const db = new DatabaseSync(dbPath);
      db.exec("CREATE TABLE indicators (id INTEGER PRIMARY KEY, seen_at TEXT NOT NULL, indicator TEXT NOT NULL, kind TEXT NOT NULL, confidence INTEGER, source TEXT)");
      db.close();
    }
    insertRows(range(1, 60));

    let agent: RunningAgent | undefined;
    try {
      agent = await startAgent(dir);
      const md = new Arrivals(receiver, "misp_drop");
      const db = new Arrivals(receiver, "intel_db");
      /** Waits until both inputs polled again after now, twice over, then for what they posted to arrive. */
      const morePolls = async (what: string) => {
        const since = Date.now();
        await until(async () => {
          const s = await agent!.status();
          return ["misp_drop", "intel_db"].every((n) => Date.parse(String(s.inputs.find((i) => i.name === n)?.last_poll ?? 0)) > since + 1100);
        }, `polls of misp_drop and intel_db ${what} (${agent!.log().slice(-600)})`, 30_000);
        await pause(1000);
      };

      // ---- 1. every event once, the broken file reported, every row once
      const events1 = ev.slice(0, 13).map((e) => JSON.stringify(e));
      await settleOrFail([[md, events1.length], [db, 60]], `first scans (${agent.log().slice(-600)})`);
      assertSameLines((await md.lines()).map(canonical), events1, "misp_drop: the events of the export, the single event, the list and the feed");
      assertSameLines((await db.lines()).map(canonical), rowsOf(range(1, 60)), "intel_db: the rows as JSON events");
      assert.deepEqual(md.kinds(), [["misp", "misp_drop.ndjson"]]);
      assert.deepEqual(db.kinds(), [["intel-db", "intel_db.ndjson"]]);
      let dropStatus: InputStatus | undefined;
      await until(async () => {
        dropStatus = await agent!.input("misp_drop");
        return dropStatus.errors >= 1 && /broken\.json/.test(dropStatus.last_error ?? "");
      }, "the broken file in /status", 10_000).catch(() => assert.fail(`misp_drop in /status names broken.json: ${JSON.stringify(dropStatus)}`));
      assert.equal(dropStatus!.state, "running", "a broken file does not stop the input");
      const errors1 = dropStatus!.errors;

      // ---- 2. repeated scans and polls post nothing; the broken file is not reported again
      const lines2 = { md: md.count(), db: db.count() };
      await morePolls("after the first");
      assert.deepEqual({ md: md.count(), db: db.count() }, lines2, "nothing posted by scans and polls of unchanged sources");
      assert.equal((await agent.input("misp_drop")).errors, errors1, "the broken file is reported once, not on every scan");

      // ---- 3. changes: new files, an edited event, a changed feed, new rows
      const editedExport = edited(ev[3]!, base + 100_000);
      writeJson(join(drop, "later.json"), { response: [ev[13], ev[14], editedExport, ev[0]] }); // ev[0] as posted before
      const editedFeed = edited(ev[10]!, base + 100_060);
      feedEvents = [...feedEvents.map((e) => (e.Event.uuid === editedFeed.Event.uuid ? editedFeed : e)), ev[15]!];
      writeFeed(feedEvents);
      insertRows(range(61, 75));
      {
        // a row changed below the cursor is not read again: the cursor only moves forward
        const h = new DatabaseSync(dbPath);
        h.prepare("UPDATE indicators SET indicator = ? WHERE id = ?").run("changed.example.org", 3);
        h.close();
      }
      const events3 = [ev[13]!, ev[14]!, editedExport, editedFeed, ev[15]!].map((e) => JSON.stringify(e));
      const from3 = { md: md.count(), db: db.count() };
      await settleOrFail([[md, from3.md + events3.length], [db, from3.db + 15]], "the changes");
      await morePolls("after the changes");
      assertSameLines((await md.since(from3.md)).map(canonical), events3, "misp_drop after the changes: the new and edited events");
      assertSameLines((await db.since(from3.db)).map(canonical), rowsOf(range(61, 75)), "intel_db after the inserts: the new rows only");
      const drop3 = await agent.input("misp_drop");
      assert.deepEqual([drop3.state, drop3.errors], ["running", errors1], `misp_drop after the changes: ${JSON.stringify(drop3)}`);

      // ---- 4. stop, run again on the same data_dir: nothing again, then only what is new
      await stopGracefully(agent);
      const lines4 = { md: md.count(), db: db.count() };
      agent = await startAgent(dir);
      await morePolls("after the restart");
      assert.deepEqual({ md: md.count(), db: db.count() }, lines4, "nothing posted again after the restart");
      for (const n of ["misp_drop", "intel_db"]) assert.equal((await agent.input(n)).state, "running", n);

      writeJson(join(drop, "after-restart.json"), { Event: ev[16]!.Event });
      insertRows(range(76, 80));
      await settleOrFail([[md, lines4.md + 1], [db, lines4.db + 5]], "what came after the restart");
      await morePolls("after the last changes");
      assertSameLines((await md.since(lines4.md)).map(canonical), [JSON.stringify(ev[16])], "misp_drop after the restart: the new file's event");
      assertSameLines((await db.since(lines4.db)).map(canonical), rowsOf(range(76, 80)), "intel_db after the restart: the rows past the saved cursor");
    } finally {
      await agent?.stop();
      await receiver.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
