// File globbing without a runtime's own glob API (Bun.Glob is missing under Deno): `*`, `?`,
// `[...]`, `**` and `{a,b}`. The walk only lists the directories a pattern can match in, so
// "/var/log/nginx/*.log" reads one directory, not the whole tree.
//
// Like a shell, a wildcard does not match a name starting with "." unless the pattern's
// segment starts with "." itself, and `**` does not descend into hidden directories or
// through symbolic links to directories (which could loop).
import { readdir, stat } from "node:fs/promises";
import type { Dirent } from "node:fs";
import { basename, dirname, join, resolve, sep } from "node:path";

/** True when `text` contains glob syntax (an unescaped `*`, `?`, `[` or `{`). */
export function hasGlobMagic(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "\\") i++;
    else if (c === "*" || c === "?" || c === "[" || c === "{") return true;
  }
  return false;
}

/** Expands `{a,b}` alternatives (nested too) into plain patterns; `{x}` without a comma stays literal. */
export function expandBraces(pattern: string): string[] {
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "\\") { i++; continue; }
    if (c !== "{") continue;
    const commas: number[] = [];
    let depth = 0;
    let close = -1;
    for (let j = i + 1; j < pattern.length; j++) {
      const d = pattern[j];
      if (d === "\\") { j++; continue; }
      if (d === "{") depth++;
      else if (d === "}") {
        if (depth === 0) { close = j; break; }
        depth--;
      } else if (d === "," && depth === 0) commas.push(j);
    }
    if (close < 0) return [pattern];
    if (commas.length === 0) continue;
    const head = pattern.slice(0, i);
    const tail = pattern.slice(close + 1);
    const bounds = [i, ...commas, close];
    const out: string[] = [];
    for (let k = 0; k + 1 < bounds.length; k++) {
      const alt = pattern.slice(bounds[k]! + 1, bounds[k + 1]);
      for (const p of expandBraces(head + alt + tail)) out.push(p);
    }
    return [...new Set(out)];
  }
  return [pattern];
}

const REGEX_SPECIAL = /[.*+?^${}()|[\]\\/]/;

function escapeChar(c: string): string {
  return REGEX_SPECIAL.test(c) ? "\\" + c : c;
}

/**
 * Translates a `[...]` class starting at pattern[start] into a regex class; returns it and
 * the index after the closing `]`, or null when the bracket is not closed (then it is literal).
 */
function bracketClass(pattern: string, start: number): [string, number] | null {
  let i = start + 1;
  let negate = false;
  if (pattern[i] === "!" || pattern[i] === "^") { negate = true; i++; }
  let body = "";
  let first = true;
  for (; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === "]" && !first) return [`[${negate ? "^/" : ""}${body}]`, i + 1];
    first = false;
    if (c === "\\" && i + 1 < pattern.length) { body += "\\" + pattern[++i]; continue; }
    if (c === "/") return null;
    body += c === "^" || c === "[" || c === "]" ? "\\" + c : c;
  }
  return null;
}

/** The regex source for one glob piece; `*` and `?` never match "/". */
function globSource(pattern: string): string {
  let re = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === "\\" && i + 1 < pattern.length) re += escapeChar(pattern[++i]!);
    else if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else if (c === "[") {
      const cls = bracketClass(pattern, i);
      if (cls) { re += cls[0]; i = cls[1] - 1; } else re += "\\[";
    } else re += escapeChar(c);
  }
  return re;
}

/** Removes glob escapes from a segment that has no magic, giving the name on disk. */
function unescape(segment: string): string {
  return segment.replace(/\\(.)/g, "$1");
}

type Segment =
  | { kind: "literal"; name: string }
  | { kind: "globstar" }
  | { kind: "wild"; re: RegExp; dotOk: boolean };

function compileSegment(seg: string): Segment {
  if (seg === "**") return { kind: "globstar" };
  if (!hasGlobMagic(seg)) return { kind: "literal", name: unescape(seg) };
  return { kind: "wild", re: new RegExp(`^${globSource(seg)}$`), dotOk: seg.startsWith(".") };
}

/**
 * A matcher for a whole path, for exclude patterns: one without "/" is matched against the
 * file's name ("*.gz"), one with "/" against the absolute path ("/var/log/old/**").
 */
