// `cybexp-agent top`: a live view of the running daemon, one /status read a second. The first
// half draws: pure functions from two snapshots, the real time between them and the terminal's
// size to lines of text, so that tests check the view without a terminal. The second half owns
// the terminal: the alternate screen, raw keys, resizes, signals, and putting it all back.
import type { Parsed } from "../cli.ts";
import { errorMessage } from "../errortext.ts";
import { isAlive, type RunningConfig } from "../runningconfig.ts";
import { formatBytes } from "../units.ts";
import { callDaemon, CliError, EXIT, loadConfigForClient, requireDaemon } from "./client.ts";
import { duration, plural, type StatusJson } from "./format.ts";

// ---- text that fits --------------------------------------------------------------------------

/** Columns a code point takes on a terminal: 0 for combining marks, 2 for East Asian wide
 *  characters and emoji, else 1. Close enough to wcwidth for names and error texts. */
function charWidth(cp: number): number {
  if (cp < 0x300) return 1;
  if ((cp <= 0x36f) || (cp >= 0x200b && cp <= 0x200f) || (cp >= 0xfe00 && cp <= 0xfe0f)) return 0;
  if ((cp >= 0x1100 && cp <= 0x115f) || (cp >= 0x2e80 && cp <= 0xa4cf) || (cp >= 0xac00 && cp <= 0xd7a3) || (cp >= 0xf900 && cp <= 0xfaff) ||
      (cp >= 0xfe30 && cp <= 0xfe4f) || (cp >= 0xff00 && cp <= 0xff60) || (cp >= 0xffe0 && cp <= 0xffe6) || (cp >= 0x1f300 && cp <= 0x1f64f) ||
      (cp >= 0x1f900 && cp <= 0x1f9ff) || (cp >= 0x20000 && cp <= 0x3fffd))
    return 2;
  return 1;
}

/** Columns `text` takes on a terminal. */
export function textWidth(text: string): number {
  let w = 0;
  for (const ch of text) w += charWidth(ch.codePointAt(0)!);
  return w;
}

/** One line of shown text from what a daemon or a remote server said: control characters (an
 *  escape sequence in an error would act on the terminal), bidi overrides and line breaks become
 *  spaces. */
export function oneLine(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]+/g, " ").replace(/\s+/g, " ").trim();
}

/** `text` in at most `width` columns, ending in "…" when cut. */
export function cut(text: string, width: number): string {
  if (textWidth(text) <= width) return text;
  if (width <= 0) return "";
  let out = "", w = 0;
  for (const ch of text) {
    const cw = charWidth(ch.codePointAt(0)!);
    if (w + cw > width - 1) break;
    out += ch;
    w += cw;
  }
  return `${out}…`;
}

function padEnd(text: string, width: number): string {
  return text + " ".repeat(Math.max(0, width - textWidth(text)));
}

function padStart(text: string, width: number): string {
  return " ".repeat(Math.max(0, width - textWidth(text))) + text;
}

/** A piece of a line of "label value" fields: `drop` 0 always stays; the others give way,
 *  highest first, to its `short` form when it has one, else entirely. */
interface Field {
  text: string;
  short?: string;
  drop: number;
}

/** The fields joined by `sep` in `width` columns: shortening or leaving out the least
 *  important ones first, and cutting what still does not fit. */
function fitFields(fields: Field[], width: number, sep = "   "): string {
  const shown = fields.map((f) => ({ ...f }));
  const text = () => shown.map((f) => f.text).join(sep);
  const yielding = [...shown].filter((f) => f.drop > 0).sort((a, b) => b.drop - a.drop);
  for (const f of yielding) {
    if (textWidth(text()) <= width) break;
    if (f.short !== undefined) f.text = f.short;
    if (textWidth(text()) <= width) break;
    shown.splice(shown.indexOf(f), 1);
  }
  return cut(text(), width);
}

