// `cybexp-agent top` without a terminal: the rates from two /status reads, the screen at
// several widths and heights, and the plain line a pipe gets.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { StatusJson } from "../agent/commands/format.ts";
import { cut, formatRate, inputRates, oneLine, paint, perSecond, plainLine, renderScreen, textWidth, type Frame, type Line } from "../agent/commands/top.ts";

type Input = StatusJson["inputs"][number];

const LONG_ERROR = "cannot open /var/log/cowrie/cowrie.json: EACCES: permission denied, open '/var/log/cowrie/cowrie.json'";
const URL = "http://127.0.0.1:41234";
const READ_AT = new Date("2026-12-07T23:10:01.345Z");

function input(name: string, fields: Partial<Input> = {}): Input {
  return { name, type: "file", state: "running", events: 0, bytes: 0, errors: 0, restarts: 0, last_event_at: null, last_error: null, ...fields };
}

function status(inputs: Input[], output: Partial<StatusJson["output"]> = {}, spool: Partial<StatusJson["spool"]> = {}): StatusJson {
  return {
    agent: { version: "0.1.0", pid: 4242, uptime_s: 3725, hostname: "sensor-1.example.net" },
    inputs,
    output: { state: "ok", sent_events: 0, sent_uploads: 0, retries: 0, dead_lettered: 0, last_error: null, ...output },
    spool: { events: 12, bytes: 3174, max_bytes: 256 * 1024 * 1024, oldest_event_age_s: 0.4, dropped: 0, full: null, ...spool },
  };
}

/** Two reads 2 s apart: auth took 240 events (120/s) and 20480 bytes (10 KiB/s), desk 40 (20/s);
 *  cowrie failed with a long error; the output made 4 uploads (2/s). */
function twoReads(): Frame {
  const prev = status([
    input("auth", { events: 1000, bytes: 100_000 }),
    input("desk", { type: "manual", events: 50, bytes: 5000 }),
    input("cowrie", { state: "failed", events: 7, bytes: 700, errors: 2, restarts: 3, last_error: LONG_ERROR }),
  ], { sent_uploads: 10, sent_events: 500 });
  const cur = status([
    input("auth", { events: 1240, bytes: 120_480 }),
    input("desk", { type: "manual", events: 90, bytes: 9000 }),
    input("cowrie", { state: "failed", events: 7, bytes: 700, errors: 3, restarts: 3, last_error: LONG_ERROR }),
  ], { sent_uploads: 14, sent_events: 780, retries: 1, dead_lettered: 2 });
  return { prev, cur, elapsedS: 2, readAt: READ_AT };
}

function firstRead(): Frame {
  const f = twoReads();
  return { cur: f.cur, elapsedS: 0, readAt: READ_AT };
}

const texts = (lines: Line[]) => lines.map((l) => l.text);
/** The table row of an input (its name maybe cut): its cells, split where two or more spaces are. */
function row(lines: Line[], name: string): string[] {
  const cells = texts(lines).map((t) => t.split(/ {2,}/)).find(([first]) => first === name || (first!.endsWith("…") && name.startsWith(first!.slice(0, -1))));
  assert.ok(cells, `a row for ${name} in:\n${texts(lines).join("\n")}`);
  return cells;
}
function header(lines: Line[]): string[] {
  const line = texts(lines).find((t) => t.startsWith("INPUT"));
  assert.ok(line, `the table header in:\n${texts(lines).join("\n")}`);
  return line.split(/ {2,}/);
}
/** The cell of `name`'s row under `title`. */
function cell(lines: Line[], name: string, title: string): string {
  const h = header(lines);
  const k = h.indexOf(title);
  assert.notEqual(k, -1, `a ${title} column in ${h.join(" | ")}`);
  return row(lines, name)[k]!;
}

