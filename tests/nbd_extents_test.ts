import assert from "node:assert/strict";
import { type Extent, mergeBlockStatus, readExtents } from "../lib/nbd/extents.ts";
import { planRanges, splitRequests } from "../lib/nbd/plan.ts";
import { connectNbd } from "../lib/nbd/source.ts";
import { runNbdMap } from "../lib/commands/nbd.ts";
import {
  buildImage,
  type NbdinfoExtent,
  nbdinfoMap,
  startQemuNbd,
  startStorageDaemon,
} from "./helpers/nbd_server.ts";
import { TempDir, volt } from "./helpers/volt.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** volt's extents as nbdinfo's allocation map (type 1 = hole, 2 = zero), joined. */
function allocMap(extents: Extent[]): NbdinfoExtent[] {
  return join(extents.map((e) => ({
    offset: e.offset,
    length: e.length,
    type: (e.allocated ? 0 : 1) | (e.zero ? 2 : 0),
  })));
}

/** volt's extents as nbdinfo's dirty-bitmap map (type 1 = dirty), joined. */
function dirtyMap(extents: Extent[]): NbdinfoExtent[] {
  return join(extents.map((e) => ({ offset: e.offset, length: e.length, type: e.dirty ? 1 : 0 })));
}

function join(list: NbdinfoExtent[]): NbdinfoExtent[] {
  const out: NbdinfoExtent[] = [];
  for (const e of list) {
    const last = out.at(-1);
    if (last && last.type === e.type && last.offset + last.length === e.offset) {
      last.length += e.length;
    } else out.push({ ...e });
  }
  return out;
}

function assertCovers(extents: Extent[], size: number): void {
  let pos = 0;
  for (const e of extents) {
    assert.equal(e.offset, pos, "extents are contiguous and ordered");
    assert.ok(e.length > 0);
    pos += e.length;
  }
  assert.equal(pos, size, "extents cover the whole export");
}

function image(
  dir: TempDir,
  size: number,
  before: string[],
  after: string[],
  granularity?: number,
): Promise<string> {
  return buildImage(
    dir.join(`disk-${crypto.randomUUID()}.qcow2`),
    size,
    before,
    after,
    granularity,
  );
}

/** Checks volt's map against nbdinfo's for both contexts, also with tiny requests. */
async function assertMapsMatch(uri: string, size: number): Promise<Extent[]> {
  const extents = runNbdMap({ source: { uri }, bitmap: "b0" });
  assertCovers(extents, size);
  assert.deepEqual(allocMap(extents), await nbdinfoMap(uri));
  assert.deepEqual(dirtyMap(extents), await nbdinfoMap(uri, "qemu:dirty-bitmap:b0"));
  // The same map when every block-status request is small and unaligned, so answers end
  // in the middle of extents and the two contexts end at different places.
  using h = connectNbd({ uri }, { metaContexts: ["base:allocation", "qemu:dirty-bitmap:b0"] });
  const small = [...readExtents(h, { bitmap: "b0", maxRequest: MiB + 4 * KiB + 512 })];
  assert.deepEqual(small, extents);
  return extents;
}

Deno.test("mergeBlockStatus stops where the shortest context's answer ends", () => {
  const alloc = new Uint32Array([4096, 0, 4096, 3]);
  const dirty = new Uint32Array([2048, 1, 0, 0, 1024, 0]); // short, with a zero-length entry
  const r = mergeBlockStatus(1 << 20, (1 << 20) + 65536, alloc, dirty);
  assert.equal(r.end, (1 << 20) + 3072);
  assert.deepEqual(r.extents.map((e) => [e.offset - (1 << 20), e.length, e.dirty]), [
    [0, 2048, true],
    [2048, 1024, false],
  ]);
});

Deno.test("mergeBlockStatus clips an extent that runs past the request", () => {
  const r = mergeBlockStatus(0, 1000, new Uint32Array([4096, 0]), null);
  assert.equal(r.end, 1000);
  assert.deepEqual(r.extents, [
    { offset: 0, length: 1000, allocated: true, zero: false, dirty: false },
  ]);
});