// ---- rates -----------------------------------------------------------------------------------

/** Two /status reads and the real time between them; the first frame has no `prev`. */
export interface Frame {
  prev?: StatusJson;
  cur: StatusJson;
  /** Seconds between the two reads (0 without `prev`). */
  elapsedS: number;
  /** When `cur` was read. */
  readAt: Date;
}

/** Per second from two readings of a counter; null when there is nothing to compare (first
 *  frame, a new input) or the counter went back (an input made anew by a reload). */
export function perSecond(prev: number | undefined, cur: number, elapsedS: number): number | null {
  if (prev === undefined || !(elapsedS > 0) || cur < prev) return null;
  return (cur - prev) / elapsedS;
}

export interface InputRates {
  events: number | null;
  bytes: number | null;
}

/** Events/s and bytes/s of each input, by name. */
export function inputRates(frame: Frame): Map<string, InputRates> {
  const before = new Map((frame.prev?.inputs ?? []).map((i) => [i.name, i]));
  return new Map(frame.cur.inputs.map((i) => {
    const p = before.get(i.name);
    return [i.name, { events: perSecond(p?.events, i.events, frame.elapsedS), bytes: perSecond(p?.bytes, i.bytes, frame.elapsedS) }];
  }));
}

/** Sum of the rates that are known; null when none is. */
function total(rates: Iterable<number | null>): number | null {
  let sum: number | null = null;
  for (const r of rates) if (r !== null) sum = (sum ?? 0) + r;
  return sum;
}

/** "-", "0", "0.5", "120", "123k", "1.2M". */
export function formatRate(n: number | null): string {
  if (n === null) return "-";
  if (n === 0) return "0";
  if (n < 10) return String(Math.round(n * 10) / 10);
  if (n < 100_000) return String(Math.round(n));
  if (n < 1_000_000) return `${Math.round(n / 1000)}k`;
  return `${(n / 1_000_000).toFixed(1)}M`;
}

function formatByteRate(n: number | null): string {
  return n === null ? "-" : formatBytes(Math.round(n));
}

/** "3 (2 running, 1 failed)". */
function inputCounts(inputs: StatusJson["inputs"]): string {
  const byState = new Map<string, number>();
  for (const i of inputs) byState.set(i.state, (byState.get(i.state) ?? 0) + 1);
  const parts = [...byState].sort(([a], [b]) => (a === "running" ? -1 : b === "running" ? 1 : a.localeCompare(b))).map(([s, n]) => `${n} ${s}`);
  return parts.length ? `${inputs.length} (${parts.join(", ")})` : "0";
}

// ---- the plain line --------------------------------------------------------------------------

/** A name as one greppable word: as it is when it is plain, else quoted. */
function word(name: string): string {
  return /^[\w.-]+$/.test(name) ? name : JSON.stringify(name);
}

/** One line a second when standard output is no terminal: no escape codes, the same fields in
 *  the same order each time, each input's events/s as name=rate at the end. */
export function plainLine(frame: Frame): string {
  const { cur, prev, elapsedS } = frame;
  const rates = inputRates(frame);
  const o = cur.output, sp = cur.spool;
  const fields = [
    frame.readAt.toISOString().replace(/\.\d{3}Z$/, "Z"),
    `inputs ${inputCounts(cur.inputs)}`,
    `events/s ${formatRate(total([...rates.values()].map((r) => r.events)))}`,
    `bytes/s ${formatByteRate(total([...rates.values()].map((r) => r.bytes)))}`,
    `output ${o.state}`,
    `uploads/s ${formatRate(perSecond(prev?.output.sent_uploads, o.sent_uploads, elapsedS))}`,
    `retries ${o.retries}`,
    `dead ${o.dead_lettered}`,
    `spool ${sp.events} events ${formatBytes(sp.bytes)} oldest ${duration(Math.round(sp.oldest_event_age_s))}`,
    ...(sp.full ? [`full ${sp.full}`] : []),
    ...cur.inputs.map((i) => `${word(i.name)}=${formatRate(rates.get(i.name)!.events)}`),
  ];
  return fields.join(" ");
}

