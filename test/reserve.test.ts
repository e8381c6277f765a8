// The disk-space reserve on a real 4 MiB tmpfs: created with allocated blocks when there is room,
// never from the last free space, given up so that a write on a full disk goes through.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { createLogger } from "../agent/log.ts";
import { isNoSpace } from "../agent/fserrors.ts";
import { Reserve, RESERVE_BYTES } from "../agent/reserve.ts";
import { cannotMount, mountSmallDisk, type SmallDisk } from "./testing/tmpfs.ts";

describe("disk-space reserve on a 4 MiB tmpfs", { skip: cannotMount }, () => {
  let disk: SmallDisk;
  let n = 0;
  const freshDataDir = () => {
    const d = join(disk.dir, `data-${++n}`);
    mkdirSync(d);
    return d;
  };
  const emptyDisk = () => {
    for (const name of readdirSync(disk.dir)) rmSync(join(disk.dir, name), { recursive: true, force: true });
  };
  before(() => {
    disk = mountSmallDisk(4);
  });
  after(() => disk?.unmount());

  test("ensure writes 1 MiB of real (allocated) zeros, fsynced, and is idempotent", async () => {
    emptyDisk();
    const dataDir = freshDataDir();
    const reserve = new Reserve(dataDir);
    const free0 = disk.free();
    assert.equal(await reserve.ensure(), true);
    const st = statSync(reserve.path);
    assert.equal(st.size, RESERVE_BYTES);
    assert.ok(st.blocks * 512 >= RESERVE_BYTES, `allocated, not sparse: ${st.blocks} blocks`);
    assert.ok(free0 - disk.free() >= RESERVE_BYTES, "the filesystem's free space went down by the reserve");
    assert.equal(reserve.inPlace(), true);
    assert.equal(await new Reserve(dataDir).ensure(), true, "a second object over the same data_dir sees it");
    assert.deepEqual(readdirSync(dataDir), ["reserve"], "no temp file left");
  });

  test("ensure never takes the last free space: below twice the reserve it does nothing", async () => {
    emptyDisk();
    const dataDir = freshDataDir();
    disk.fill(RESERVE_BYTES + RESERVE_BYTES / 2);
    const reserve = new Reserve(dataDir);
    assert.equal(await reserve.ensure(), false);
    assert.deepEqual(readdirSync(dataDir), [], "neither the reserve nor a temp file");
  });

  test("on a full disk a write fails with ENOSPC; retryOnFull releases the reserve and the write goes through", async () => {
    emptyDisk();
    const dataDir = freshDataDir();
    const lines: string[] = [];
    const reserve = new Reserve(dataDir, { log: createLogger("debug", { write: (l) => void lines.push(l) }) });
    assert.equal(await reserve.ensure(), true);
    disk.fill(0);
    assert.equal(disk.free(), 0, "the disk is full");
    const target = join(dataDir, "needed");
    const write = async () => writeFileSync(target, "x".repeat(1000));
    await assert.rejects(write(), (err: unknown) => isNoSpace(err));
    let tries = 0;
    await reserve.retryOnFull("the needed file", async () => {
      tries++;
      await write();
    });
    assert.equal(tries, 2, "tried, released, tried once more");
    assert.equal(statSync(target).size, 1000);
    assert.equal(existsSync(reserve.path), false, "the reserve is gone");
    assert.ok(lines.some((l) => /"level":"warn".*released the disk-space reserve.*the needed file/.test(l)), lines.join(""));
    // nothing left to release: the next failure is the caller's, after one try
    tries = 0;
    disk.fill(0, "filler-more");
    await assert.rejects(
      reserve.retryOnFull("again", async () => {
        tries++;
        writeFileSync(join(dataDir, "more"), "y".repeat(8192));
      }),
      (err: unknown) => isNoSpace(err),
    );
    assert.equal(tries, 1);
    assert.equal(await reserve.release(), false, "release says it freed nothing");
  });

  test("other failures are not retried and keep the reserve", async () => {
    emptyDisk();
    const dataDir = freshDataDir();
    const reserve = new Reserve(dataDir);
    assert.equal(await reserve.ensure(), true);
    let tries = 0;
    await assert.rejects(
      reserve.retryOnFull("a file in a missing folder", async () => {
        tries++;
        writeFileSync(join(dataDir, "no-such-folder", "f"), "x");
      }),
      /ENOENT/,
    );
    assert.equal(tries, 1);
    assert.equal(reserve.inPlace(), true);
  });

  test("once space is back, ensure puts the reserve back", async () => {
    emptyDisk();
    const dataDir = freshDataDir();
    const reserve = new Reserve(dataDir);
    const filler = disk.fill(0);
    assert.equal(await reserve.ensure(), false, "full: no reserve");
    rmSync(filler);
    const [a, b] = await Promise.all([reserve.ensure(), new Reserve(dataDir).ensure()]);
    assert.deepEqual([a, b], [true, true], "two at once agree");
    assert.equal(statSync(reserve.path).size, RESERVE_BYTES);
    assert.deepEqual(readdirSync(dataDir), ["reserve"]);
  });
});
