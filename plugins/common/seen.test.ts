import { test } from "node:test";
import assert from "node:assert/strict";
import { SeenSet, hashString, seenSetState, stringHash } from "./seen.ts";

const DAY = 86_400_000;
const T0 = Date.parse("2024-05-01T00:00:00Z");

test("changed: new, then same for the marked value, changed for another; mark records it", () => {
  const s = new SeenSet();
  assert.equal(s.changed("7946016", "h1", T0), "new");
  assert.equal(s.has("7946016", T0), false);
  s.mark("7946016", "h1", T0);
  assert.equal(s.has("7946016", T0), true);
  assert.equal(s.get("7946016", T0), "h1");
  assert.equal(s.changed("7946016", "h1", T0), "same");
  assert.equal(s.changed("7946016", "h2", T0), "changed");
  s.mark("7946016", "h2", T0 + 1000);
  assert.equal(s.changed("7946016", "h2", T0 + 1000), "same");
  assert.equal(s.size, 1);
  assert.equal(s.delete("7946016"), true);
  assert.equal(s.changed("7946016", "h2", T0), "new");
});

test("ttl: an entry not marked for dedup_ttl is forgotten; marking again keeps it", () => {
  const s = new SeenSet({ ttlMs: 30 * DAY });
  s.mark("a", "1", T0);
  s.mark("b", "1", T0);
  s.mark("b", "1", T0 + 20 * DAY);
  assert.equal(s.has("a", T0 + 30 * DAY - 1000), true);
  assert.equal(s.has("a", T0 + 30 * DAY + 1000), false);
  assert.equal(s.changed("a", "1", T0 + 31 * DAY), "new");
  assert.equal(s.has("b", T0 + 31 * DAY), true);
  assert.equal(s.prune(T0 + 31 * DAY), 1);
  assert.equal(s.size, 1);
  assert.equal(s.has("b", T0 + 49 * DAY), true);
  assert.equal(s.prune(T0 + 51 * DAY), 1);
  assert.equal(s.size, 0);
});

test("max_entries: the least recently marked entries are evicted first", () => {
  const s = new SeenSet({ maxEntries: 3 });
  s.mark("a", "1", T0);
  s.mark("b", "1", T0 + 1000);
  s.mark("c", "1", T0 + 2000);
  s.mark("a", "1", T0 + 3000); // a is now the newest
  s.mark("d", "1", T0 + 4000); // evicts b
  assert.equal(s.size, 3);
  assert.deepEqual(["a", "b", "c", "d"].map((k) => s.has(k, T0 + 5000)), [true, false, true, true]);
  s.mark("e", "1", T0 + 5000); // evicts c
  assert.deepEqual(["a", "c", "d", "e"].map((k) => s.has(k, T0 + 5000)), [true, false, true, true]);
});

test("toJSON / from: entries, values and times survive; a smaller max_entries keeps the newest", () => {
  const s = new SeenSet();
  for (let i = 0; i < 50; i++) s.mark(`https://phish.example/${i}`, hashString(`record ${i}`), T0 + i * 60_000);
  const json = JSON.parse(JSON.stringify(s.toJSON()));
  const back = SeenSet.from(json);
  assert.equal(back.size, 50);
  for (let i = 0; i < 50; i++) {
    assert.equal(back.changed(`https://phish.example/${i}`, hashString(`record ${i}`), T0 + DAY), "same");
    assert.equal(back.changed(`https://phish.example/${i}`, hashString(`other ${i}`), T0 + DAY), "changed");
  }
  // Times are kept (to the second): entry 0 expires a minute before entry 1.
  const at = T0 + 30 * DAY + 30_000;
  assert.equal(back.has("https://phish.example/0", at), false);
  assert.equal(back.has("https://phish.example/1", at), true);
  const small = SeenSet.from(json, { maxEntries: 10 });
  assert.equal(small.size, 10);
  assert.equal(small.has("https://phish.example/39", T0), false);
  assert.equal(small.has("https://phish.example/40", T0), true);
  assert.equal(small.has("https://phish.example/49", T0), true);
});