// ---- the screen ------------------------------------------------------------------------------

/** How the terminal loop shows a line: inverse, bold, red or yellow. */
export type LineStyle = "title" | "heading" | "bad" | "warn";

export interface Line {
  text: string;
  style?: LineStyle;
}

export interface ScreenSize {
  columns: number;
  rows: number;
}

const GAP = "  ";
/** Input names longer than this are cut even on a wide terminal, and shortened down to NAME_MIN on a narrow one. */
const NAME_MAX = 24, NAME_MIN = 8;
/** The last error column is kept on a narrow terminal while it can show this much of an error;
 *  the extra columns (EXTRA and up) are shown only while it can show ERROR_WIDE. */
const ERROR_MIN = 20, ERROR_WIDE = 60, EXTRA = 5;
/** "OUTPUT" and "SPOOL" take the width of this, so that their values line up. */
const LABEL_WIDTH = 8;

interface Column {
  title: string;
  cells: string[];
  right?: boolean;
  /** 0 always stays; the others are left out on a narrow terminal, highest first. */
  drop: number;
  width: number;
}

/** The input table: the columns that fit in `width`, the last error in what is left. */
function inputTable(frame: Frame, width: number): Line[] {
  const inputs = frame.cur.inputs;
  const rates = inputRates(frame);
  const column = (title: string, cells: string[], drop: number, right = false): Column =>
    ({ title, cells, drop, right, width: Math.max(textWidth(title), ...cells.map(textWidth)) });
  const name = column("INPUT", inputs.map((i) => oneLine(i.name)), 0);
  name.width = Math.min(name.width, NAME_MAX);
  const columns = [
    name,
    column("TYPE", inputs.map((i) => oneLine(i.type)), 4),
    column("STATE", inputs.map((i) => i.state), 0),
    column("EVENTS/S", inputs.map((i) => formatRate(rates.get(i.name)!.events)), 0, true),
    column("BYTES/S", inputs.map((i) => formatByteRate(rates.get(i.name)!.bytes)), 3, true),
    column("EVENTS", inputs.map((i) => String(i.events)), 5, true),
    column("ERRORS", inputs.map((i) => String(i.errors)), 2, true),
    column("RESTARTS", inputs.map((i) => String(i.restarts)), 6, true),
  ];
  const errors = inputs.map((i) => (i.last_error ? oneLine(i.last_error) : "-"));
  const errorsWidth = Math.max(textWidth("LAST ERROR"), ...errors.map(textWidth));
  let showErrors = true;
  const fixed = () => columns.reduce((sum, c) => sum + c.width + GAP.length, 0);
  const errorRoom = () => Math.min(errorsWidth, columns.some((c) => c.drop >= EXTRA) ? ERROR_WIDE : ERROR_MIN);
  const need = () => fixed() + (showErrors ? errorRoom() : -GAP.length);
  for (const c of [...columns].filter((c) => c.drop > 0).sort((a, b) => b.drop - a.drop)) {
    if (need() <= width) break;
    columns.splice(columns.indexOf(c), 1);
  }
  if (need() > width) name.width = Math.max(Math.min(name.width, NAME_MIN), name.width - (need() - width));
  if (need() > width) showErrors = false;
  const errorWidth = Math.max(0, width - fixed());
  const row = (cells: string[], error: string) => {
    const text = columns.map((c, k) => (c.right ? padStart : padEnd)(cut(cells[k]!, c.width), c.width)).join(GAP);
    return cut((showErrors ? `${text}${GAP}${cut(error, errorWidth)}` : text).trimEnd(), width);
  };
  const lines: Line[] = [{ text: row(columns.map((c) => c.title), "LAST ERROR"), style: "heading" }];
  inputs.forEach((input, k) => {
    const text = row(columns.map((c) => c.cells[k]!), errors[k]!);
    lines.push(input.state === "failed" ? { text, style: "bad" } : input.state === "backoff" ? { text, style: "warn" } : { text });
  });
  return lines;
}

