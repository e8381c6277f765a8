// The web console's files: agent/console/assets.ts is what `npm run console-assets` makes of
// agent/console/web/, the page stays small, it runs under the control server's
// Content-Security-Policy (default-src 'self': no inline script or style, nothing from
// elsewhere), and the page's own helpers (rates, sparklines, formats) do what they say.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { describe, test } from "node:test";
import { ASSETS_MODULE, CONSOLE_FILES, WEB_DIR, renderAssetsModule } from "../scripts/console-assets.ts";
import { CONSOLE_ASSETS } from "../agent/console/assets.ts";

const MAX_TOTAL_BYTES = 150 * 1024;
const web = (file: string) => readFileSync(join(WEB_DIR, file), "utf8");
const html = web("index.html");
const js = web("app.js");
const css = web("app.css");

/** The start tags of an HTML text, e.g. `<script type="module" src="/console/app.js">`. */
function startTags(text: string): string[] {
  return text.match(/<[a-zA-Z][^>]*>/g) ?? [];
}

describe("the console's generated module", () => {
  test("agent/console/assets.ts is what npm run console-assets writes from agent/console/web/", () => {
    const have = readFileSync(ASSETS_MODULE, "utf8");
    assert.ok(have === renderAssetsModule(), "agent/console/assets.ts is stale: run npm run console-assets");
  });

  test("it serves each file of agent/console/web/ at its path with its content type", () => {
    assert.deepEqual(Object.keys(CONSOLE_ASSETS).sort(), ["/", "/console/app.css", "/console/app.js"]);
    for (const { path, file, type } of CONSOLE_FILES) {
      assert.equal(CONSOLE_ASSETS[path]!.body, web(file), path);
      assert.equal(CONSOLE_ASSETS[path]!.type, type, path);
    }
    assert.match(CONSOLE_ASSETS["/"]!.type, /^text\/html/);
    assert.match(CONSOLE_ASSETS["/console/app.js"]!.type, /^text\/javascript/);
    assert.match(CONSOLE_ASSETS["/console/app.css"]!.type, /^text\/css/);
  });

  test(`the three files together stay under ${MAX_TOTAL_BYTES / 1024} KiB`, () => {
    const total = Object.values(CONSOLE_ASSETS).reduce((n, a) => n + new TextEncoder().encode(a.body).length, 0);
    assert.ok(total < MAX_TOTAL_BYTES, `the console is ${total} bytes`);
  });
});

