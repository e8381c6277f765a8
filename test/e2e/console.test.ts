// End to end with the compiled executable and a real browser: the web console as an analyst
// uses it. Headless chromium (Debian's, driven by puppeteer-core) logs in with the URL that
// `cybexp-agent console` prints, sees the inputs, stops and starts one, watches its live tail,
// submits six indicators and finds them at the reference receiver; without the session the
// API refuses, and a foreign Host header is refused. Screenshots at 1280x800 and 420x800 go to
// a temp folder (printed) and to $CYBEXP_E2E_ARTIFACTS when set.
// Runs when CYBEXP_E2E_BINARY names the executable and chromium is installed.
import assert from "node:assert/strict";
import { appendFileSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Browser, ElementHandle, Page } from "puppeteer-core";
import type { Receiver } from "../../scripts/receiver.ts";
import { Arrivals, cli, referenceReceiver, runAgent, settleOrFail, skip as noBinary, stopGracefully, type RunningAgent } from "../testing/e2e.ts";

const CHROMIUM = process.env.CYBEXP_E2E_CHROMIUM || "/usr/bin/chromium";
const skip: string | false = noBinary || (existsSync(CHROMIUM) ? false : `no chromium at ${CHROMIUM} (apt-get install chromium, or set CYBEXP_E2E_CHROMIUM)`);

const IOCS = ["203.0.113.9", "evil.example", "http://bad.example/login.php", "198.51.100.7",
  "44d88612fea8a8f36de796f40c2ea7d3", "phish.example"];

/** What a request with a chosen Host header got (node:http, because fetch() sets Host itself). */
function getWithHost(url: string, path: string, host: string): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((res, rej) => {
    const req = httpRequest({ hostname, port, path, method: "GET", headers: { host } }, (r) => {
      let body = "";
      r.setEncoding("utf8");
      r.on("data", (c: string) => (body += c));
      r.on("end", () => res({ status: r.statusCode ?? 0, body }));
    });
    req.on("error", rej);
    req.end();
  });
}

/** The text of the first element matching `selector`, or "" when there is none. */
function textOf(page: Page, selector: string): Promise<string> {
  return page.$eval(selector, (el) => el.textContent ?? "").catch(() => "");
}

/** The control that the <label> reading exactly `text` labels (found as a person finds it: by the label). */
async function labelled(page: Page, text: string): Promise<ElementHandle<Element>> {
  await page.waitForFunction((t: string) => [...document.querySelectorAll("label")].some((l) => l.textContent?.trim() === t && l.control), {}, text);
  const handle = await page.evaluateHandle((t: string) => [...document.querySelectorAll("label")].find((l) => l.textContent?.trim() === t)!.control!, text);
  return handle as ElementHandle<Element>;
}

/** Waits until the state badge of input `name` reads `state`. */
async function badgeReads(page: Page, name: string, state: string): Promise<void> {
  await page.waitForFunction(
    (n: string, s: string) => [...document.querySelectorAll("#inputs-body tr")].some((tr) =>
      tr.querySelector(".input-name")?.textContent === n && tr.querySelector(".input-state")?.textContent === s),
    { timeout: 15_000 }, name, state,
  ).catch(async () => {
    const rows = await page.$$eval("#inputs-body tr", (trs) => trs.map((tr) => tr.textContent?.replace(/\s+/g, " ").trim()));
    assert.fail(`input ${name} is not shown as ${state}: ${JSON.stringify(rows)}`);
  });
}