function labelled(label: string, fields: Field[], width: number): string {
  return cut(padEnd(label, LABEL_WIDTH) + fitFields(fields, width - LABEL_WIDTH), width);
}

/**
 * The whole screen for one frame: a title bar (version, pid, uptime, host, control URL), the
 * inputs' totals, one row per input, the output, the spool and a footer. No line is wider than
 * `size.columns` (what does not fit is left out, shortened, or cut with "…"), and when there are
 * more inputs than rows, the last rows are summed up in one.
 */
export function renderScreen(frame: Frame, controlUrl: string, size: ScreenSize): Line[] {
  const width = Math.max(1, size.columns);
  const { cur, prev, elapsedS } = frame;
  const a = cur.agent, o = cur.output, sp = cur.spool;
  const rates = [...inputRates(frame).values()];

  const title = fitFields([
    { text: `cybexp-agent ${a.version}`, drop: 0 },
    { text: `pid ${a.pid}`, drop: 2 },
    { text: `up ${duration(a.uptime_s)}`, drop: 1 },
    { text: `host ${oneLine(a.hostname)}`, drop: 3 },
    { text: `control ${controlUrl}`, drop: 4 },
  ], width - 2, "  ");
  const summary = fitFields([
    { text: `inputs ${inputCounts(cur.inputs)}`, short: `inputs ${cur.inputs.length}`, drop: 1 },
    { text: `events/s ${formatRate(total(rates.map((r) => r.events)))}`, drop: 0 },
    { text: `bytes/s ${formatByteRate(total(rates.map((r) => r.bytes)))}`, drop: 2 },
  ], width);

  const outputLine: Line = {
    text: labelled("OUTPUT", [
      { text: o.state, drop: 0 },
      { text: `uploads/s ${formatRate(perSecond(prev?.output.sent_uploads, o.sent_uploads, elapsedS))}`, drop: 0 },
      { text: `events/s ${formatRate(perSecond(prev?.output.sent_events, o.sent_events, elapsedS))}`, drop: 3 },
      { text: `retries ${o.retries}`, drop: 1 },
      { text: `dead letters ${o.dead_lettered}`, short: `dead ${o.dead_lettered}`, drop: 2 },
    ], width),
  };
  if (o.state === "retrying") outputLine.style = "warn";
  else if (o.state !== "ok") outputLine.style = "bad";
  const outputError: Line[] = o.last_error
    ? [{ text: cut(`${" ".repeat(LABEL_WIDTH)}last error: ${oneLine(o.last_error)}`, width), ...(o.state === "ok" ? {} : { style: outputLine.style }) }]
    : [];
  const spoolLine: Line = {
    text: labelled("SPOOL", [
      { text: plural(sp.events, "event"), drop: 0 },
      { text: `${formatBytes(sp.bytes)} of ${formatBytes(sp.max_bytes)}`, short: formatBytes(sp.bytes), drop: 1 },
      { text: `oldest ${duration(Math.round(sp.oldest_event_age_s))}`, drop: 0 },
      { text: `dropped ${sp.dropped}`, drop: 2 },
      ...(sp.full ? [{ text: `FULL (${sp.full}): inputs paused`, short: "FULL", drop: 0 }] : []),
    ], width),
    ...(sp.full ? { style: "bad" as const } : {}),
  };
  const time = frame.readAt.toTimeString().slice(0, 8);
  const footer = width >= 8 + 2 + time.length ? `${padEnd("q: quit", width - time.length)}${time}` : cut("q: quit", width);

  const [heading, ...rows] = cur.inputs.length ? inputTable(frame, width) : [{ text: "no inputs configured" }];
  const top: Line[] = [{ text: padEnd(` ${title}`, width), style: "title" }, { text: summary }, { text: "" }, heading!];
  const bottom: Line[] = [{ text: "" }, outputLine, ...outputError, spoolLine, { text: "" }, { text: footer }];
  // Rows the terminal has no room for are summed up in the last one that fits.
  const room = size.rows - top.length - bottom.length;
  if (rows.length > room && room >= 1) {
    const hidden = rows.length - room + 1;
    rows.splice(room - 1, rows.length, { text: cut(`… ${plural(hidden, "more input")}`, width) });
  }
  return [...top, ...rows, ...bottom].slice(0, Math.max(1, size.rows));
}