export function pathMatcher(pattern: string, cwd = process.cwd()): (path: string) => boolean {
  const res = expandBraces(pattern).map((p) => {
    if (!p.includes("/")) {
      const re = new RegExp(`^${globSource(p)}$`);
      return (path: string) => re.test(basename(path));
    }
    const abs = p.startsWith("/") ? p : join(cwd, p);
    const parts = abs.split("/");
    let src = "";
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i]!;
      const last = i === parts.length - 1;
      if (part === "**") src += last ? "(?:/.*)?" : "(?:/[^/]+)*";
      else if (i === 0 && part === "") continue;
      else src += "/" + globSource(part);
    }
    const re = new RegExp(`^${src}$`);
    return (path: string) => re.test(path);
  });
  return (path) => res.some((m) => m(path));
}

async function listDir(dir: string): Promise<Dirent[]> {
  try {
    return await readdir(dir, { withFileTypes: true });
  } catch {
    return [];
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

async function walk(dir: string, segs: Segment[], i: number, out: Set<string>): Promise<void> {
  if (i === segs.length) {
    if (await isFile(dir)) out.add(dir);
    return;
  }
  const seg = segs[i]!;
  if (seg.kind === "literal") return walk(join(dir, seg.name), segs, i + 1, out);
  const entries = await listDir(dir);
  if (seg.kind === "globstar") {
    await walk(dir, segs, i + 1, out);
    for (const e of entries) {
      if (e.isDirectory() && !e.name.startsWith(".")) await walk(join(dir, e.name), segs, i, out);
    }
    return;
  }
  const last = i === segs.length - 1;
  for (const e of entries) {
    if (!seg.dotOk && e.name.startsWith(".")) continue;
    if (!seg.re.test(e.name)) continue;
    const path = join(dir, e.name);
    if (last) {
      if (e.isFile() || (e.isSymbolicLink() && (await isFile(path)))) out.add(path);
    } else if (e.isDirectory() || e.isSymbolicLink()) {
      await walk(path, segs, i + 1, out);
    }
  }
}

/** The parts of an absolute pattern; "dir/**" means every file below dir. */
function patternParts(pattern: string): string[] {
  const parts = resolve(pattern).split(sep).filter((p) => p !== "");
  if (parts[parts.length - 1] === "**") parts.push("*");
  return parts;
}

/** The regular files (after following symbolic links) that one brace-free pattern matches. */
async function expandOne(pattern: string, out: Set<string>): Promise<void> {
  const abs = resolve(pattern);
  if (!hasGlobMagic(abs)) {
    const path = unescape(abs);
    if (await isFile(path)) out.add(path);
    return;
  }
  const parts = patternParts(abs);
  let base = "/";
  let i = 0;
  while (i < parts.length && !hasGlobMagic(parts[i]!)) base = join(base, unescape(parts[i++]!));
  await walk(base, parts.slice(i).map(compileSegment), 0, out);
}

/**
 * The regular files matched by any of `patterns` and by none of `exclude`, as sorted, unique
 * absolute paths. Relative patterns are relative to the current directory. Directories that
 * cannot be read are skipped silently: a log directory may appear later.
 */
export async function expandGlobs(patterns: string[], exclude: string[] = []): Promise<string[]> {
  const found = new Set<string>();
  for (const pattern of patterns) {
    for (const p of expandBraces(pattern)) await expandOne(p, found);
  }
  const excluded = exclude.map((p) => pathMatcher(p));
  const out = [...found].filter((path) => !excluded.some((m) => m(path)));
  return out.sort();
}

// ---- where to watch ---------------------------------------------------------------------------

/** Tells whether an entry's name (not its path) is one a pattern can use at some level. */
type NameTest = (name: string) => boolean;

function nameTest(seg: Segment): NameTest {
  if (seg.kind === "literal") return (name) => name === seg.name;
  if (seg.kind === "globstar") return (name) => !name.startsWith(".");
  return (name) => (seg.dotOk || !name.startsWith(".")) && seg.re.test(name);
}

/** A brace-free pattern as its directory segments and the test of a file's name. */
interface CompiledPattern {
  dirs: Segment[];
  leaf: NameTest;
}

function compilePatterns(patterns: string[]): CompiledPattern[] {
  const out: CompiledPattern[] = [];
  for (const pattern of patterns) {
    for (const p of expandBraces(pattern)) {
      const parts = patternParts(p);
      if (parts.length === 0) continue;
      out.push({ dirs: parts.slice(0, -1).map(compileSegment), leaf: nameTest(compileSegment(parts[parts.length - 1]!)) });
    }
  }
  return out;
}

/** Walks the directories that `segs` match, as walk() does for files, adding each directory worth watching. */
async function watchWalk(dir: string, segs: Segment[], i: number, out: Set<string>): Promise<void> {
  if (i === segs.length) {
    out.add(dir);
    // Its parent too: a directory's own removal does not always reach its watch (Bun), its parent's entry going always does.
    out.add(dirname(dir));
    return;
  }
  const seg = segs[i]!;
  if (seg.kind === "literal") {
    const next = join(dir, seg.name);
    // A missing directory is watched for from its deepest existing parent.
    if (await isDirectory(next)) await watchWalk(next, segs, i + 1, out);
    else out.add(dir);
    return;
  }
  out.add(dir);
  const test = nameTest(seg);
  const entries = await listDir(dir);
  if (seg.kind === "globstar") {
    await watchWalk(dir, segs, i + 1, out);
    for (const e of entries) {
      if (e.isDirectory() && test(e.name)) await watchWalk(join(dir, e.name), segs, i, out);
    }
    return;
  }
  for (const e of entries) {
    if (!test(e.name)) continue;
    const path = join(dir, e.name);
    if (e.isDirectory() || (e.isSymbolicLink() && (await isDirectory(path)))) await watchWalk(path, segs, i + 1, out);
  }
}

/**
 * The existing directories to watch so that every file `patterns` can come to match is seen
 * when it appears: those whose entries a pattern can match as files (and their parents, where
 * their removal shows), those a wildcard or `**` goes through (a new subdirectory there can
 * hold matches), and, for a pattern's directory that does not exist yet, its deepest existing
 * parent.
 */
export async function globWatchDirs(patterns: string[]): Promise<Set<string>> {
  const out = new Set<string>();
  for (const p of compilePatterns(patterns)) await watchWalk("/", p.dirs, 0, out);
  return out;
}

/** The indexes of `segs` reachable once all of `comps` are matched from segs[i] and comps[j]. */
function reach(segs: Segment[], i: number, comps: string[], j: number, out: Set<number>): void {
  if (j === comps.length) {
    out.add(i);
    // "**" also matches no directory at all.
    while (i < segs.length && segs[i]!.kind === "globstar") out.add(++i);
    return;
  }
  if (i === segs.length) return;
  const seg = segs[i]!;
  if (seg.kind === "globstar") {
    reach(segs, i + 1, comps, j, out);
    if (nameTest(seg)(comps[j]!)) reach(segs, i, comps, j + 1, out);
  } else if (nameTest(seg)(comps[j]!)) {
    reach(segs, i + 1, comps, j + 1, out);
  }
}

/** Matching single paths against patterns, with the same rules as the listing (synchronous, no file system access). */
export interface GlobMatcher {
  /** Whether a file at `path` matches one of the patterns (exclusions aside). */
  file(path: string): boolean;
  /** For a directory at `path`: whether files right in it can match (`files`), and files further down (`below`). */
  dir(path: string): { files: boolean; below: boolean };
}

export function globMatcher(patterns: string[]): GlobMatcher {
  const compiled = compilePatterns(patterns);
  const comps = (path: string) => resolve(path).split(sep).filter((p) => p !== "");
  const dir = (path: string) => {
    const cs = comps(path);
    let files = false;
    let below = false;
    for (const p of compiled) {
      const at = new Set<number>();
      reach(p.dirs, 0, cs, 0, at);
      for (const i of at) {
        if (i === p.dirs.length) files = true;
        else below = true;
      }
      if (files && below) break;
    }
    return { files, below };
  };
  return {
    dir,
    file(path) {
      const cs = comps(path);
      const name = cs.pop();
      if (name === undefined) return false;
      return compiled.some((p) => {
        if (!p.leaf(name)) return false;
        const at = new Set<number>();
        reach(p.dirs, 0, cs, 0, at);
        return at.has(p.dirs.length);
      });
    },
  };
}