Deno.test("mergeBlockStatus reports no progress for an empty answer", () => {
  const r = mergeBlockStatus(0, 1000, new Uint32Array(0), null);
  assert.equal(r.end, 0);
  assert.equal(r.extents.length, 0);
});

Deno.test("planRanges: a full copy reads data and unknown holes, zeroes the rest", () => {
  const ranges = [
    ...planRanges([
      { offset: 0, length: 10, allocated: true, zero: false, dirty: false },
      { offset: 10, length: 10, allocated: false, zero: false, dirty: false },
      { offset: 20, length: 10, allocated: false, zero: true, dirty: false },
      { offset: 30, length: 10, allocated: true, zero: true, dirty: false },
    ], "allocated"),
  ];
  assert.deepEqual(ranges, [
    { offset: 0, length: 20, read: true },
    { offset: 20, length: 20, read: false },
  ]);
});

Deno.test("planRanges: an incremental copy zeroes dirty zero ranges and skips clean ones", () => {
  const ranges = [
    ...planRanges([
      { offset: 0, length: 10, allocated: true, zero: false, dirty: true },
      { offset: 10, length: 10, allocated: true, zero: false, dirty: false },
      { offset: 20, length: 10, allocated: false, zero: true, dirty: true },
      { offset: 30, length: 10, allocated: false, zero: true, dirty: false },
    ], "dirty"),
  ];
  assert.deepEqual(ranges, [
    { offset: 0, length: 10, read: true },
    { offset: 20, length: 10, read: false },
  ]);
});

Deno.test("a server gone while the map is read: the error names the offset", async () => {
  await using dir = new TempDir();
  const path = await image(dir, 4 * GiB, ["write -P 1 0 1M"], []);
  const server = await startQemuNbd(path, { readOnly: true });
  try {
    using h = connectNbd({ uri: server.uri }, { metaContexts: ["base:allocation"] });
    const extents = readExtents(h, { maxRequest: GiB });
    assert.deepEqual(extents.next().value, {
      offset: 0,
      length: MiB,
      allocated: true,
      zero: false,
      dirty: false,
    });
    server.kill("SIGKILL");
    await server.stop();
    assert.throws(() => [...extents], (err: Error) => {
      assert.match(err.message, /^block status at offset 1073741824: nbd_block_status: /);
      return true;
    });
  } finally {
    await server.stop();
  }
});

Deno.test("splitRequests cuts long ranges at request-size multiples, not short ones", () => {
  const parts = [
    ...splitRequests([{ offset: 3 * MiB - 512, length: 2 * MiB, read: true }], MiB, GiB),
  ];
  assert.deepEqual(parts.map((p) => [p.offset, p.length]), [
    [3 * MiB - 512, 512],
    [3 * MiB, MiB],
    [4 * MiB, MiB - 512],
  ]);
  const short = [...splitRequests([{ offset: MiB - 4096, length: MiB, read: true }], MiB, GiB)];
  assert.deepEqual(short, [{ offset: MiB - 4096, length: MiB, read: true }], "one request");
  const zeros = [...splitRequests([{ offset: 0, length: 5 * GiB, read: false }], MiB, 2 * GiB)];
  assert.deepEqual(zeros.map((p) => p.length), [2 * GiB, 2 * GiB, GiB]);
});

Deno.test("nbd map equals nbdinfo --map for a 64 KiB bitmap on a size not a multiple of 64 KiB", async () => {
  await using dir = new TempDir();
  const size = 10 * MiB + 3 * 512;
  const path = await image(dir, size, [
    "write -P 0x11 0 1M",
    "write -P 0x22 4M 300k",
    `write -P 0x33 ${size - 1536} 1536`,
  ], [
    "write -P 0x44 64k 64k",
    "write -z 4M 64k",
    "discard 4352k 64k",
    `write -P 0x55 ${size - 512} 512`,
    "write -P 0x66 7M 1",
  ], 64 * KiB);
  await using server = await startQemuNbd(path, { readOnly: true, bitmap: "b0" });
  const extents = await assertMapsMatch(server.uri, size);
  const last = extents.at(-1)!;
  assert.equal(last.offset + last.length, size);
  assert.ok(last.dirty, "the short last granule is dirty");
});

