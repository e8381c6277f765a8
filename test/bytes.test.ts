// concat: the parts in order in one array; one part comes back as it is, two or more as a new array.
import { test } from "node:test";
import assert from "node:assert/strict";
import { concat } from "../agent/bytes.ts";

const bytes = (...xs: number[]) => Uint8Array.from(xs);

test("concat: the parts one after another, with or without the total given", () => {
  const parts = [bytes(1, 2), bytes(), bytes(3), bytes(4, 5, 6)];
  assert.deepEqual(concat(parts), bytes(1, 2, 3, 4, 5, 6));
  assert.deepEqual(concat(parts, 6), bytes(1, 2, 3, 4, 5, 6));
  assert.deepEqual(concat([]), bytes());
  assert.deepEqual(concat([bytes(), bytes()]), bytes());
});

test("concat: parts that are views into a larger buffer contribute only their own bytes", () => {
  const big = bytes(0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
  assert.deepEqual(concat([big.subarray(2, 4), big.subarray(7)]), bytes(2, 3, 7, 8, 9));
});

test("concat: a single part is returned as it is; two or more give a new array that does not change with them", () => {
  const only = bytes(7, 8);
  assert.equal(concat([only]), only);
  const a = bytes(1), b = bytes(2);
  const joined = concat([a, b]);
  a[0] = 9;
  b[0] = 9;
  assert.deepEqual(joined, bytes(1, 2));
});
