import { test } from "node:test";
import assert from "node:assert/strict";
import { mayBeCopyOf, mayHaveBeenEmptied } from "./emptied.ts";

const at = (birth: number, mtime: number, size = 0, atime = birth) => ({ birthtimeMs: birth, mtimeMs: mtime, atimeMs: atime, size });

test("an empty file may have been emptied: written after it was made, or changed within the tick it was made in (birth time known)", () => {
  assert.equal(mayHaveBeenEmptied(at(100, 105), false), true);
  assert.equal(mayHaveBeenEmptied(at(100, 100), false), false, "made empty, nothing since");
  assert.equal(mayHaveBeenEmptied(at(100, 100), true), true, "a change event in the same tick");
  assert.equal(mayHaveBeenEmptied(at(0, 100, 0, 100), true), false, "no birth time: a change event alone may be a chmod");
  assert.equal(mayHaveBeenEmptied(at(0, 105, 0, 100), false), true, "no birth time: written after its last access");
  assert.equal(mayHaveBeenEmptied(at(100, 105, 10), true), false, "not empty");
});

test("a copy of an emptied file: named after it, made no earlier, written no later than it was seen emptied", () => {
  const orig = at(100, 104);
  assert.equal(mayBeCopyOf("/l/app.log.1", at(101, 103, 500), "/l/app.log", orig), true);
  assert.equal(mayBeCopyOf("/l/app.log-20261202", at(100, 104, 500), "/l/app.log", orig), true, "same tick");
  assert.equal(mayBeCopyOf("/l/app.1.log", at(101, 103, 500), "/l/app.log", orig), true);
  assert.equal(mayBeCopyOf("/l/other.log.1", at(101, 103, 500), "/l/app.log", orig), false, "named after another file");
  assert.equal(mayBeCopyOf("/l/app.log.1", at(101, 103, 0), "/l/app.log", orig), false, "empty");
  assert.equal(mayBeCopyOf("/l/app.log.2", at(50, 60, 500), "/l/app.log", orig), false, "an older rotation renamed");
  assert.equal(mayBeCopyOf("/l/app.log.1", at(101, 200, 500), "/l/app.log", orig), false, "written after the emptying");
});