describe("top: rates", () => {
  test("a counter's difference over the real time between the reads; none without a first read or after a reset", () => {
    assert.equal(perSecond(1000, 1240, 2), 120);
    assert.equal(perSecond(10, 11, 0.5), 2);
    assert.equal(perSecond(undefined, 1240, 2), null, "first read");
    assert.equal(perSecond(1240, 5, 2), null, "counter went back");
    assert.equal(perSecond(5, 6, 0), null, "no time passed");
  });

  test("per input by name; an input new in the second read has none yet", () => {
    const f = twoReads();
    f.cur.inputs.push(input("new", { events: 99 }));
    const r = inputRates(f);
    assert.deepEqual(r.get("auth"), { events: 120, bytes: 10_240 });
    assert.deepEqual(r.get("desk"), { events: 20, bytes: 2000 });
    assert.deepEqual(r.get("cowrie"), { events: 0, bytes: 0 });
    assert.deepEqual(r.get("new"), { events: null, bytes: null });
  });

  test("rates read short: -, 0, one decimal below 10, whole numbers, then k and M", () => {
    assert.deepEqual([null, 0, 0.25, 2, 9.96, 120.4, 12345, 123_456, 2_345_678].map(formatRate), ["-", "0", "0.3", "2", "10", "120", "12345", "123k", "2.3M"]);
  });

  test("the screen shows the rates of two reads, and - on the first frame", () => {
    const lines = renderScreen(twoReads(), URL, { columns: 120, rows: 30 });
    assert.equal(cell(lines, "auth", "EVENTS/S"), "120");
    assert.equal(cell(lines, "auth", "BYTES/S"), "10 KiB");
    assert.equal(cell(lines, "desk", "EVENTS/S"), "20");
    assert.equal(cell(lines, "cowrie", "EVENTS/S"), "0");
    assert.match(texts(lines)[1]!, /^inputs 3 \(2 running, 1 failed\) {3}events\/s 140 {3}bytes\/s 12 KiB$/);
    assert.match(texts(lines).find((t) => t.startsWith("OUTPUT"))!, /^OUTPUT {2}ok {3}uploads\/s 2 {3}events\/s 140 {3}retries 1 {3}dead letters 2$/);

    const first = renderScreen(firstRead(), URL, { columns: 120, rows: 30 });
    for (const name of ["auth", "desk", "cowrie"]) {
      assert.equal(cell(first, name, "EVENTS/S"), "-");
      assert.equal(cell(first, name, "BYTES/S"), "-");
    }
    assert.match(texts(first).find((t) => t.startsWith("OUTPUT"))!, /uploads\/s - /);
  });
});