describe("the page under default-src 'self'", () => {
  test("index.html has no inline script, no <style>, no style= attribute and no on*= handler", () => {
    assert.doesNotMatch(html, /<style[\s>]/i, "a <style> element");
    const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)];
    assert.ok(scripts.length > 0, "the page loads its script");
    for (const [whole, attrs, body] of scripts) {
      assert.match(attrs!, /\ssrc="[^"]+"/, `a script without src: ${whole}`);
      assert.equal(body!.trim(), "", `a script with an inline body: ${whole}`);
    }
    for (const tag of startTags(html)) {
      assert.doesNotMatch(tag, /\sstyle\s*=/i, `a style attribute: ${tag}`);
      assert.doesNotMatch(tag, /\son[a-z]+\s*=/i, `an inline event handler: ${tag}`);
    }
  });

  test("every src and href of index.html is a same-origin path or an in-page anchor", () => {
    const refs = [...html.matchAll(/\s(?:src|href|action|formaction|poster|data)\s*=\s*"([^"]*)"/gi)].map((m) => m[1]!);
    assert.ok(refs.includes("/console/app.js") && refs.includes("/console/app.css"), `the page's assets: ${refs.join(" ")}`);
    for (const ref of refs) assert.match(ref, /^(\/(?!\/)|#)/, `not same-origin: ${ref}`);
    assert.doesNotMatch(html, /\ssrcset\s*=/i);
  });

  test("app.css loads nothing from elsewhere", () => {
    assert.doesNotMatch(css, /@import/i);
    assert.doesNotMatch(css, /url\(/i);
  });

  test("app.js evaluates no strings and builds the page with text, never with markup", () => {
    assert.doesNotMatch(js, /\beval\s*\(|new\s+Function\b|setTimeout\(\s*["'`]|setInterval\(\s*["'`]/);
    assert.doesNotMatch(js, /innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
    assert.doesNotMatch(js, /https?:\/\//, "an absolute URL");
  });

  test("every element app.js looks up by id is in index.html", () => {
    const ids = new Set([...html.matchAll(/\sid="([^"]+)"/g)].map((m) => m[1]!));
    const used = [...js.matchAll(/\$\("([^"]+)"\)/g)].map((m) => m[1]!);
    assert.ok(used.length > 10);
    for (const id of used) assert.ok(ids.has(id), `app.js uses #${id}, which index.html does not have`);
  });

  test("the submission form's textarea is labelled \"Threat data\"", () => {
    assert.match(html, /<label class="data-label">Threat data<\/label>\s*<textarea class="data"/);
  });
});

// A browser script, imported by URL: only its exported pure helpers run outside a browser.
const app = await import(pathToFileURL(join(WEB_DIR, "app.js")).href);

describe("the page's helpers", () => {
  test("durations, sizes, counts and rates read as a person would write them", () => {
    assert.equal(app.formatDuration(5), "5s");
    assert.equal(app.formatDuration(125), "2m 5s");
    assert.equal(app.formatDuration(3 * 3600 + 720), "3h 12m");
    assert.equal(app.formatDuration(93784), "1d 2h");
    assert.equal(app.formatDuration(null), "–");
    assert.equal(app.formatBytes(512), "512 B");
    assert.equal(app.formatBytes(1536), "1.5 KiB");
    assert.equal(app.formatBytes(1 << 30), "1.0 GiB");
    assert.equal(app.formatCount(123456), "123,456");
    assert.equal(app.formatRate(0), "0");
    assert.equal(app.formatRate(0.42), "0.4");
    assert.equal(app.formatRate(1250.4), "1,250");
    assert.equal(app.plural(1, "event"), "1 event");
    assert.equal(app.plural(6, "event"), "6 events");
  });

  test("events per second come from two snapshots; a reset counter or a too-short gap gives none", () => {
    assert.equal(app.rateBetween({ events: 100, at: 0 }, { events: 130, at: 2000 }), 15);
    assert.equal(app.rateBetween({ events: 100, at: 0 }, { events: 100, at: 1000 }), 0);
    assert.equal(app.rateBetween({ events: 100, at: 0 }, { events: 5, at: 1000 }), null);
    assert.equal(app.rateBetween({ events: 100, at: 0 }, { events: 120, at: 100 }), null);
    assert.equal(app.rateBetween(null, { events: 1, at: 1 }), null);
  });

  test("a sparkline puts the newest sample at the right edge and the largest at the top", () => {
    assert.equal(app.sparkPoints([]), "");
    const points = app.sparkPoints([0, 5, 10], 120, 28, 3).split(" ").map((p: string) => p.split(",").map(Number));
    assert.deepEqual(points, [[0, 26], [60, 14], [120, 2]]);
    // Fewer samples than room: they sit at the right.
    const right = app.sparkPoints([1], 120, 28, 60).split(",").map(Number);
    assert.equal(right[0], 120);
  });

  test("Start, Stop and Restart are offered only where they mean something", () => {
    assert.deepEqual(app.actionsFor("running"), { start: false, stop: true, restart: true });
    assert.deepEqual(app.actionsFor("backoff"), { start: false, stop: true, restart: true });
    assert.deepEqual(app.actionsFor("failed"), { start: true, stop: true, restart: false });
    assert.deepEqual(app.actionsFor("stopped"), { start: true, stop: false, restart: false });
    assert.deepEqual(app.actionsFor("disabled"), { start: true, stop: false, restart: false });
  });

  test("a submission's format gives its Content-Type; a picked file's format comes from its name or type", () => {
    assert.equal(app.contentTypeFor("lines"), "text/plain; charset=utf-8");
    assert.equal(app.contentTypeFor("json"), "application/json");
    assert.equal(app.contentTypeFor("ndjson"), "application/x-ndjson");
    assert.equal(app.contentTypeFor("detect"), null);
    assert.equal(app.formatForFile("iocs.txt", ""), "lines");
    assert.equal(app.formatForFile("report.JSON", ""), "json");
    assert.equal(app.formatForFile("cowrie.jsonl", ""), "ndjson");
    assert.equal(app.formatForFile("export", "application/json"), "json");
    assert.equal(app.formatForFile("dump.bin", "application/octet-stream"), "detect");
  });

  test("a tapped event reads as one line: text as it is, JSON compact", () => {
    assert.equal(app.eventText("Failed password for root"), "Failed password for root");
    assert.equal(app.eventText({ indicator: "203.0.113.9", tags: ["ssh"] }), '{"indicator":"203.0.113.9","tags":["ssh"]}');
    assert.match(app.timeOfDay("2026-01-01T12:34:56.789Z"), /^\d\d:\d\d:56\.789$/);
  });
});
