// The code of the worker that watches directories under Bun (see watch.ts): plain JavaScript,
// started from a Blob, so the compiled executable needs no second entry point. It opens each
// file an event names, if the directory's name filter accepts it and not too many
// descriptors are on their way already, and posts the descriptor with the event.
//
// To the worker: {type: "init", inFlight}, {type: "watch", dir, names (regex source | null),
// list}, {type: "unwatch", dir}, {type: "taken", n} (descriptors received), {type: "close"}.
// From it: {type: "event", dir, event, name, opened}, {type: "error", dir, message}, {type: "closed"}.
export const WATCH_WORKER_SOURCE = String.raw`
import { closeSync, fstatSync, openSync, readdirSync, statSync, watch } from "node:fs";
import { join } from "node:path";

const watches = new Map();
let inFlight = 0;
let limit = 0;
let closing = false;

const firstLine = (err) => String(err && err.message ? err.message : err).split("\n")[0];

function openFile(dir, name, names) {
  if (names === null || !names.test(name) || inFlight >= limit) return null;
  const path = join(dir, name);
  try {
    if (!statSync(path).isFile()) return null; // never open a FIFO: that would block
    const fd = openSync(path, "r");
    let st;
    try {
      st = fstatSync(fd);
    } catch {
      closeSync(fd);
      return null;
    }
    if (!st.isFile()) {
      closeSync(fd);
      return null;
    }
    inFlight++;
    return { fd, dev: st.dev, ino: st.ino, size: st.size, mtimeMs: st.mtimeMs };
  } catch {
    return null; // gone already, or not readable: the caller's own look reports it
  }
}

function onEvent(dir, w, type, name) {
  if (closing || watches.get(dir) !== w) return;
  const entry = name === null || name === undefined ? null : String(name);
  const opened = type === "rename" && entry !== null ? openFile(dir, entry, w.names) : null;
  postMessage({ type: "event", dir, event: type, name: entry, opened });
}

function stop(dir) {
  const w = watches.get(dir);
  if (!w) return;
  watches.delete(dir);
  try {
    w.watcher.close();
  } catch {}
}

self.onmessage = ({ data: m }) => {
  if (m.type === "init") limit = m.inFlight;
  else if (m.type === "taken") inFlight -= m.n;
  else if (m.type === "unwatch") stop(m.dir);
  else if (m.type === "close") {
    closing = true;
    for (const dir of [...watches.keys()]) stop(dir);
    postMessage({ type: "closed" });
  } else if (m.type === "watch" && !closing) {
    stop(m.dir);
    const w = { watcher: null, names: m.names === null ? null : new RegExp(m.names) };
    try {
      w.watcher = watch(m.dir, { persistent: false }, (type, name) => onEvent(m.dir, w, type, name));
    } catch (err) {
      postMessage({ type: "error", dir: m.dir, message: firstLine(err) });
      return;
    }
    w.watcher.on("error", (err) => {
      if (watches.get(m.dir) !== w) return;
      stop(m.dir);
      postMessage({ type: "error", dir: m.dir, message: firstLine(err) });
    });
    watches.set(m.dir, w);
    if (m.list) {
      let names = [];
      try {
        names = readdirSync(m.dir);
      } catch {}
      for (const name of names) onEvent(m.dir, w, "rename", name);
    }
  }
};
`;