describe("the web console in a browser", { skip }, () => {
  let receiver: Receiver;
  let agent: RunningAgent;
  let browser: Browser;
  let page: Page;
  let base = "";
  const shots = mkdtempSync(join(tmpdir(), "console-shots-"));
  const artifacts = process.env.CYBEXP_E2E_ARTIFACTS;
  /** Answers of 400 and above the page got, but for the favicon the browser asks by itself. */
  const failedResponses: string[] = [];
  const pageErrors: string[] = [];

  async function screenshot(name: string, width: number, height: number): Promise<void> {
    await page.setViewport({ width, height });
    await page.evaluate(() => window.scrollTo(0, 0));
    await new Promise((r) => setTimeout(r, 300)); // the layout settles at the new width
    // What the window shows, and the whole page.
    await page.screenshot({ path: join(shots, `${name}.png`) });
    await page.screenshot({ path: join(shots, `${name}-full.png`), fullPage: true });
    if (artifacts) {
      mkdirSync(artifacts, { recursive: true });
      for (const file of [`${name}.png`, `${name}-full.png`]) copyFileSync(join(shots, file), join(artifacts, file));
    }
  }

  before(async () => {
    console.log(`console screenshots: ${shots}`);
    receiver = await referenceReceiver();
    agent = await runAgent(receiver, `[inputs.desk]
type = "manual"
typetag = "manual-ti"
[inputs.weblog]
type = "file"
typetag = "weblog"
paths = ["weblog.log"]
`, (dir) => writeFileSync(join(dir, "weblog.log"), "first line of the web log\n"));
    base = agent.url;
    const { default: puppeteer } = await import("puppeteer-core");
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
    });
    page = await browser.newPage();
    page.setDefaultTimeout(15_000);
    page.on("pageerror", (err) => pageErrors.push(String(err)));
    page.on("console", (m) => {
      if (/Content Security Policy|Refused to/i.test(m.text())) pageErrors.push(m.text());
    });
    page.on("response", (r) => {
      if (r.status() >= 400 && !r.url().endsWith("/favicon.ico")) failedResponses.push(`${r.status()} ${r.request().method()} ${r.url()}`);
    });
    await page.setViewport({ width: 1280, height: 800 });
  });

  after(async () => {
    await browser?.close();
    if (agent) await stopGracefully(agent);
    await receiver?.close();
  });

  test("without a session the page says how to log in, and the API answers 401", async () => {
    const context = await browser.createBrowserContext();
    try {
      const stranger = await context.newPage();
      await stranger.goto(`${base}/`);
      await stranger.waitForSelector("#login:not([hidden])");
      const text = (await stranger.$eval("#login", (el) => el.textContent ?? "")).replace(/\s+/g, " ");
      assert.match(text, /Run cybexp-agent console on this host and open the URL it prints/);
      assert.equal(await stranger.$eval("#console", (el) => (el as HTMLElement).hidden), true);
    } finally {
      await context.close();
    }
    const res = await fetch(`${base}/status`);
    assert.equal(res.status, 401, "GET /status without a cookie or a token");
    assert.match(((await res.json()) as { error: string }).error, /console|token/);
  });

  test("a request naming another host is refused", async () => {
    const evil = await getWithHost(base, "/status", "evil.example");
    assert.ok(evil.status >= 400 && evil.status < 500, `Host: evil.example got ${evil.status} ${evil.body}`);
    assert.doesNotMatch(evil.body, /"inputs"/);
    const page = await getWithHost(base, "/", "evil.example");
    assert.ok(page.status >= 400 && page.status < 500, `GET / with Host: evil.example got ${page.status}`);
  });

  test("the login URL of `cybexp-agent console` opens the console with every input and its state", async () => {
    const ran = await cli(agent.dir, ["console", "-c", "agent.config.toml"]);
    assert.equal(ran.code, 0, `cybexp-agent console: ${ran.stderr}`);
    const loginUrl = ran.stdout.trim().split("\n").at(-1)!;
    assert.match(loginUrl, /^http:\/\/127\.0\.0\.1:\d+\/login\?code=/);
    await page.goto(loginUrl);
    assert.equal(new URL(page.url()).pathname, "/", "the login redirects to the console");
    await page.waitForSelector("#console:not([hidden])");
    await badgeReads(page, "desk", "running");
    await badgeReads(page, "weblog", "running");
    const names = await page.$$eval("#inputs-body .input-name", (els) => els.map((e) => e.textContent));
    assert.deepEqual([...names].sort(), ["desk", "weblog"]);
    assert.equal(await textOf(page, "#agent-version"), (await cli(agent.dir, ["version"])).stdout.trim().split(/\s+/).at(-1));
    assert.equal(await textOf(page, "#output-state"), "ok");
    assert.match(await textOf(page, "#spool-text"), / of .*\(/);
    // The status stream keeps the page live: the uptime moves on without a reload.
    const uptime = await textOf(page, "#agent-uptime");
    await page.waitForFunction((u: string) => document.getElementById("agent-uptime")?.textContent !== u, {}, uptime);
  });

  test("Stop and Start on the file input: its state follows, and the meaningless button is disabled", async () => {
    const stop = await page.waitForSelector('button[aria-label="Stop weblog"]:not([disabled])');
    assert.equal(await page.$eval('button[aria-label="Start weblog"]', (b) => (b as HTMLButtonElement).disabled), true);
    await stop!.click();
    await badgeReads(page, "weblog", "stopped");
    assert.equal((await agent.input("weblog")).state, "stopped");
    await page.waitForSelector('button[aria-label="Stop weblog"][disabled]');
    const start = await page.waitForSelector('button[aria-label="Start weblog"]:not([disabled])');
    await start!.click();
    await badgeReads(page, "weblog", "running");
    assert.equal((await agent.input("weblog")).state, "running");
    assert.equal(await textOf(page, "#inputs-body tr:has(button[aria-label='Start weblog']) .row-result"), "Started");
  });

  test("the live tail shows what the file input reads, and pauses", async () => {
    await page.select("#tail-input", "weblog");
    // The tap is subscribed once the stream opened.
    await page.waitForFunction(() => document.getElementById("tail-status")?.textContent === "Waiting for events from weblog…");
    appendFileSync(join(agent.dir, "weblog.log"), "GET /wp-login.php 404 from 198.51.100.23\n");
    await page.waitForFunction(() => document.getElementById("tail-log")?.textContent?.includes("GET /wp-login.php 404 from 198.51.100.23"));
    await page.click("#tail-pause");
    assert.equal(await textOf(page, "#tail-pause"), "Resume");
    appendFileSync(join(agent.dir, "weblog.log"), "POST /xmlrpc.php 403 from 198.51.100.24\n");
    await page.waitForFunction(() => /Paused — 1 new event held/.test(document.getElementById("tail-status")?.textContent ?? ""));
    assert.doesNotMatch(await textOf(page, "#tail-log"), /xmlrpc/);
    await page.click("#tail-pause");
    await page.waitForFunction(() => document.getElementById("tail-log")?.textContent?.includes("POST /xmlrpc.php 403"));
  });

  test("six indicators typed into \"Threat data\": the preview says 6, Submit says accepted 6, the receiver gets the six lines", async () => {
    const arrivals = new Arrivals(receiver, "desk");
    const textarea = await labelled(page, "Threat data");
    assert.equal(await textarea.evaluate((el) => el.tagName), "TEXTAREA");
    await textarea.type(IOCS.join("\n"));
    await page.waitForFunction(() => document.querySelector(".submit-form .preview")?.textContent === "6 events will be submitted");
    await screenshot("console-1280x800", 1280, 800);
    await page.setViewport({ width: 1280, height: 800 });
    await page.click(".submit-form button[type=submit]");
    await page.waitForFunction(() => document.querySelector(".submit-form .result")?.textContent === "accepted 6");
    assert.equal(await textarea.evaluate((el) => (el as HTMLTextAreaElement).value), "", "the textarea is cleared");
    await settleOrFail([[arrivals, 6]], () => `the six indicators: ${agent.log().slice(-1500)}`);
    assert.deepEqual(await arrivals.lines(), IOCS);
    assert.deepEqual(arrivals.kinds(), [["manual-ti", "desk.txt"]]);
  });

  test("a body the agent refuses is named in the preview, and nothing is submitted", async () => {
    const arrivals = new Arrivals(receiver, "desk");
    const before = arrivals.count();
    await page.click(".submit-form input[type=radio][value=json]");
    await page.type(".submit-form textarea", '{"indicator": "203.0.113.50"');
    await page.waitForFunction(() => /invalid JSON/.test(document.querySelector(".submit-form .preview")?.textContent ?? ""));
    await page.click(".submit-form button[type=submit]");
    await page.waitForFunction(() => /^Not submitted \(nothing was taken\): invalid JSON/.test(document.querySelector(".submit-form .result")?.textContent ?? ""));
    assert.equal(arrivals.count(), before);
    // The refusal is an answer of the API (400), which the page shows; it is not a failure of the page.
    failedResponses.splice(0, failedResponses.length, ...failedResponses.filter((r) => !/^400 POST .*\/inputs\/desk\/events/.test(r)));
    await page.$eval(".submit-form textarea", (el) => {
      (el as HTMLTextAreaElement).value = "";
      el.dispatchEvent(new Event("input"));
    });
    await page.click(".submit-form input[type=radio][value=lines]");
  });

  test("Detect lets the agent tell the format; a picked report.json is sent as JSON", async () => {
    const arrivals = new Arrivals(receiver, "desk");
    const before = (await arrivals.lines()).length;
    await page.click(".submit-form input[type=radio][value=detect]");
    await page.type(".submit-form textarea", '{"indicator":"203.0.113.60"}\n{"indicator":"203.0.113.61"}');
    await page.waitForFunction(() => document.querySelector(".submit-form .preview")?.textContent === "2 events will be submitted");
    await page.$eval(".submit-form textarea", (el) => {
      (el as HTMLTextAreaElement).value = "";
      el.dispatchEvent(new Event("input"));
    });

    const report = join(agent.dir, "report.json");
    writeFileSync(report, JSON.stringify([{ indicator: "203.0.113.70", type: "ip" }, { indicator: "bad.example", type: "domain" }, { indicator: "203.0.113.71", type: "ip" }]));
    const picker = (await page.$(".submit-form input[type=file]"))!;
    await picker.uploadFile(report);
    await page.waitForFunction(() => document.querySelector(".submit-form .preview")?.textContent === "3 events will be submitted");
    assert.equal(await page.$eval(".submit-form input[type=radio]:checked", (el) => (el as HTMLInputElement).value), "json");
    assert.equal(await page.$eval(".submit-form textarea", (el) => (el as HTMLTextAreaElement).disabled), true, "the text is set aside while a file is picked");
    await page.click(".submit-form button[type=submit]");
    await page.waitForFunction(() => document.querySelector(".submit-form .result")?.textContent === "accepted 3");
    assert.equal(await page.$eval(".submit-form input[type=file]", (el) => (el as HTMLInputElement).files?.length ?? 0), 0, "the file is cleared");
    await settleOrFail([[arrivals, before + 3]], () => `report.json: ${agent.log().slice(-1500)}`);
    assert.deepEqual(await arrivals.since(before), [
      '{"indicator":"203.0.113.70","type":"ip"}', '{"indicator":"bad.example","type":"domain"}', '{"indicator":"203.0.113.71","type":"ip"}',
    ]);
    await page.click(".submit-form input[type=radio][value=lines]");
  });

  test("the narrow window; no errors in the page meanwhile", async () => {
    await screenshot("console-420x800", 420, 800);
    await page.setViewport({ width: 1280, height: 800 });
    assert.deepEqual(pageErrors, [], "errors in the page (script errors, Content-Security-Policy refusals)");
    assert.deepEqual(failedResponses, [], "requests of the page that failed");
  });

  test("a session that ended under the page: its next request gets 401 and the page shows how to log in", async () => {
    // The browser forgets the cookie (as when it expires); the page learns it at its next request.
    await browser.deleteCookie(...(await browser.cookies()));
    await page.click('button[aria-label="Restart weblog"]');
    await page.waitForSelector("#login:not([hidden])");
    assert.match(await textOf(page, "#login-reason"), /session has ended/);
    assert.equal(await page.$eval("#console", (el) => (el as HTMLElement).hidden), true);
  });

  test("Log out ends the session on the server: its cookie no longer opens anything", async () => {
    const ran = await cli(agent.dir, ["console", "-c", "agent.config.toml"]);
    await page.goto(ran.stdout.trim().split("\n").at(-1)!);
    await page.waitForSelector("#console:not([hidden])");
    const cookies = await browser.cookies();
    assert.equal(cookies.length, 1, "one session cookie");
    assert.equal(cookies[0]!.httpOnly, true);
    assert.equal(cookies[0]!.sameSite, "Strict");
    const cookie = `${cookies[0]!.name}=${cookies[0]!.value}`;
    assert.equal((await fetch(`${base}/status`, { headers: { cookie } })).status, 200, "the session's cookie opens /status");
    await page.click("#logout");
    await page.waitForSelector("#login:not([hidden])");
    assert.equal((await fetch(`${base}/status`, { headers: { cookie } })).status, 401, "the ended session's cookie");
    await screenshot("login-1280x800", 1280, 800);
  });
});