test("from: nothing saved gives an empty set; seenSetState refuses unreadable saved sets, naming the key", () => {
  assert.equal(SeenSet.from(undefined).size, 0);
  const good = (() => {
    const s = new SeenSet();
    s.mark("a", "1", T0);
    return s.toJSON();
  })();
  assert.equal(seenSetState.safeParse(JSON.parse(JSON.stringify(good))).success, true);
  assert.equal(seenSetState.safeParse(new SeenSet().toJSON()).success, true);
  const bads: Array<[unknown, string]> = [
    [42, ""], ["x", ""], [null, ""], [{ v: 2 }, "v"], [{ ...good, extra: 1 }, ""],
    [{ ...good, n: 2 }, "keys"], [{ ...good, n: -1 }, "n"], [{ ...good, n: 1.5 }, "n"], [{ ...good, n: "1" }, "n"],
    [{ ...good, keys: "%%%%" }, "keys"], [{ ...good, keys: "AAA" }, "keys"], [{ ...good, seen: "" }, "seen"],
    [{ ...good, values: ["1", "2"] }, "values"], [{ ...good, values: [1] }, "values"], [{ ...good, values: "" }, "values"],
  ];
  for (const [bad, key] of bads) {
    const checked = seenSetState.safeParse(bad);
    assert.equal(checked.success, false, JSON.stringify(bad));
    assert.equal(checked.error!.issues[0]!.path.join("."), key, JSON.stringify(bad));
  }
  // Values of a width that does not divide evenly among the entries.
  const two = new SeenSet();
  two.mark("a", "xy", T0);
  two.mark("b", "zw", T0);
  assert.equal(seenSetState.safeParse({ ...two.toJSON(), values: "xyz" }).error!.issues[0]!.path[0], "values");
});

test("stringHash accepts what hashString gives, and nothing else", () => {
  for (const s of ["", "a", "https://phish.example/1", "x".repeat(1000)]) assert.equal(stringHash.safeParse(hashString(s)).success, true);
  for (const bad of ["", "abc", "AAAAAAAAAAA=", "AAAAAAAAAAAAA", 12, null]) assert.equal(stringHash.safeParse(bad).success, false, String(bad));
});

test("100k entries serialise to a few MB of JSON and come back whole", () => {
  const s = new SeenSet();
  for (let i = 0; i < 100_000; i++) s.mark(`https://example.com/phish/${i}/index.php?id=${i * 7}`, hashString(`{"phish_id":"${i}"}`), T0 + i);
  const text = JSON.stringify(s.toJSON());
  assert.ok(text.length < 3_500_000, `serialised size ${text.length}`);
  const back = SeenSet.from(JSON.parse(text));
  assert.equal(back.size, 100_000);
  assert.equal(back.changed("https://example.com/phish/99999/index.php?id=699993", hashString('{"phish_id":"99999"}'), T0), "same");
  assert.equal(back.changed("https://example.com/phish/100000/index.php?id=700000", "x", T0), "new");
});

test("hashString: stable, fixed width, sensitive to every character", () => {
  // Persisted in state files: the value must never change between versions or runtimes.
  assert.equal(hashString(""), hashString(""));
  assert.equal(hashString('{"phish_id": "7946016"}'), "CYSiUJALXIE7");
  assert.match(hashString("é🎣"), /^[A-Za-z0-9_-]{12}$/);
  const byHash = new Map<string, string>();
  let collisions = 0;
  const add = (text: string) => {
    const h = hashString(text);
    const prev = byHash.get(h);
    if (prev !== undefined && prev !== text) collisions++;
    byHash.set(h, text);
  };
  const base = '{"phish_id":"7946016","url":"https://ardentig.top/","verified":"yes"}';
  for (let i = 0; i < base.length; i++) {
    for (let c = 32; c < 127; c++) add(base.slice(0, i) + String.fromCharCode(c) + base.slice(i + 1));
    add(base.slice(0, i) + base.slice(i + 1));
  }
  for (let i = 0; i < 200_000; i++) add(`https://a.example/${i.toString(36)}`);
  assert.equal(collisions, 0);
});

test("deletes and prunes keep every other entry findable (probe runs stay intact)", () => {
  const s = new SeenSet({ maxEntries: 100_000 });
  for (let i = 0; i < 5000; i++) s.mark(`k${i}`, `v${i}`, T0 + (i % 7) * 1000);
  for (let i = 0; i < 5000; i += 3) assert.equal(s.delete(`k${i}`), true);
  assert.equal(s.delete("k0"), false);
  // Entries marked at T0 + 0..2 s expire, the rest stay.
  const removed = s.prune(T0 + 30 * DAY + 3000);
  let kept = 0;
  for (let i = 0; i < 5000; i++) {
    const expected = i % 3 !== 0 && i % 7 >= 3;
    assert.equal(s.has(`k${i}`, T0), expected, `k${i}`);
    if (expected) {
      assert.equal(s.get(`k${i}`, T0), `v${i}`);
      kept++;
    }
  }
  assert.equal(s.size, kept);
  assert.equal(removed + kept, 5000 - Math.ceil(5000 / 3));
});

test("values of different lengths serialise too", () => {
  const s = new SeenSet();
  s.mark("a", "1700000000", T0);
  s.mark("b", "", T0);
  s.mark("c", "x".repeat(100), T0);
  const back = SeenSet.from(JSON.parse(JSON.stringify(s.toJSON())));
  assert.deepEqual(["a", "b", "c"].map((k) => back.get(k, T0)), ["1700000000", "", "x".repeat(100)]);
});