describe("top: the screen fits the terminal", () => {
  for (const columns of [40, 60, 70, 100, 120, 160]) {
    test(`${columns} columns: no line wider, every input with its state, the last line the footer`, () => {
      const lines = renderScreen(twoReads(), URL, { columns, rows: 30 });
      for (const t of texts(lines)) assert.ok(textWidth(t) <= columns, `${textWidth(t)} > ${columns}: ${JSON.stringify(t)}`);
      assert.equal(cell(lines, "auth", "STATE"), "running");
      assert.equal(cell(lines, "desk", "STATE"), "running");
      assert.equal(cell(lines, "cowrie", "STATE"), "failed");
      assert.equal(cell(lines, "auth", "EVENTS/S"), "120");
      assert.match(texts(lines).at(-1)!, /^q: quit/);
      assert.equal(lines[0]!.style, "title");
      assert.equal(textWidth(lines[0]!.text), columns, "the title bar spans the width");
    });
  }

  test("narrow terminals leave out the least needed columns; wide ones show them all", () => {
    assert.deepEqual(header(renderScreen(twoReads(), URL, { columns: 60, rows: 30 })), ["INPUT", "STATE", "EVENTS/S", "ERRORS", "LAST ERROR"]);
    assert.deepEqual(header(renderScreen(twoReads(), URL, { columns: 100, rows: 30 })), ["INPUT", "TYPE", "STATE", "EVENTS/S", "BYTES/S", "ERRORS", "LAST ERROR"]);
    assert.deepEqual(header(renderScreen(twoReads(), URL, { columns: 160, rows: 30 })),
      ["INPUT", "TYPE", "STATE", "EVENTS/S", "BYTES/S", "EVENTS", "ERRORS", "RESTARTS", "LAST ERROR"]);
    assert.equal(cell(renderScreen(twoReads(), URL, { columns: 160, rows: 30 }), "cowrie", "RESTARTS"), "3");
  });

  test("the last error is cut with an ellipsis to the width left, and shown whole when it fits", () => {
    for (const columns of [60, 100]) {
      const lines = renderScreen(twoReads(), URL, { columns, rows: 30 });
      const err = cell(lines, "cowrie", "LAST ERROR");
      assert.ok(err.endsWith("…"), `cut at ${columns}: ${err}`);
      assert.ok(LONG_ERROR.startsWith(err.slice(0, -1)), `the start of the error at ${columns}: ${err}`);
      assert.ok(err.length >= 15, `enough of it to read at ${columns}: ${err}`);
      assert.equal(texts(lines).find((t) => t.startsWith("cowrie"))!.length, columns, "the error takes the rest of the line");
    }
    const wide = renderScreen(twoReads(), URL, { columns: 200, rows: 30 });
    assert.equal(cell(wide, "cowrie", "LAST ERROR"), LONG_ERROR);
  });

  test("the output's last error: its own line, cut to the width", () => {
    const f = twoReads();
    f.cur.output = { ...f.cur.output, state: "retrying", last_error: `connect ECONNREFUSED 127.0.0.1:8080 ${"x".repeat(200)}` };
    for (const columns of [60, 160]) {
      const lines = renderScreen(f, URL, { columns, rows: 30 });
      const k = texts(lines).findIndex((t) => t.startsWith("OUTPUT"));
      assert.equal(lines[k]!.style, "warn");
      assert.match(lines[k + 1]!.text, /^ {8}last error: connect ECONNREFUSED 127\.0\.0\.1:8080 x+…$/);
      assert.equal(lines[k + 1]!.text.length, columns);
    }
  });

  test("long names are cut, and shortened further on a narrow terminal; wide characters count twice", () => {
    const f = twoReads();
    const longName = "cowrie-honeypot-json-logs-of-the-dmz";
    const wideName = "ログ収集センサー入力";
    f.cur.inputs.push(input(longName), input(wideName, { last_error: "エラー: 接続できません".repeat(5) }));
    for (const columns of [40, 60, 100, 160]) {
      const lines = renderScreen(f, URL, { columns, rows: 30 });
      for (const t of texts(lines)) assert.ok(textWidth(t) <= columns, `${textWidth(t)} > ${columns}: ${t}`);
      const nameCell = texts(lines).find((t) => t.startsWith("cowrie-"))!.split(/ {2,}/)[0]!;
      assert.ok(nameCell.endsWith("…") && textWidth(nameCell) <= 24, `${nameCell} at ${columns}`);
      const widths = new Set(texts(lines).filter((t) => / running | failed /.test(t)).map((t) => textWidth(t.split(/ (running|failed) /)[0]!)));
      assert.equal(widths.size, 1, `the STATE column lines up at ${columns}: ${texts(lines).join("\n")}`);
    }
  });

  test("more inputs than rows: the rows that do not fit are counted in one line, and the screen is no taller", () => {
    const f = twoReads();
    for (let k = 0; k < 40; k++) f.cur.inputs.push(input(`extra-${k}`));
    const lines = renderScreen(f, URL, { columns: 100, rows: 24 });
    assert.equal(lines.length, 24);
    const more = texts(lines).find((t) => t.startsWith("… "));
    const shown = texts(lines).filter((t) => /^(auth|desk|cowrie|extra-\d+) /.test(t)).length;
    assert.equal(more, `… ${43 - shown} more inputs`);
    assert.match(texts(lines).at(-1)!, /^q: quit/);
    assert.ok(texts(lines).some((t) => t.startsWith("SPOOL")));
  });

  test("what the daemon or a remote server said cannot act on the terminal: control characters become spaces", () => {
    const f = twoReads();
    f.cur.inputs[2]!.last_error = "bad\x1b[2J\x1b]0;owned\x07 line\r\nnext\ttab";
    f.cur.inputs[0]!.name = "au\x1b[31mth";
    const lines = renderScreen(f, URL, { columns: 160, rows: 30 });
    for (const t of texts(lines)) assert.doesNotMatch(t, /[\x00-\x1f\x7f]/, JSON.stringify(t));
    assert.equal(cell(lines, "cowrie", "LAST ERROR"), "bad [2J ]0;owned line next tab");
    assert.equal(oneLine("a\u202eb\n\nc"), "a b c");
  });

  test("cut: within the width, an ellipsis when something was cut, nothing when it fits", () => {
    assert.equal(cut("abcdef", 6), "abcdef");
    assert.equal(cut("abcdef", 4), "abc…");
    assert.equal(cut("abcdef", 1), "…");
    assert.equal(cut("abcdef", 0), "");
    assert.equal(cut("日本語", 4), "日…");
    assert.equal(textWidth("日本語"), 6);
  });

  test("the spool: its events, bytes of max_bytes, oldest age; a full spool says so", () => {
    const f = twoReads();
    assert.match(texts(renderScreen(f, URL, { columns: 100, rows: 30 })).find((t) => t.startsWith("SPOOL"))!,
      /^SPOOL {3}12 events {3}3\.1 KiB of 256 MiB {3}oldest 0s {3}dropped 0$/);
    f.cur.spool.full = "max_bytes";
    const lines = renderScreen(f, URL, { columns: 100, rows: 30 });
    const spool = lines.find((l) => l.text.startsWith("SPOOL"))!;
    assert.match(spool.text, /FULL \(max_bytes\): inputs paused$/);
    assert.equal(spool.style, "bad");
  });

  test("the title bar gives way from the end: control URL, host, pid", () => {
    const at = (columns: number) => renderScreen(twoReads(), URL, { columns, rows: 30 })[0]!.text.trim();
    assert.equal(at(120), `cybexp-agent 0.1.0  pid 4242  up 1h2m  host sensor-1.example.net  control ${URL}`);
    assert.equal(at(70), "cybexp-agent 0.1.0  pid 4242  up 1h2m  host sensor-1.example.net");
    assert.equal(at(40), "cybexp-agent 0.1.0  pid 4242  up 1h2m");
  });

  test("painting: from the top left, each line clears its rest and the rows below are cleared, but no clear lands on a last column", () => {
    const lines: Line[] = [{ text: "title", style: "title" }, { text: "a" }, { text: "b", style: "bad" }];
    // "title" fills the 5 columns: the cursor stays on its "e", which a clear would erase
    assert.equal(paint(lines, { columns: 5, rows: 10 }, true), "\x1b[H\x1b[7mtitle\x1b[0m\r\na\x1b[K\r\n\x1b[31mb\x1b[0m\x1b[K\x1b[4;1H\x1b[J");
    assert.equal(paint(lines, { columns: 5, rows: 3 }, false), "\x1b[H\x1b[7mtitle\x1b[0m\r\na\x1b[K\r\nb\x1b[K", "a full screen: nothing below to clear, no newline, no colour");
  });
});

describe("top: the plain line", () => {
  test("one line of greppable fields, no escape codes, each input's events/s at the end", () => {
    const line = plainLine(twoReads());
    assert.equal(line,
      "2026-12-07T23:10:01Z inputs 3 (2 running, 1 failed) events/s 140 bytes/s 12 KiB output ok uploads/s 2 retries 1 dead 2 " +
      "spool 12 events 3.1 KiB oldest 0s auth=120 desk=20 cowrie=0");
    assert.doesNotMatch(line, /[\x00-\x1f]/);
  });

  test("the first line has no rates yet; odd names are quoted so that name=rate stays one word", () => {
    const f = firstRead();
    f.cur.inputs[1]!.name = "my desk";
    assert.equal(plainLine(f),
      '2026-12-07T23:10:01Z inputs 3 (2 running, 1 failed) events/s - bytes/s - output ok uploads/s - retries 1 dead 2 ' +
      'spool 12 events 3.1 KiB oldest 0s auth=- "my desk"=- cowrie=-');
  });
});