// ---- the daemon --------------------------------------------------------------------------------

interface Read {
  status: StatusJson;
  /** performance.now() when the answer came. */
  at: number;
  readAt: Date;
}

async function readStatus(rc: RunningConfig): Promise<Read> {
  try {
    const { body } = await callDaemon(rc, "GET", "/status");
    return { status: body as StatusJson, at: performance.now(), readAt: new Date() };
  } catch (err) {
    // A daemon that shuts down closes its control server a moment before it exits.
    const end = Date.now() + 2000;
    while (isAlive(rc.pid) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    if (!isAlive(rc.pid)) throw new CliError(`the daemon (pid ${rc.pid}) stopped`);
    throw err instanceof CliError ? err : new CliError(errorMessage(err));
  }
}

/** Ends the loop: resolves once with the exit code, from a key, a signal or a closed output. */
class Quit {
  code: number | undefined;
  private wake = () => {};
  readonly promise = new Promise<void>((r) => (this.wake = r));
  now(code: number): void {
    if (this.code !== undefined) return;
    this.code = code;
    this.wake();
  }
  /** Waits `ms`, or less when the loop ends meanwhile. */
  async sleep(ms: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([new Promise((r) => (timer = setTimeout(r, ms))), this.promise]);
    clearTimeout(timer);
  }
  /** `p`, or undefined when the loop ends first. */
  race<T>(p: Promise<T>): Promise<T | undefined> {
    return Promise.race([p, this.promise.then(() => undefined)]);
  }
}

/** Reads /status once a second until `quit`, handing each frame to `show`. Each read starts a
 *  second after the one before started, so a slow answer does not slow the pace. */
async function readEverySecond(rc: RunningConfig, quit: Quit, show: (frame: Frame) => void): Promise<void> {
  let prev: Read | undefined;
  let next = performance.now();
  while (quit.code === undefined) {
    const read = await quit.race(readStatus(rc));
    if (!read) return;
    show({ prev: prev?.status, cur: read.status, elapsedS: prev ? (read.at - prev.at) / 1000 : 0, readAt: read.readAt });
    prev = read;
    next = Math.max(next + 1000, performance.now());
    await quit.sleep(next - performance.now());
  }
}

const QUIT_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

function onQuitSignals(quit: Quit): () => void {
  const handler = () => quit.now(EXIT.ok);
  for (const s of QUIT_SIGNALS) process.on(s, handler);
  return () => {
    for (const s of QUIT_SIGNALS) process.off(s, handler);
  };
}

// ---- the terminal ------------------------------------------------------------------------------

const ESC = "\x1b[";
/** Alternate screen on, cursor hidden, line wrap off (a line too long is cut by the terminal, not
 *  wrapped into the next row), screen cleared. */
const ENTER = `${ESC}?1049h${ESC}?25l${ESC}?7l${ESC}H${ESC}2J`;
/** All back as it was: attributes reset, wrap on, cursor shown, the shell's screen back. */
const LEAVE = `${ESC}0m${ESC}?7h${ESC}?25h${ESC}?1049l`;

function styled(line: Line, color: boolean): string {
  switch (line.style) {
    case "title": return `${ESC}7m${line.text}${ESC}0m`;
    case "heading": return `${ESC}1m${line.text}${ESC}0m`;
    case "bad": return color ? `${ESC}31m${line.text}${ESC}0m` : line.text;
    case "warn": return color ? `${ESC}33m${line.text}${ESC}0m` : line.text;
    default: return line.text;
  }
}

/** One frame drawn over the last from the top left: each line clears what is left of the old
 *  one after it, and the rows below the last line are cleared. A line as wide as the terminal
 *  leaves the cursor on its last character, which a clear there would erase: it clears nothing,
 *  and the rows below are cleared from the start of the next row. No newline after the last
 *  line, so that a full screen does not scroll. */
export function paint(lines: Line[], size: ScreenSize, color: boolean): string {
  const clear = (l: Line) => (textWidth(l.text) < size.columns ? `${ESC}K` : "");
  const below = lines.length < size.rows ? `${ESC}${lines.length + 1};1H${ESC}J` : "";
  return `${ESC}H${lines.map((l) => `${styled(l, color)}${clear(l)}`).join("\r\n")}${below}`;
}

function write(text: string): Promise<void> {
  return new Promise((resolve) => {
    try {
      process.stdout.write(text, () => resolve());
    } catch {
      resolve(); // the terminal is gone
    }
  });
}

async function liveView(rc: RunningConfig): Promise<number> {
  const out = process.stdout, keys = process.stdin;
  const quit = new Quit();
  const color = !process.env.NO_COLOR;
  let frame: Frame | undefined;
  const draw = () => {
    if (!frame || quit.code !== undefined) return;
    const size = { columns: out.columns || 80, rows: out.rows || 24 };
    out.write(paint(renderScreen(frame, rc.url, size), size, color));
  };
  // In raw mode Ctrl-C arrives as a key (0x03), not as SIGINT.
  const onKey = (data: Buffer | string) => {
    if (/[qQ\x03]/.test(String(data))) quit.now(EXIT.ok);
  };
  const onOutputError = () => quit.now(EXIT.ok);
  const raw = keys.isTTY === true && typeof keys.setRawMode === "function";
  const offSignals = onQuitSignals(quit);
  out.on("error", onOutputError);
  // Bun and Node tell a resize on stdout; SIGWINCH covers runtimes that do not (a second draw is harmless).
  out.on("resize", draw);
  process.on("SIGWINCH", draw);
  out.write(ENTER);
  try {
    if (raw) {
      keys.setRawMode(true);
      keys.on("data", onKey);
      keys.resume();
    }
    await readEverySecond(rc, quit, (f) => {
      frame = f;
      draw();
    });
    return quit.code ?? EXIT.ok;
  } finally {
    quit.now(EXIT.ok);
    offSignals();
    process.off("SIGWINCH", draw);
    out.off("resize", draw);
    if (raw) {
      keys.off("data", onKey);
      keys.setRawMode(false);
      keys.pause();
    }
    await write(LEAVE);
    out.off("error", onOutputError);
  }
}

async function plainView(rc: RunningConfig): Promise<number> {
  const quit = new Quit();
  const offSignals = onQuitSignals(quit);
  // A reader that went away (top | head -3) ends top as it ends any filter.
  const onOutputError = () => quit.now(EXIT.ok);
  process.stdout.on("error", onOutputError);
  try {
    await readEverySecond(rc, quit, (f) => {
      process.stdout.write(`${plainLine(f)}\n`);
    });
    return quit.code ?? EXIT.ok;
  } finally {
    offSignals();
    process.stdout.off("error", onOutputError);
  }
}

export async function topCommand(p: Parsed): Promise<number> {
  const config = await loadConfigForClient(p.configPath, p.plugins);
  const rc = await requireDaemon(config);
  return process.stdout.isTTY ? liveView(rc) : plainView(rc);
}
