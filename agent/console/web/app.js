// The web console of cybexp-agent: the overview (agent, output, spool, inputs with live rates),
// input start/stop/restart, hand submissions to `manual` inputs, and a live tail of one input.
// Plain DOM code: the page is served under `default-src 'self'`, so nothing here may evaluate
// strings or write inline styles through markup; text always goes in through textContent
// because tapped events and error messages are untrusted.
//
// The pure helpers are exported so that the test suite can check them without a browser; the
// page starts only where there is a document.

/** Lines kept in the live tail: enough to read back a burst, bounded so that the page stays fast. */
export const TAIL_LINES = 500;
/** Rate samples per input (one a second from the status stream): the last minute. */
export const SPARK_SAMPLES = 60;
/** Typing pauses this long before the body is sent for a preview. */
const PREVIEW_DELAY_MS = 350;
/** The status stream sends once a second; this much silence means it is not live. */
const STALE_AFTER_MS = 4000;

// ---- pure helpers --------------------------------------------------------------------------

/** "3d 4h", "4h 12m", "12m 5s", "5s" */
export function formatDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) return "–";
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${r}s`;
  return `${r}s`;
}

/** Bytes in binary units, as the config file writes sizes: "512 B", "1.5 KiB", "1.0 GiB". */
export function formatBytes(bytes) {
  if (typeof bytes !== "number" || !Number.isFinite(bytes) || bytes < 0) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes, u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

export function formatCount(n) {
  return typeof n === "number" && Number.isFinite(n) ? n.toLocaleString("en-US") : "–";
}

/** Events per second as a short number: "0", "0.4", "12", "1,250". */
export function formatRate(rate) {
  if (typeof rate !== "number" || !Number.isFinite(rate)) return "–";
  if (rate === 0) return "0";
  if (rate < 10) return rate.toFixed(1);
  return Math.round(rate).toLocaleString("en-US");
}

export function plural(n, one, many = `${one}s`) {
  return `${formatCount(n)} ${n === 1 ? one : many}`;
}

/**
 * Events per second between two snapshots of an input's counter. A counter that went down
 * (the input was replaced by a reload) or a gap too short to measure gives no sample.
 */
export function rateBetween(prev, next) {
  if (!prev || !next) return null;
  const seconds = (next.at - prev.at) / 1000;
  if (!(seconds >= 0.25)) return null;
  const delta = next.events - prev.events;
  if (!(delta >= 0)) return null;
  return delta / seconds;
}

/** The points of a sparkline polyline: the newest sample at the right edge, scaled to the largest. */
export function sparkPoints(samples, width = 120, height = 28, capacity = SPARK_SAMPLES) {
  if (samples.length === 0) return "";
  const max = Math.max(1, ...samples);
  const step = width / Math.max(1, capacity - 1);
  const offset = capacity - samples.length;
  const pad = 2;
  return samples
    .map((v, i) => {
      const x = (offset + i) * step;
      const y = height - pad - (v / max) * (height - 2 * pad);
      return `${round1(x)},${round1(y)}`;
    })
    .join(" ");
}

function round1(n) {
  return Math.round(n * 10) / 10;
}

/**
 * Which of Start / Stop / Restart mean something for an input in `state`: a running (or
 * restarting) input can be stopped or restarted; an idle one can be started; a failed one can
 * be started again, or stopped to acknowledge the failure.
 */
export function actionsFor(state) {
  switch (state) {
    case "running":
    case "backoff":
      return { start: false, stop: true, restart: true };
    case "failed":
      return { start: true, stop: true, restart: false };
    default:
      return { start: true, stop: false, restart: false };
  }
}

/** How a state badge looks: good, warn, bad or idle. */
export function toneOf(state) {
  switch (state) {
    case "running":
    case "ok":
      return "good";
    case "backoff":
    case "retrying":
      return "warn";
    case "failed":
    case "failing":
    case "unauthorized":
      return "bad";
    default:
      return "idle";
  }
}

/** The Content-Type a submission format is sent with; "detect" sends none, so the agent sniffs. */
export function contentTypeFor(format) {
  switch (format) {
    case "lines":
      return "text/plain; charset=utf-8";
    case "json":
      return "application/json";
    case "ndjson":
      return "application/x-ndjson";
    default:
      return null;
  }
}

/** The format a picked file is sent as, from its name's extension, else the type the browser gave it. */
export function formatForFile(name, type) {
  const ext = /\.([a-z0-9]+)$/i.exec(name || "")?.[1]?.toLowerCase() ?? "";
  if (ext === "ndjson" || ext === "jsonl") return "ndjson";
  if (ext === "json") return "json";
  if (["txt", "text", "log", "csv", "tsv", "list", "lst", "ioc", "iocs"].includes(ext)) return "lines";
  const mime = (type || "").split(";")[0].trim().toLowerCase();
  if (mime === "application/x-ndjson" || mime === "application/ndjson" || mime === "application/jsonl") return "ndjson";
  if (mime === "application/json" || mime.endsWith("+json")) return "json";
  if (mime === "text/plain" || mime === "text/csv") return "lines";
  return "detect";
}

/** The time of day of an ISO timestamp, with milliseconds: "14:03:07.412". */
export function timeOfDay(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** A tapped event on one line: text events as they are, JSON events compact. */
export function eventText(event) {
  if (typeof event === "string") return event;
  try {
    return JSON.stringify(event);
  } catch {
    return String(event);
  }
}

// ---- the page ------------------------------------------------------------------------------

/** Thrown (and otherwise ignored) once a request found the session gone; the login view is up. */
class SessionGone extends Error {}

const $ = (id) => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el;
};

function text(el, value) {
  const s = value === null || value === undefined ? "" : String(value);
  if (el.textContent !== s) el.textContent = s;
}

function toggle(el, shown) {
  if (el.hidden === shown) el.hidden = !shown;
}

function setTone(el, tone) {
  for (const t of ["good", "warn", "bad", "idle"]) el.classList.toggle(`tone-${t}`, t === tone);
}

function errorOf(err) {
  return err instanceof Error ? err.message : String(err);
}

/** The JSON of a response, or {} when it has none (an error page, an empty body). */
async function jsonOf(res) {
  try {
    return await res.json();
  } catch {
    return {};
  }
}

const page = {
  csrf: "",
  statusStream: null,
  statusRetry: 0,
  lastStatusAt: 0,
  staleTimer: 0,
  inputs: new Map(), // name -> row state
  forms: new Map(), // name -> submit form state
  tail: { name: "", source: null, connected: false, paused: false, held: [], heldDropped: 0, pending: [], frame: 0, shown: 0, skipped: 0, retry: 0 },
};

function showOnly(view) {
  toggle($("loading"), view === "loading");
  toggle($("login"), view === "login");
  toggle($("unreachable"), view === "unreachable");
  toggle($("console"), view === "console");
  toggle($("topnav"), view === "console");
  toggle($("logout"), view === "console");
}

function setConnection(kind, message) {
  const el = $("connection");
  text(el, message);
  el.dataset.kind = kind;
}

/** Ends everything live (streams, timers); the login view replaces the console. */
function sessionExpired(reason) {
  closeStreams();
  page.csrf = "";
  text($("login-reason"), reason || "The console needs a session.");
  setConnection("off", "");
  showOnly("login");
  document.title = "Sign in · cybexp-agent console";
}

function closeStreams() {
  if (page.statusStream) page.statusStream.close();
  page.statusStream = null;
  clearTimeout(page.statusRetry);
  clearInterval(page.staleTimer);
  stopTail();
}

/** fetch() for the console's API: same-origin cookie, the CSRF token on every POST, 401 ends the session. */
async function request(path, init = {}) {
  const headers = new Headers(init.headers || {});
  if (init.method && init.method !== "GET") headers.set("X-CSRF-Token", page.csrf);
  const res = await fetch(path, { ...init, headers, credentials: "same-origin", cache: "no-store" });
  if (res.status === 401) {
    sessionExpired("Your console session has ended.");
    throw new SessionGone();
  }
  return res;
}

/** Whether the session still holds (checked when a stream breaks, which gives no status code). */
async function sessionHolds() {
  try {
    const res = await fetch("/console/session", { credentials: "same-origin", cache: "no-store" });
    if (res.status === 401) {
      sessionExpired("Your console session has ended.");
      return false;
    }
    return true;
  } catch {
    return true; // unreachable for now: the stream keeps trying
  }
}

async function boot() {
  closeStreams();
  showOnly("loading");
  let res;
  try {
    res = await fetch("/console/session", { credentials: "same-origin", cache: "no-store" });
  } catch (err) {
    text($("unreachable-reason"), errorOf(err));
    showOnly("unreachable");
    return;
  }
  if (res.status === 401) {
    sessionExpired("The console needs a session.");
    return;
  }
  if (!res.ok) {
    text($("unreachable-reason"), `GET /console/session answered ${res.status}.`);
    showOnly("unreachable");
    return;
  }
  const session = await jsonOf(res);
  page.csrf = String(session.csrf || "");
  if (session.hostname) text($("brand-host"), session.hostname);
  showOnly("console");
  try {
    const status = await request("/status");
    if (status.ok) renderStatus(await status.json());
  } catch (err) {
    if (err instanceof SessionGone) return;
  }
  openStatusStream();
}

// ---- the status stream ---------------------------------------------------------------------

function openStatusStream() {
  if (page.statusStream) page.statusStream.close();
  setConnection("connecting", "Connecting…");
  const es = new EventSource("/status/stream");
  page.statusStream = es;
  es.addEventListener("status", (e) => {
    try {
      renderStatus(JSON.parse(e.data));
    } catch (err) {
      console.error("status event", err);
    }
  });
  es.addEventListener("error", async () => {
    if (page.statusStream !== es) return;
    if (es.readyState === EventSource.CLOSED) {
      // Refused (a 401 or another status): EventSource gives up; find out why, then try again.
      es.close();
      page.statusStream = null;
      if (!(await sessionHolds())) return;
      setConnection("down", "Disconnected — retrying");
      page.statusRetry = setTimeout(openStatusStream, 3000);
    } else {
      setConnection("down", "Reconnecting…");
      void sessionHolds();
    }
  });
  clearInterval(page.staleTimer);
  page.staleTimer = setInterval(() => {
    if (!page.lastStatusAt || !page.statusStream) return;
    const quiet = Date.now() - page.lastStatusAt;
    if (quiet > STALE_AFTER_MS) setConnection("down", `No update for ${formatDuration(quiet / 1000)}`);
  }, 1000);
}

function renderStatus(status) {
  page.lastStatusAt = Date.now();
  setConnection("live", "Live");
  const now = performance.now();
  const agent = status.agent || {};
  text($("agent-hostname"), agent.hostname || "–");
  text($("agent-version"), agent.version || "–");
  text($("agent-uptime"), formatDuration(agent.uptime_s));
  text($("agent-pid"), agent.pid ?? "–");
  if (agent.hostname) {
    text($("brand-host"), agent.hostname);
    const title = `${agent.hostname} · cybexp-agent console`;
    if (document.title !== title) document.title = title;
  }
  renderOutput(status.output || {});
  renderSpool(status.spool || {});
  const inputs = Array.isArray(status.inputs) ? status.inputs : [];
  renderInputs(inputs, now);
  renderForms(inputs.filter((i) => i.type === "manual"));
  renderTailChoices(inputs);
}

function renderOutput(out) {
  const badge = $("output-state");
  text(badge, out.state || "unknown");
  setTone(badge, toneOf(out.state));
  text($("output-events"), formatCount(out.sent_events));
  text($("output-uploads"), formatCount(out.sent_uploads));
  text($("output-retries"), formatCount(out.retries));
  text($("output-dead"), formatCount(out.dead_lettered));
  const err = $("output-error");
  text(err, out.last_error ? `Last error: ${out.last_error}` : "");
  toggle(err, Boolean(out.last_error));
}

function renderSpool(sp) {
  const max = typeof sp.max_bytes === "number" && sp.max_bytes > 0 ? sp.max_bytes : 0;
  const bytes = typeof sp.bytes === "number" ? sp.bytes : 0;
  const pct = max ? Math.min(100, (bytes / max) * 100) : 0;
  const fill = $("spool-fill");
  fill.style.width = `${pct}%`;
  setTone(fill, sp.full || pct >= 90 ? "bad" : pct >= 70 ? "warn" : "good");
  const pctText = pct > 0 && pct < 0.1 ? "<0.1" : pct.toFixed(pct < 10 ? 1 : 0);
  const words = `${formatBytes(bytes)} of ${max ? formatBytes(max) : "?"} (${pctText}%)`;
  const gauge = $("spool-gauge");
  gauge.setAttribute("aria-valuenow", String(Math.round(pct)));
  gauge.setAttribute("aria-valuetext", words);
  text($("spool-text"), sp.full ? `${words} — full (${sp.full}), inputs paused` : words);
  text($("spool-events"), formatCount(sp.events));
  text($("spool-oldest"), sp.events > 0 ? formatDuration(sp.oldest_event_age_s) : "–");
  text($("spool-dropped"), formatCount(sp.dropped));
}

// ---- inputs --------------------------------------------------------------------------------

function renderInputs(inputs, now) {
  const body = $("inputs-body");
  const seen = new Set();
  let before = body.firstElementChild;
  for (const input of inputs) {
    seen.add(input.name);
    let row = page.inputs.get(input.name);
    if (!row) {
      row = createInputRow(input.name);
      page.inputs.set(input.name, row);
    }
    if (row.el !== before) body.insertBefore(row.el, before);
    else before = before.nextElementSibling;
    updateInputRow(row, input, now);
  }
  for (const [name, row] of page.inputs) {
    if (seen.has(name)) continue;
    row.el.remove();
    page.inputs.delete(name);
  }
  toggle($("inputs-empty"), inputs.length === 0);
}

function createInputRow(name) {
  const tpl = /** @type {HTMLTemplateElement} */ ($("input-row"));
  const el = /** @type {HTMLElement} */ (tpl.content.firstElementChild.cloneNode(true));
  const q = (sel) => el.querySelector(sel);
  const row = {
    name,
    el,
    state: "",
    last: null, // {events, at}
    samples: [],
    pending: false,
    resultTimer: 0,
    stateEl: q(".input-state"),
    rateEl: q(".input-rate"),
    lineEl: q(".spark-line"),
    eventsEl: q(".input-events"),
    errorsEl: q(".input-errors"),
    errorEl: q(".input-error"),
    resultEl: document.createElement("p"),
    buttons: {
      start: q('[data-action="start"]'),
      stop: q('[data-action="stop"]'),
      restart: q('[data-action="restart"]'),
    },
  };
  text(q(".input-name"), name);
  row.resultEl.className = "row-result";
  row.resultEl.setAttribute("role", "status");
  row.resultEl.setAttribute("aria-live", "polite");
  q(".actions").append(row.resultEl);
  for (const [action, button] of Object.entries(row.buttons)) {
    button.setAttribute("aria-label", `${action[0].toUpperCase()}${action.slice(1)} ${name}`);
    button.addEventListener("click", () => void inputAction(row, action));
  }
  return row;
}

function updateInputRow(row, input, now) {
  text(row.el.querySelector(".input-type"), input.type);
  row.state = input.state;
  text(row.stateEl, input.state);
  setTone(row.stateEl, toneOf(input.state));
  const sample = { events: Number(input.events) || 0, at: now };
  const rate = rateBetween(row.last, sample);
  if (rate !== null || !row.last || sample.events < row.last.events) row.last = sample;
  if (rate !== null) {
    row.samples.push(rate);
    if (row.samples.length > SPARK_SAMPLES) row.samples.shift();
    text(row.rateEl, formatRate(rate));
    row.lineEl.setAttribute("points", sparkPoints(row.samples));
  } else if (!row.samples.length) {
    text(row.rateEl, "–");
  }
  text(row.eventsEl, formatCount(input.events));
  text(row.errorsEl, formatCount(input.errors));
  row.errorsEl.classList.toggle("has-errors", Number(input.errors) > 0);
  const why = input.problem || input.last_error || "";
  text(row.errorEl, why || "—");
  row.errorEl.classList.toggle("muted", !why);
  if (why) row.errorEl.title = why;
  else row.errorEl.removeAttribute("title");
  updateButtons(row);
}

function updateButtons(row) {
  const allowed = actionsFor(row.state);
  for (const [action, button] of Object.entries(row.buttons)) {
    const disabled = row.pending || !allowed[action];
    if (button.disabled !== disabled) button.disabled = disabled;
  }
}

const DONE = { start: "Started", stop: "Stopped", restart: "Restarted" };
const DOING = { start: "Starting…", stop: "Stopping…", restart: "Restarting…" };

async function inputAction(row, action) {
  row.pending = true;
  updateButtons(row);
  clearTimeout(row.resultTimer);
  row.resultEl.classList.remove("bad");
  text(row.resultEl, DOING[action]);
  try {
    const res = await request(`/inputs/${encodeURIComponent(row.name)}/${action}`, { method: "POST" });
    const body = await jsonOf(res);
    if (res.ok) {
      text(row.resultEl, DONE[action]);
      // A success is news for a moment; an error stays until the next action.
      row.resultTimer = setTimeout(() => text(row.resultEl, ""), 6000);
    } else {
      row.resultEl.classList.add("bad");
      text(row.resultEl, `${action} failed: ${body.error || `HTTP ${res.status}`}`);
    }
    const status = await request("/status");
    if (status.ok) renderStatus(await status.json());
  } catch (err) {
    if (err instanceof SessionGone) return;
    row.resultEl.classList.add("bad");
    text(row.resultEl, `${action} failed: ${errorOf(err)}`);
  } finally {
    row.pending = false;
    updateButtons(row);
    // The button just used may be disabled now: keep the keyboard in the row.
    const active = document.activeElement;
    if (!active || active === document.body || (active instanceof HTMLButtonElement && active.disabled)) {
      Object.values(row.buttons).find((b) => !b.disabled)?.focus();
    }
  }
}

// ---- hand submissions ----------------------------------------------------------------------

function renderForms(manualInputs) {
  const box = $("submit-forms");
  const seen = new Set();
  for (const input of manualInputs) {
    seen.add(input.name);
    if (!page.forms.has(input.name)) {
      const form = createSubmitForm(input.name);
      page.forms.set(input.name, form);
      box.append(form.el);
    }
  }
  for (const [name, form] of page.forms) {
    if (seen.has(name)) continue;
    clearTimeout(form.previewTimer);
    form.el.remove();
    page.forms.delete(name);
  }
  toggle($("submit-empty"), manualInputs.length === 0);
}

function createSubmitForm(name) {
  const tpl = /** @type {HTMLTemplateElement} */ ($("submit-form"));
  const el = /** @type {HTMLFormElement} */ (tpl.content.firstElementChild.cloneNode(true));
  const q = (sel) => el.querySelector(sel);
  const slug = `${name.replace(/[^A-Za-z0-9_-]/g, "_")}-${page.forms.size}`;
  const form = {
    name,
    el,
    file: null,
    previewTimer: 0,
    previewSeq: 0,
    sending: false,
    previewOk: false,
    data: q(".data"),
    fileInput: q(".file"),
    fileClear: q(".file-clear"),
    hint: q(".data-hint"),
    preview: q(".preview"),
    result: q(".result"),
    submit: q('button[type="submit"]'),
  };
  const title = q(".submit-name");
  title.id = `submit-${slug}-title`;
  text(title, `Input ${name}`);
  el.setAttribute("aria-labelledby", title.id);
  form.data.id = `submit-${slug}-data`;
  q(".data-label").htmlFor = form.data.id;
  form.hint.id = `submit-${slug}-hint`;
  form.data.setAttribute("aria-describedby", `${form.hint.id} submit-${slug}-preview`);
  form.preview.id = `submit-${slug}-preview`;
  form.fileInput.id = `submit-${slug}-file`;
  q(".file-label").htmlFor = form.fileInput.id;
  for (const radio of el.querySelectorAll('input[type="radio"]')) {
    radio.name = `format-${slug}`;
    radio.addEventListener("change", () => schedulePreview(form, 0));
  }
  form.defaultHint = form.hint.textContent;

  form.data.addEventListener("input", () => {
    text(form.result, "");
    schedulePreview(form, PREVIEW_DELAY_MS);
  });
  form.data.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      el.requestSubmit();
    }
  });
  form.fileInput.addEventListener("change", () => {
    const file = form.fileInput.files && form.fileInput.files[0];
    form.file = file || null;
    text(form.result, "");
    if (file) setFormat(form, formatForFile(file.name, file.type));
    updateFileMode(form);
    schedulePreview(form, 0);
  });
  form.fileClear.addEventListener("click", () => {
    clearFile(form);
    schedulePreview(form, 0);
    form.data.focus();
  });
  el.addEventListener("submit", (e) => {
    e.preventDefault();
    void submitForm(form);
  });
  updateFileMode(form);
  showPreview(form, "", "");
  return form;
}

function formatOf(form) {
  const checked = form.el.querySelector('input[type="radio"]:checked');
  return checked ? checked.value : "lines";
}

function setFormat(form, format) {
  for (const radio of form.el.querySelectorAll('input[type="radio"]')) radio.checked = radio.value === format;
}

function updateFileMode(form) {
  const usingFile = Boolean(form.file);
  form.data.disabled = usingFile;
  toggle(form.fileClear, usingFile);
  text(form.hint, usingFile ? `Sending the file ${form.file.name} (${formatBytes(form.file.size)}) instead of the text.` : form.defaultHint);
}

function clearFile(form) {
  form.file = null;
  form.fileInput.value = "";
  updateFileMode(form);
}

/** What the form would send now: its body and Content-Type (null: none, the agent sniffs), or null when empty. */
function payloadOf(form) {
  const type = contentTypeFor(formatOf(form));
  if (form.file) {
    if (form.file.size === 0) return null;
    // A Blob without a type makes fetch send no Content-Type of its own.
    return { body: type ? form.file : new Blob([form.file]), type };
  }
  const value = form.data.value;
  if (value.trim() === "") return null;
  return { body: type ? value : new Blob([value]), type };
}

function eventsUrl(name, preview) {
  return `/inputs/${encodeURIComponent(name)}/events${preview ? "?preview=1" : ""}`;
}

function send(form, payload, preview) {
  const headers = payload.type ? { "Content-Type": payload.type } : {};
  return request(eventsUrl(form.name, preview), { method: "POST", headers, body: payload.body });
}

function showPreview(form, message, tone) {
  text(form.preview, message || (form.file ? "The file is empty." : "Type or paste indicators, or choose a file."));
  form.preview.classList.toggle("ok", tone === "ok");
  form.preview.classList.toggle("bad", tone === "bad");
  form.previewOk = tone === "ok";
}

function schedulePreview(form, delay) {
  clearTimeout(form.previewTimer);
  const seq = ++form.previewSeq;
  if (!payloadOf(form)) {
    showPreview(form, "", "");
    return;
  }
  text(form.preview, "Checking…");
  form.preview.classList.remove("ok", "bad");
  form.previewTimer = setTimeout(() => void runPreview(form, seq), delay);
}

async function runPreview(form, seq) {
  const payload = payloadOf(form);
  if (!payload) return;
  try {
    const res = await send(form, payload, true);
    const body = await jsonOf(res);
    if (seq !== form.previewSeq) return; // the text changed meanwhile
    if (res.ok && typeof body.events === "number") {
      showPreview(form, `${plural(body.events, "event")} will be submitted`, "ok");
    } else {
      showPreview(form, body.error || `The agent answered ${res.status}.`, "bad");
    }
  } catch (err) {
    if (err instanceof SessionGone || seq !== form.previewSeq) return;
    showPreview(form, `No preview: ${errorOf(err)}`, "bad");
  }
}

async function submitForm(form) {
  if (form.sending) return;
  const payload = payloadOf(form);
  form.result.classList.remove("ok", "bad");
  if (!payload) {
    text(form.result, "Nothing to submit.");
    form.result.classList.add("bad");
    (form.file ? form.fileInput : form.data).focus();
    return;
  }
  form.sending = true;
  form.submit.disabled = true;
  text(form.result, "Submitting…");
  try {
    const res = await send(form, payload, false);
    const body = await jsonOf(res);
    if (res.status === 202 || (res.ok && typeof body.accepted === "number")) {
      text(form.result, `accepted ${formatCount(body.accepted)}`);
      form.result.classList.add("ok");
      form.data.value = "";
      clearFile(form);
      clearTimeout(form.previewTimer);
      form.previewSeq++;
      showPreview(form, "", "");
      form.data.focus();
    } else {
      text(form.result, `Not submitted (nothing was taken): ${body.error || `HTTP ${res.status}`}`);
      form.result.classList.add("bad");
    }
  } catch (err) {
    if (err instanceof SessionGone) return;
    text(form.result, `Not submitted: ${errorOf(err)}`);
    form.result.classList.add("bad");
  } finally {
    form.sending = false;
    form.submit.disabled = false;
  }
}

// ---- live tail -----------------------------------------------------------------------------

function renderTailChoices(inputs) {
  const select = /** @type {HTMLSelectElement} */ ($("tail-input"));
  const names = inputs.map((i) => i.name);
  const current = [...select.options].map((o) => o.value);
  if (names.join("\n") !== current.join("\n")) {
    const chosen = select.value;
    select.replaceChildren(...names.map((n) => new Option(n, n)));
    if (names.includes(chosen)) select.value = chosen;
  }
  select.disabled = names.length === 0;
  if (!page.tail.source && !page.tail.name && names.length) {
    startTail(select.value || names[0]);
  } else if (page.tail.name && !names.includes(page.tail.name)) {
    stopTail();
    tailStatus();
  }
}

function startTail(name) {
  stopTail();
  const tail = page.tail;
  tail.name = name;
  tail.connected = false;
  tail.skipped = 0;
  tail.held = [];
  tail.heldDropped = 0;
  const es = new EventSource(`/tap?input=${encodeURIComponent(name)}`);
  tail.source = es;
  es.addEventListener("open", () => {
    tail.connected = true;
    tailStatus();
  });
  es.addEventListener("message", (e) => {
    let item;
    try {
      item = JSON.parse(e.data);
    } catch {
      return;
    }
    queueTailLine({ kind: "event", ts: item.ts, text: eventText(item.event) });
  });
  es.addEventListener("skipped", (e) => {
    let n = 0;
    try {
      n = Number(JSON.parse(e.data).skipped) || 0;
    } catch {
      return;
    }
    tail.skipped += n;
    queueTailLine({ kind: "skipped", ts: new Date().toISOString(), text: `${plural(n, "event")} skipped by sampling` });
  });
  es.addEventListener("error", async () => {
    if (tail.source !== es) return;
    tail.connected = false;
    if (es.readyState === EventSource.CLOSED) {
      es.close();
      tail.source = null;
      if (!(await sessionHolds())) return;
      tailStatus(`The tail of ${name} was refused or broke — retrying…`);
      tail.retry = setTimeout(() => {
        if (tail.name === name && !tail.source && page.csrf) startTail(name);
      }, 3000);
    } else {
      tailStatus("Reconnecting…");
    }
  });
  tailStatus();
}

function stopTail() {
  const tail = page.tail;
  clearTimeout(tail.retry);
  if (tail.source) tail.source.close();
  tail.source = null;
  tail.name = "";
  cancelAnimationFrame(tail.frame);
  tail.frame = 0;
  tail.pending = [];
}

function queueTailLine(line) {
  const tail = page.tail;
  if (tail.paused) {
    tail.held.push(line);
    if (tail.held.length > TAIL_LINES) {
      tail.held.shift();
      tail.heldDropped++;
    }
    tailStatus();
    return;
  }
  tail.pending.push(line);
  // Many events a second would each cost a layout; draw them together once a frame.
  if (!tail.frame) tail.frame = requestAnimationFrame(flushTail);
}

function flushTail() {
  const tail = page.tail;
  tail.frame = 0;
  const log = $("tail-log");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
  const lines = tail.pending.splice(0).slice(-TAIL_LINES);
  const frag = document.createDocumentFragment();
  for (const line of lines) frag.append(tailLine(line));
  log.append(frag);
  tail.shown += lines.filter((l) => l.kind === "event").length;
  while (log.childElementCount > TAIL_LINES) log.firstElementChild.remove();
  if (atBottom) log.scrollTop = log.scrollHeight;
  tailStatus();
}

function tailLine(line) {
  const div = document.createElement("div");
  div.className = `tail-line ${line.kind}`;
  const ts = document.createElement("span");
  ts.className = "tail-ts";
  ts.textContent = timeOfDay(line.ts);
  const body = document.createElement("span");
  body.className = "tail-text";
  body.textContent = line.text;
  div.append(ts, body);
  return div;
}

function tailStatus(message) {
  const tail = page.tail;
  const el = $("tail-status");
  if (message) return text(el, message);
  if (!tail.name) return text(el, "No input chosen.");
  const parts = [];
  if (tail.paused) {
    parts.push(`Paused — ${plural(tail.held.length, "new event")} held`);
    if (tail.heldDropped) parts.push(`${formatCount(tail.heldDropped)} older ones let go`);
  } else {
    if (tail.shown) parts.push(`${plural(tail.shown, "event")} shown`);
    else parts.push(tail.connected ? `Waiting for events from ${tail.name}…` : `Connecting to ${tail.name}…`);
  }
  if (tail.skipped) parts.push(`${formatCount(tail.skipped)} skipped by sampling`);
  text(el, parts.join(" · "));
}

function setTailPaused(paused) {
  const tail = page.tail;
  tail.paused = paused;
  const button = $("tail-pause");
  text(button, paused ? "Resume" : "Pause");
  button.setAttribute("aria-pressed", String(paused));
  $("tail-log").classList.toggle("paused", paused);
  if (!paused && tail.held.length) {
    tail.pending.push(...tail.held);
    tail.held = [];
    tail.heldDropped = 0;
    if (!tail.frame) tail.frame = requestAnimationFrame(flushTail);
  }
  tailStatus();
}

async function logout() {
  try {
    await request("/console/logout", { method: "POST" });
  } catch (err) {
    if (err instanceof SessionGone) return;
  }
  sessionExpired("You have logged out.");
  $("login-title").focus();
}

function wireStaticControls() {
  $("login-retry").addEventListener("click", () => void boot());
  $("logout").addEventListener("click", () => void logout());
  $("unreachable-retry").addEventListener("click", () => void boot());
  $("tail-input").addEventListener("change", (e) => {
    $("tail-log").replaceChildren();
    page.tail.shown = 0;
    startTail(/** @type {HTMLSelectElement} */ (e.target).value);
  });
  $("tail-pause").addEventListener("click", () => setTailPaused(!page.tail.paused));
  $("tail-clear").addEventListener("click", () => {
    $("tail-log").replaceChildren();
    page.tail.shown = 0;
    page.tail.skipped = 0;
    page.tail.held = [];
    tailStatus();
  });
}

if (typeof document !== "undefined") {
  wireStaticControls();
  void boot();
}
