import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { expandBraces, expandGlobs, globMatcher, globWatchDirs, hasGlobMagic, pathMatcher } from "./glob.ts";

async function tree(files: string[]): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), "glob-test-"));
  for (const f of files) {
    await mkdir(join(root, f, ".."), { recursive: true });
    await writeFile(join(root, f), "x\n");
  }
  return root;
}

const FILES = [
  "var/log/auth.log", "var/log/auth.log.1", "var/log/auth.log.2.gz", "var/log/syslog",
  "var/log/nginx/access.log", "var/log/nginx/error.log", "var/log/nginx/old/access.log.1",
  "var/log/.hidden.log", "var/log/.cache/deep.log", "var/log/a[1].log",
  "cowrie/cowrie.json", "cowrie/cowrie.json.2024-01-01",
];

async function withTree(fn: (root: string, rel: (paths: string[]) => string[]) => Promise<void>) {
  const root = await tree(FILES);
  try {
    await fn(root, (paths) => paths.map((p) => relative(root, p)));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

test("brace expansion: alternatives, nesting, literal braces", () => {
  assert.deepEqual(expandBraces("a{b,c}d"), ["abd", "acd"]);
  assert.deepEqual(expandBraces("{x,y{1,2}}.log"), ["x.log", "y1.log", "y2.log"]);
  assert.deepEqual(expandBraces("{a,b}{1,2}"), ["a1", "a2", "b1", "b2"]);
  assert.deepEqual(expandBraces("lit{x}"), ["lit{x}"]);
  assert.deepEqual(expandBraces("open{a,b"), ["open{a,b"]);
  assert.deepEqual(expandBraces("esc\\{a,b}"), ["esc\\{a,b}"]);
  assert.ok(hasGlobMagic("/var/log/*.log"));
  assert.ok(!hasGlobMagic("/var/log/auth.log"));
  assert.ok(!hasGlobMagic("/var/log/a\\*.log"));
});

test("* ? [...] match within one directory; dot files need a dot in the pattern", async () => {
  await withTree(async (root, rel) => {
    assert.deepEqual(rel(await expandGlobs([`${root}/var/log/auth.log*`], [])),
      ["var/log/auth.log", "var/log/auth.log.1", "var/log/auth.log.2.gz"]);
    assert.deepEqual(rel(await expandGlobs([`${root}/var/log/auth.log.?`], [])), ["var/log/auth.log.1"]);
    assert.deepEqual(rel(await expandGlobs([`${root}/var/log/auth.log.[0-9]*`], [])), ["var/log/auth.log.1", "var/log/auth.log.2.gz"]);
    assert.deepEqual(rel(await expandGlobs([`${root}/var/log/auth.log.[!1]*`], [])), ["var/log/auth.log.2.gz"]);
    assert.deepEqual(rel(await expandGlobs([`${root}/var/log/*.log`], [])), ["var/log/a[1].log", "var/log/auth.log"]);
    assert.deepEqual(rel(await expandGlobs([`${root}/var/log/.*.log`], [])), ["var/log/.hidden.log"]);
    // An escaped "[" is literal, in a plain path and beside a wildcard; an unclosed "[" is literal too.
    assert.deepEqual(rel(await expandGlobs([`${root}/var/log/a\\[1].log`], [])), ["var/log/a[1].log"]);
    assert.deepEqual(rel(await expandGlobs([`${root}/var/log/a\\[1]*`], [])), ["var/log/a[1].log"]);
    assert.deepEqual(rel(await expandGlobs([`${root}/var/log/a[1*`], [])), ["var/log/a[1].log"]);
  });
});

test("** matches any depth (not hidden directories), {a,b} alternatives, a plain path", async () => {
  await withTree(async (root, rel) => {
    assert.deepEqual(rel(await expandGlobs([`${root}/var/**/access.log*`], [])),
      ["var/log/nginx/access.log", "var/log/nginx/old/access.log.1"]);
    assert.deepEqual(rel(await expandGlobs([`${root}/var/log/nginx/**`], [])),
      ["var/log/nginx/access.log", "var/log/nginx/error.log", "var/log/nginx/old/access.log.1"]);
    assert.deepEqual(rel(await expandGlobs([`${root}/{cowrie/cowrie.json*,var/log/syslog}`], [])),
      ["cowrie/cowrie.json", "cowrie/cowrie.json.2024-01-01", "var/log/syslog"]);
    assert.deepEqual(rel(await expandGlobs([`${root}/var/log/syslog`, `${root}/var/log/missing`], [])), ["var/log/syslog"]);
    // Directories are never returned, and a missing directory is no error.
    assert.deepEqual(await expandGlobs([`${root}/var/*`, `${root}/nope/**/*.log`], []), []);
  });
});

test("exclude by file name or by path; duplicates across patterns appear once", async () => {
  await withTree(async (root, rel) => {
    assert.deepEqual(rel(await expandGlobs([`${root}/var/log/auth.log*`, `${root}/var/log/auth.log`], ["*.gz"])),
      ["var/log/auth.log", "var/log/auth.log.1"]);
    assert.deepEqual(rel(await expandGlobs([`${root}/var/**/*.log*`], [`${root}/var/log/nginx/**`, "*.{1,gz}"])),
      ["var/log/a[1].log", "var/log/auth.log"]);
  });
});

test("relative patterns are relative to the current directory", async () => {
  await withTree(async (root) => {
    const before = process.cwd();
    process.chdir(root);
    try {
      const got = await expandGlobs(["var/log/nginx/*.log"], ["var/log/nginx/error*"]);
      assert.deepEqual(got, [join(process.cwd(), "var/log/nginx/access.log")]);
    } finally {
      process.chdir(before);
    }
  });
});

test("symbolic links to files are followed; ** does not loop through a linked directory", async () => {
  await withTree(async (root, rel) => {
    await symlink(join(root, "var/log/syslog"), join(root, "var/log/nginx/linked.log"));
    await symlink(join(root, "var"), join(root, "var/log/loop"));
    assert.deepEqual(rel(await expandGlobs([`${root}/var/log/nginx/*.log`], [])),
      ["var/log/nginx/access.log", "var/log/nginx/error.log", "var/log/nginx/linked.log"]);
    const all = rel(await expandGlobs([`${root}/**/*.log`], []));
    assert.ok(all.includes("var/log/nginx/linked.log"));
    assert.ok(!all.some((p) => p.includes("loop")));
  });
});

test("pathMatcher: name patterns and path patterns with **", () => {
  const m = pathMatcher("/var/log/**/*.gz");
  assert.ok(m("/var/log/a.gz"));
  assert.ok(m("/var/log/x/y/a.gz"));
  assert.ok(!m("/var/lib/a.gz"));
  assert.ok(pathMatcher("*.{gz,bz2}")("/x/y/z.bz2"));
  assert.ok(!pathMatcher("*.gz")("/x/y.gz/z"));
});

test("globMatcher agrees with the listing on every file of the tree, for every kind of pattern", async () => {
  await withTree(async (root) => {
    const patterns = [
      "var/log/*.log", "var/log/**/*.log", "var/log/**", "var/log/.*.log", "var/log/{auth,syslog}*", "var/log/a\\[1\\].log",
      "*/cowrie.json*", "var/*/nginx/*.log", "**/access.log*", "var/log/nginx/access.log",
    ];
    const everything = await expandGlobs([join(root, "**")]);
    everything.push(join(root, "var/log/.hidden.log"), join(root, "var/log/.cache/deep.log"));
    for (const pattern of patterns) {
      const abs = join(root, pattern);
      const listed = new Set(await expandGlobs([abs]));
      const m = globMatcher([abs]);
      for (const path of everything) assert.equal(m.file(path), listed.has(path), `${pattern} and ${relative(root, path)}`);
    }
  });
});

test("globMatcher.dir: files right in a directory, or further down", () => {
  const m = globMatcher(["/srv/logs/*/app/*.log", "/var/log/**/*.gz"]);
  assert.deepEqual(m.dir("/srv/logs"), { files: false, below: true });
  assert.deepEqual(m.dir("/srv/logs/web1"), { files: false, below: true });
  assert.deepEqual(m.dir("/srv/logs/web1/app"), { files: true, below: false });
  assert.deepEqual(m.dir("/srv/logs/web1/app/deeper"), { files: false, below: false });
  assert.deepEqual(m.dir("/srv"), { files: false, below: true });
  assert.deepEqual(m.dir("/etc"), { files: false, below: false });
  assert.deepEqual(m.dir("/var/log"), { files: true, below: true });
  assert.deepEqual(m.dir("/var/log/a/b"), { files: true, below: true });
  assert.deepEqual(m.dir("/var/log/.hidden"), { files: false, below: false });
});

test("globWatchDirs: the directories files can appear in, their parents, the ones wildcards go through, and the deepest existing part of a missing one", async () => {
  await withTree(async (root, rel) => {
    const dirs = async (patterns: string[]) => rel([...(await globWatchDirs(patterns.map((p) => join(root, p))))]).sort();
    assert.deepEqual(await dirs(["var/log/*.log"]), ["var", "var/log"]);
    assert.deepEqual(await dirs(["var/log/**/*.log"]), ["var", "var/log", "var/log/nginx", "var/log/nginx/old"]);
    // "*" goes through the root; neither cowrie/ nor var/ has a nginx/ yet.
    assert.deepEqual(await dirs(["*/nginx/*.log"]), ["", "cowrie", "var"]);
    assert.deepEqual(await dirs(["srv/app/logs/*.log"]), [""]);
    assert.deepEqual(await dirs(["var/log/missing/*.log"]), ["var/log"]);
  });
});