Deno.test("nbd map equals nbdinfo on a sparse 8 GiB disk with data past 4 GiB, 4 MiB granularity", async () => {
  await using dir = new TempDir();
  const size = 8 * GiB;
  const path = await image(dir, size, [
    "write -P 0x11 1M 1M",
    "write -P 0x22 5G 2M",
    "write -P 0x23 8191M 1M",
  ], [
    "write -P 0x44 4095M 2M", // across the 4 GiB line
    "write -P 0x55 6G 64k",
    "write -z 5G 1M",
  ], 4 * MiB);
  await using server = await startQemuNbd(path, { readOnly: true, bitmap: "b0" });
  const extents = await assertMapsMatch(server.uri, size);
  assert.ok(extents.some((e) => e.offset >= 6 * GiB && e.dirty), "dirty past 4 GiB");
  assert.ok(extents.some((e) => e.offset >= 5 * GiB && e.allocated && !e.zero), "data past 4 GiB");
  const dirtyLen = extents.filter((e) => e.dirty).reduce((n, e) => n + e.length, 0);
  assert.equal(dirtyLen, 4 * 4 * MiB, "4 MiB granules at 4092M, 4096M, 5G and 6G");
});

Deno.test("nbd map of an empty bitmap is all clean, of a fully dirty one all dirty", async () => {
  await using dir = new TempDir();
  const size = 3 * MiB + 64 * KiB;
  const empty = await image(dir, size, ["write -P 1 0 1M"], []);
  const full = await image(dir, size, ["write -P 1 0 1M"], [`write -P 2 0 ${size}`]);
  {
    await using server = await startQemuNbd(empty, { readOnly: true, bitmap: "b0" });
    const extents = await assertMapsMatch(server.uri, size);
    assert.ok(extents.every((e) => !e.dirty));
  }
  {
    await using server = await startQemuNbd(full, { readOnly: true, bitmap: "b0" });
    const extents = await assertMapsMatch(server.uri, size);
    assert.ok(extents.every((e) => e.dirty));
  }
});

Deno.test("nbd map equals nbdinfo for a qemu-storage-daemon export", async () => {
  await using dir = new TempDir();
  const size = 16 * MiB;
  const path = await image(dir, size, ["write -P 1 0 2M", "write -P 2 8M 1M"], [
    "write -P 3 1M 128k",
    "write -z 8M 64k",
    "write -P 4 12M 1M",
  ]);
  await using server = await startStorageDaemon(path, { bitmaps: ["b0"] });
  await assertMapsMatch(server.uri, size);
});

Deno.test("volt nbd map --output-format json prints offset, length, allocated, zero, dirty", async () => {
  await using dir = new TempDir();
  const path = await image(dir, 4 * MiB, ["write -P 1 0 1M"], ["write -P 2 2M 64k"]);
  await using server = await startQemuNbd(path, { readOnly: true, bitmap: "b0" });
  const r = await volt(["nbd", "map", server.uri, "--bitmap", "b0", "--output-format", "json"]);
  assert.equal(r.code, 0, r.stderr);
  const list = JSON.parse(r.stdout) as Record<string, unknown>[];
  assert.ok(list.length >= 3);
  for (const e of list) {
    assert.deepEqual(Object.keys(e), ["offset", "length", "allocated", "zero", "dirty"]);
    assert.equal(typeof e.offset, "number");
    assert.equal(typeof e.dirty, "boolean");
  }
  assert.deepEqual(list[0], { offset: 0, length: MiB, allocated: true, zero: false, dirty: false });
  const text = await volt(["nbd", "map", server.socket]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^\s*Offset\s+Length\s+Type/);
});
