import assert from "node:assert/strict";
import { readQcow2Header } from "../lib/qcow2/header.ts";
import { copyNbd } from "../lib/nbd/copy.ts";
import type { CallbackSink } from "../lib/nbd/sink.ts";
import { isZero, Qcow2Writer, type Qcow2WriterOptions } from "../lib/qcow2/writer.ts";
import { buildImage, imagesEqual, qemuIo, startQemuNbd } from "./helpers/nbd_server.ts";
import { sh, TempDir } from "./helpers/volt.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** One write of a test scenario: data (seeded random bytes) or zeros. */
interface Op {
  offset: number;
  length: number;
  zero?: boolean;
  /** Bytes handed to writeData (default: random bytes of `length`). */
  data?: Uint8Array;
}

/** Deterministic pseudo-random numbers (xorshift32), so a failure can be reproduced. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

function randomBytes(length: number, seed: number): Uint8Array {
  const next = prng(seed);
  const words = new Uint32Array(Math.ceil(length / 4));
  for (let i = 0; i < words.length; i++) words[i] = next();
  return new Uint8Array(words.buffer, 0, length);
}

function shuffle<T>(items: T[], seed: number): T[] {
  const next = prng(seed);
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = next() % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** `count` distinct clusters out of `clusters`, as ops of `span` clusters each. */
function scattered(count: number, clusters: number, clusterSize: number, seed: number): Op[] {
  const next = prng(seed);
  const picked = new Set<number>();
  while (picked.size < count) picked.add(next() % clusters);
  return [...picked].map((c, i) => ({
    offset: c * clusterSize,
    length: clusterSize,
    data: randomBytes(clusterSize, seed * 1000 + i),
  }));
}

/** Fills in the data of data ops that have none. */
function withData(ops: Op[], seed: number): Op[] {
  return ops.map((op, i) =>
    op.zero || op.data ? op : { ...op, data: randomBytes(op.length, seed + i) }
  );
}

/** Applies ops to a raw reference file (created sparse at `size` when missing). */
async function applyRaw(path: string, size: number, ops: Op[]): Promise<void> {
  using f = await Deno.open(path, { write: true, create: true });
  if ((await f.stat()).size === 0) await f.truncate(size);
  for (const op of ops) {
    await f.seek(op.offset, Deno.SeekMode.Start);
    const bytes = op.zero ? new Uint8Array(op.length) : op.data!.subarray(0, op.length);
    for (let done = 0; done < bytes.length;) done += await f.write(bytes.subarray(done));
  }
}

/** Writes ops through a new writer (async API, or the *Sync twins) and finishes. */
async function writeImage(
  path: string,
  options: Qcow2WriterOptions,
  ops: Op[],
  api: "async" | "sync" = "async",
): Promise<Qcow2Writer> {
  const opts = { sync: false, ...options };
  if (api === "sync") {
    const w = Qcow2Writer.createSync(path, opts);
    for (const op of ops) {
      if (op.zero) w.writeZeroesSync(op.offset, op.length);
      else w.writeDataSync(op.offset, op.data!);
    }
    w.finishSync();
    return w;
  }
  const w = await Qcow2Writer.create(path, opts);
  for (const op of ops) {
    if (op.zero) await w.writeZeroes(op.offset, op.length);
    else await w.writeData(op.offset, op.data!);
  }
  await w.finish();
  return w;
}

/** `qemu-img check`: no errors, no leaks. Returns the parsed report. */
async function assertClean(path: string): Promise<Record<string, unknown>> {
  const out = await new Deno.Command("qemu-img", {
    args: ["check", "--output=json", path],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(
    out.code,
    0,
    `qemu-img check ${path}: ${text}${new TextDecoder().decode(out.stderr)}`,
  );
  const report = JSON.parse(text);
  assert.equal(report["check-errors"], 0);
  assert.equal(report.corruptions ?? 0, 0);
  assert.equal(report.leaks ?? 0, 0);
  return report;
}

/** `qemu-img compare` of an image with a raw reference: identical contents. */
async function assertSameAsRaw(image: string, raw: string): Promise<void> {
  const out = await sh("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", image, raw]);
  assert.match(out, /Images are identical/);
}

async function info(path: string): Promise<Record<string, unknown>> {
  return JSON.parse(await sh("qemu-img", ["info", "--output=json", path]));
}

/** The scattered-cluster scenario for one cluster size: check clean, compare equal. */
async function scatteredScenario(clusterSize: number, size: number, api: "async" | "sync") {
  await using tmp = new TempDir();
  const clusters = Math.ceil(size / clusterSize);
  const ops: Op[] = scattered(Math.min(40, Math.floor(clusters / 3)), clusters, clusterSize, 7);
  // A multi-cluster run and a zero range among them (no backing file: zeros stay unallocated).
  const runAt = Math.floor(clusters / 2) * clusterSize;
  const taken = new Set(ops.map((o) => o.offset));
  if (![0, 1, 2, 3].some((i) => taken.has(runAt + i * clusterSize))) {
    ops.push({ offset: runAt, length: 3 * clusterSize, data: randomBytes(3 * clusterSize, 99) });
  }
  const raw = tmp.join("ref.raw");
  await applyRaw(raw, size, ops);
  const path = tmp.join("disk.qcow2");
  const w = await writeImage(path, { size, clusterSize }, shuffle(ops, 3), api);
  await assertClean(path);
  await assertSameAsRaw(path, raw);
  const i = await info(path);
  assert.equal(i["virtual-size"], size);
  assert.equal(i["cluster-size"], clusterSize);
  const written = ops.reduce((n, o) => n + o.length, 0);
  assert.equal(w.stats().dataBytes, written);
  assert.equal(w.stats().dataClusters, written / clusterSize);
  assert.equal(w.stats().fileSize, (await Deno.stat(path)).size);
}

Deno.test("scattered random clusters written in random order read back exactly (64 KiB clusters)", async () => {
  await scatteredScenario(64 * KiB, 64 * MiB, "async");
});

Deno.test("2 MiB clusters: scattered data reads back exactly", async () => {
  await scatteredScenario(2 * MiB, 256 * MiB, "async");
});

Deno.test("512-byte and 4 KiB clusters: scattered data reads back exactly", async () => {
  await scatteredScenario(512, 2 * MiB, "async");
  await scatteredScenario(4 * KiB, 8 * MiB, "async");
});

Deno.test("the synchronous API writes the same image", async () => {
  await scatteredScenario(64 * KiB, 32 * MiB, "sync");
});

Deno.test("a disk whose size is not a multiple of the cluster size keeps its short last cluster", async () => {
  for (const clusterSize of [64 * KiB, 2 * MiB]) {
    await using tmp = new TempDir();
    const size = 5 * MiB + 3584; // a multiple of 512, not of 64 KiB
    const lastCluster = Math.floor(size / clusterSize) * clusterSize;
    const ops = withData([
      { offset: 0, length: clusterSize },
      // The short last cluster, given exactly.
      { offset: lastCluster, length: size - lastCluster },
    ], 11);
    const raw = tmp.join("ref.raw");
    await applyRaw(raw, size, ops);
    const path = tmp.join("disk.qcow2");
    await writeImage(path, { size, clusterSize }, ops);
    await assertClean(path);
    await assertSameAsRaw(path, raw);
    assert.equal((await info(path))["virtual-size"], size);

    // The same cluster given padded to a whole cluster: the padding is ignored.
    const padded = new Uint8Array(clusterSize).fill(0xee);
    padded.set(ops[1].data!);
    const path2 = tmp.join("padded.qcow2");
    await writeImage(path2, { size, clusterSize }, [ops[0], { ...ops[1], data: padded }]);
    await assertClean(path2);
    await assertSameAsRaw(path2, raw);
  }
});

Deno.test("a size that is not a multiple of 512 is rounded up like qemu-img create", async () => {
  await using tmp = new TempDir();
  const path = tmp.join("odd.qcow2");
  const w = await writeImage(path, { size: 1_000_003 }, [
    { offset: 983_040, length: 1_000_003 - 983_040, data: new Uint8Array(16_963).fill(3) },
  ]);
  assert.equal(w.size, 1_000_448);
  assert.equal((await info(path))["virtual-size"], 1_000_448);
  await assertClean(path);
  await sh("qemu-io", ["-c", "read -P 3 983040 16963", "-c", "read -P 0 1000003 445", path]);
});

Deno.test("a sparse 8 GiB disk with data past 4 GiB", async () => {
  await using tmp = new TempDir();
  const size = 8 * GiB;
  const ops = withData([
    { offset: 0, length: 64 * KiB },
    { offset: 4 * GiB - 128 * KiB, length: 192 * KiB }, // across the 4 GiB line
    { offset: 4 * GiB + 64 * KiB, length: 64 * KiB },
    { offset: 6 * GiB + 512 * MiB, length: 1 * MiB },
    { offset: 8 * GiB - 64 * KiB, length: 64 * KiB },
  ], 21);
  const raw = tmp.join("ref.raw");
  await applyRaw(raw, size, ops);
  const path = tmp.join("disk.qcow2");
  const w = await writeImage(path, { size }, shuffle(ops, 5));
  await assertClean(path);
  await assertSameAsRaw(path, raw);
  assert.ok((await Deno.stat(path)).size < 4 * MiB);
  assert.ok(w.stats().memoryBytes <= 5 * 32 * KiB, `memory ${w.stats().memoryBytes}`);
});

Deno.test("a 1 TiB virtual disk with a few MiB written stays small on disk and in memory", async () => {
  await using tmp = new TempDir();
  const size = 1024 * GiB;
  const ops = withData([
    { offset: 0, length: 1 * MiB },
    { offset: 300 * GiB, length: 2 * MiB },
    { offset: 777 * GiB + 64 * KiB, length: 64 * KiB },
    { offset: size - 64 * KiB, length: 64 * KiB },
  ], 31);
  const path = tmp.join("big.qcow2");
  const w = await writeImage(path, { size }, shuffle(ops, 2));
  await assertClean(path);
  const fileSize = (await Deno.stat(path)).size;
  assert.ok(fileSize < 4 * MiB, `file of ${fileSize} bytes`);
  assert.ok(w.stats().memoryBytes <= 4 * 32 * KiB, `memory ${w.stats().memoryBytes}`);
  const raw = tmp.join("ref.raw");
  await applyRaw(raw, size, ops);
  await assertSameAsRaw(path, raw);
});

/**
 * A backup-like chain in sibling directories: `qemu-1/scsi0.qcow2` made by qemu-img and
 * qemu-io, then incrementals written by the writer, each backed by the previous one through
 * a relative name.
 */
Deno.test("incremental images over a backing file: new data, zeroed clusters, fall-through", async () => {
  await using tmp = new TempDir();
  const size = 8 * MiB + 64 * KiB;
  for (const d of ["qemu-1", "qemu-2", "qemu-3"]) await Deno.mkdir(tmp.join(d));
  const base = tmp.join("qemu-1/scsi0.qcow2");
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", base, String(size)]);
  await sh("qemu-io", [
    "-c",
    "write -P 0x11 0 4M",
    "-c",
    "write -P 0x22 4M 4M",
    "-c",
    `write -P 0x33 8M 64k`,
    base,
  ]);
  const expected = tmp.join("expected.raw");
  await sh("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", base, expected]);

  // First incremental: data here and there, zeros over base data, the rest falls through.
  const inc1Ops = withData([
    { offset: 64 * KiB, length: 128 * KiB },
    { offset: 1 * MiB, length: 256 * KiB, zero: true },
    { offset: 5 * MiB, length: 64 * KiB },
    { offset: 6 * MiB, length: 2 * MiB, zero: true },
    { offset: 8 * MiB, length: 64 * KiB, zero: true }, // the last cluster
  ], 41);
  const inc1 = tmp.join("qemu-2/scsi0.qcow2");
  await writeImage(inc1, { size, backingFile: "../qemu-1/scsi0.qcow2" }, shuffle(inc1Ops, 9));
  await applyRaw(expected, size, inc1Ops);
  await assertClean(inc1);
  await assertSameAsRaw(inc1, expected);

  const i = await info(inc1);
  assert.equal(i["backing-filename"], "../qemu-1/scsi0.qcow2");
  assert.equal(i["backing-filename-format"], "qcow2");
  const header = await readQcow2Header(inc1);
  assert.equal(header.backingFile, "../qemu-1/scsi0.qcow2");
  assert.equal(header.backingFormat, "qcow2");
  assert.equal(header.version, 3);

  // Second incremental over the writer's own image: data over a zeroed cluster, zeros over
  // the first incremental's data, and a zero range in the middle of a cluster run.
  const inc2Ops = withData([
    { offset: 6 * MiB + 64 * KiB, length: 64 * KiB },
    { offset: 64 * KiB, length: 64 * KiB, zero: true },
    { offset: 2 * MiB, length: 64 * KiB },
    { offset: 3 * MiB, length: 192 * KiB, zero: true },
  ], 51);
  const inc2 = tmp.join("qemu-3/scsi0.qcow2");
  await writeImage(inc2, { size, backingFile: "../qemu-2/scsi0.qcow2" }, inc2Ops);
  await applyRaw(expected, size, inc2Ops);
  await assertClean(inc2);
  await assertSameAsRaw(inc2, expected);

  // Zeroed clusters are zero-flagged in the image itself, not holes to the backing file.
  const map = JSON.parse(await sh("qemu-img", ["map", "--output=json", inc2]));
  const at = (off: number) =>
    map.find((e: { start: number; length: number }) => e.start <= off && off < e.start + e.length);
  assert.equal(at(3 * MiB).zero, true);
  assert.equal(at(3 * MiB).depth, 0);
  assert.equal(at(64 * KiB).depth, 0);
  assert.equal(at(7 * MiB).depth, 1); // zeroed in the first incremental
  assert.equal(at(4 * MiB + 512 * KiB).depth, 2); // falls through to the base

  const chain = JSON.parse(
    await sh("qemu-img", ["info", "--backing-chain", "--output=json", inc2]),
  );
  assert.equal(chain.length, 3);
});

Deno.test("an incremental over a backing image written by the writer itself, with a raw backing format", async () => {
  await using tmp = new TempDir();
  const size = 4 * MiB;
  const baseOps = withData([{ offset: 0, length: 4 * MiB }], 61);
  await writeImage(tmp.join("full.qcow2"), { size }, baseOps);
  const rawBase = tmp.join("base.raw");
  await applyRaw(rawBase, size, baseOps);
  const expected = tmp.join("expected.raw");
  await Deno.copyFile(rawBase, expected);
  const ops = withData([
    { offset: 128 * KiB, length: 64 * KiB },
    { offset: 1 * MiB, length: 1 * MiB, zero: true },
  ], 62);
  await applyRaw(expected, size, ops);
  await writeImage(tmp.join("inc.qcow2"), { size, backingFile: "full.qcow2" }, ops);
  await assertClean(tmp.join("inc.qcow2"));
  await assertSameAsRaw(tmp.join("inc.qcow2"), expected);
  // The same changes over a raw backing file.
  await writeImage(tmp.join("over-raw.qcow2"), {
    size,
    backingFile: "base.raw",
    backingFormat: "raw",
  }, ops);
  assert.equal((await info(tmp.join("over-raw.qcow2")))["backing-filename-format"], "raw");
  await assertSameAsRaw(tmp.join("over-raw.qcow2"), expected);
});

Deno.test("zeroing a whole large region over a backing file costs no table memory", async () => {
  await using tmp = new TempDir();
  const size = 64 * GiB;
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", tmp.join("base.qcow2"), String(size)]);
  await sh("qemu-io", ["-c", "write -P 0x44 10G 1M", tmp.join("base.qcow2")]);
  const w = await Qcow2Writer.create(tmp.join("inc.qcow2"), {
    size,
    backingFile: "base.qcow2",
    sync: false,
  });
  await w.writeZeroes(0, size);
  assert.equal(w.stats().memoryBytes, 0);
  await w.writeData(10 * GiB + 64 * KiB, new Uint8Array(64 * KiB).fill(0x55));
  await w.finish();
  await assertClean(tmp.join("inc.qcow2"));
  await sh("qemu-io", [
    "-c",
    "read -P 0 10G 64k",
    "-c",
    "read -P 0x55 10737483776 64k",
    "-c",
    "read -P 0 10737549312 960k",
    tmp.join("inc.qcow2"),
  ]);
});

Deno.test("pieces smaller than a cluster, without a backing file, land in place", async () => {
  await using tmp = new TempDir();
  const size = 2 * MiB;
  // 4 KiB pieces of a few clusters, some odd-sized, data and zeros, in random order.
  const ops: Op[] = [];
  for (let i = 0; i < 16; i++) ops.push({ offset: 64 * KiB + i * 4 * KiB, length: 4 * KiB });
  ops.push({ offset: 200 * KiB + 100, length: 5000 }); // not even sector-aligned
  ops.push({ offset: 256 * KiB - 512, length: 128 * KiB + 1024 }); // partial, whole, partial
  ops.push({ offset: 72 * KiB, length: 4 * KiB, zero: true }); // overrides a piece above
  ops.push({ offset: 1 * MiB + 4 * KiB, length: 8 * KiB, zero: true }); // on nothing: no-op
  const full = withData(ops, 71);
  const raw = tmp.join("ref.raw");
  // The zero piece over data must win in the reference too: apply it last.
  await applyRaw(raw, size, full);
  const path = tmp.join("pieces.qcow2");
  const order = [...shuffle(full.slice(0, -2), 4), ...full.slice(-2)];
  await writeImage(path, { size }, order);
  await assertClean(path);
  await assertSameAsRaw(path, raw);
});

Deno.test("pieces smaller than a cluster over a backing file are assembled into whole clusters", async () => {
  await using tmp = new TempDir();
  const size = 1 * MiB;
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", tmp.join("base.qcow2"), String(size)]);
  await sh("qemu-io", ["-c", "write -P 0x66 0 1M", tmp.join("base.qcow2")]);
  const expected = tmp.join("expected.raw");
  await sh("qemu-img", ["convert", "-O", "raw", tmp.join("base.qcow2"), expected]);
  const ops: Op[] = [];
  // Cluster 1: data and zero pieces; cluster 3: zero pieces only (must hide the base).
  for (let i = 0; i < 16; i++) {
    ops.push({ offset: 64 * KiB + i * 4 * KiB, length: 4 * KiB, zero: i % 3 === 0 });
    ops.push({ offset: 192 * KiB + i * 4 * KiB, length: 4 * KiB, zero: true });
  }
  // A range from the middle of cluster 5 to the middle of cluster 7.
  ops.push({ offset: 5 * 64 * KiB + 1000, length: 2 * 64 * KiB });
  ops.push({ offset: 5 * 64 * KiB, length: 1000 });
  ops.push({ offset: 7 * 64 * KiB + 1000, length: 64 * KiB - 1000, zero: true });
  const full = withData(ops, 81);
  await applyRaw(expected, size, full);
  const path = tmp.join("inc.qcow2");
  const w = await writeImage(path, { size, backingFile: "base.qcow2" }, shuffle(full, 8));
  assert.equal(w.stats().memoryBytes, 32 * KiB); // one L2 table (u32 entries), no pieces
  await assertClean(path);
  await assertSameAsRaw(path, expected);
});

Deno.test("finish refuses a partly written cluster over a backing file, naming the gap", async () => {
  await using tmp = new TempDir();
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", tmp.join("base.qcow2"), "1M"]);
  const path = tmp.join("inc.qcow2");
  const w = await Qcow2Writer.create(path, { size: MiB, backingFile: "base.qcow2" });
  await w.writeData(128 * KiB, new Uint8Array(4096).fill(1));
  await assert.rejects(w.finish(), (err: Error) => {
    assert.ok(err instanceof RangeError);
    assert.match(err.message, /guest bytes 135168\.\.196608 of the cluster at 131072/);
    return true;
  });
  await w.abort();
  await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
});

Deno.test("writing a cluster again rewrites it; zeroing it drops it without a leak", async () => {
  await using tmp = new TempDir();
  const size = 1 * MiB;
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", tmp.join("base.qcow2"), "1M"]);
  await sh("qemu-io", ["-c", "write -P 0x77 0 1M", tmp.join("base.qcow2")]);
  const expected = tmp.join("expected.raw");
  await sh("qemu-img", ["convert", "-O", "raw", tmp.join("base.qcow2"), expected]);
  const ops = withData([
    { offset: 0, length: 128 * KiB },
    { offset: 64 * KiB, length: 64 * KiB }, // data over data: in place
    { offset: 0, length: 64 * KiB, zero: true }, // zeros over data: cluster dropped
    { offset: 256 * KiB, length: 64 * KiB, zero: true },
    { offset: 256 * KiB, length: 64 * KiB }, // data over a zero cluster
    { offset: 512 * KiB, length: 64 * KiB },
    { offset: 512 * KiB + 4096, length: 4096, zero: true }, // a zero piece inside data
  ], 91);
  await applyRaw(expected, size, ops);
  const path = tmp.join("inc.qcow2");
  const w = await writeImage(path, { size, backingFile: "base.qcow2" }, ops);
  assert.equal(w.stats().dataClusters, 3);
  await assertClean(path);
  await assertSameAsRaw(path, expected);
});

Deno.test("concurrent calls without awaiting are serialized", async () => {
  await using tmp = new TempDir();
  const size = 4 * MiB;
  const ops = shuffle(scattered(32, 64, 64 * KiB, 17), 1);
  const raw = tmp.join("ref.raw");
  await applyRaw(raw, size, ops);
  const path = tmp.join("disk.qcow2");
  const w = await Qcow2Writer.create(path, { size, sync: false });
  const writes = Promise.all(ops.map((op) => w.writeData(op.offset, op.data!)));
  assert.throws(() => w.writeDataSync(0, new Uint8Array(0)), /asynchronous/);
  await writes;
  const finished = w.finish();
  assert.throws(() => w.finishSync(), /asynchronous/);
  await finished;
  await assertClean(path);
  await assertSameAsRaw(path, raw);
});

Deno.test("abort removes the file, also after writes; the writer refuses calls afterwards", async () => {
  await using tmp = new TempDir();
  const a = await Qcow2Writer.create(tmp.join("a.qcow2"), { size: MiB });
  await a.writeData(0, new Uint8Array(64 * KiB).fill(1));
  await a.abort(new Error("copy failed"));
  await assert.rejects(Deno.stat(tmp.join("a.qcow2")), Deno.errors.NotFound);
  await assert.rejects(a.writeData(0, new Uint8Array(64 * KiB)), /aborted/);
  await a.abort(); // twice is fine

  const b = Qcow2Writer.createSync(tmp.join("b.qcow2"), { size: MiB });
  b.writeDataSync(0, new Uint8Array(64 * KiB));
  b.abortSync();
  await assert.rejects(Deno.stat(tmp.join("b.qcow2")), Deno.errors.NotFound);

  {
    await using c = await Qcow2Writer.create(tmp.join("c.qcow2"), { size: MiB });
    await c.writeZeroes(0, MiB);
  } // disposed unfinished: removed
  await assert.rejects(Deno.stat(tmp.join("c.qcow2")), Deno.errors.NotFound);

  // Aborted synchronously while an asynchronous write is queued: that write and finish fail.
  const e = await Qcow2Writer.create(tmp.join("e.qcow2"), { size: 4 * MiB });
  const queued = e.writeData(0, new Uint8Array(MiB));
  e.abortSync();
  await assert.rejects(queued, /aborted/);
  await assert.rejects(e.finish(), /aborted/);
  await assert.rejects(Deno.stat(tmp.join("e.qcow2")), Deno.errors.NotFound);

  const d = await Qcow2Writer.create(tmp.join("d.qcow2"), { size: MiB });
  await d.finish();
  await d.abort(); // after finish: the image stays
  await assertClean(tmp.join("d.qcow2"));
});

Deno.test("before finish the file is not an image", async () => {
  await using tmp = new TempDir();
  const path = tmp.join("partial.qcow2");
  const w = await Qcow2Writer.create(path, { size: MiB });
  await w.writeData(0, new Uint8Array(64 * KiB).fill(1));
  await assert.rejects(readQcow2Header(path), SyntaxError);
  await w.abort();
});

Deno.test("bad arguments are refused with RangeError; an existing file is never overwritten", async () => {
  await using tmp = new TempDir();
  const path = tmp.join("x.qcow2");
  await Deno.writeTextFile(path, "precious");
  await assert.rejects(Qcow2Writer.create(path, { size: MiB }), /already exists/);
  assert.equal(await Deno.readTextFile(path), "precious");

  const p = tmp.join("y.qcow2");
  await assert.rejects(Qcow2Writer.create(p, { size: MiB, clusterSize: 3 * MiB }), RangeError);
  await assert.rejects(Qcow2Writer.create(p, { size: MiB, clusterSize: 4 * MiB }), RangeError);
  await assert.rejects(Qcow2Writer.create(p, { size: -1 }), RangeError);
  await assert.rejects(
    Qcow2Writer.create(p, { size: MiB, backingFile: "x".repeat(1024) }),
    RangeError,
  );
  await assert.rejects(
    Qcow2Writer.create(p, { size: MiB, clusterSize: 512, backingFile: "x".repeat(500) }),
    /more than one 512-byte cluster/,
  );
  const w = await Qcow2Writer.create(p, { size: MiB });
  await assert.rejects(w.writeData(MiB - 4096, new Uint8Array(64 * KiB)), RangeError);
  await assert.rejects(w.writeZeroes(-512, 512), RangeError);
  await assert.rejects(w.writeData(0.5, new Uint8Array(1)), RangeError);
  // A usage error leaves the writer usable.
  await w.writeData(0, new Uint8Array(64 * KiB).fill(2));
  await w.finish();
  await assertClean(p);
});

Deno.test("isZero tells all-zero blocks from others at any alignment", () => {
  const buf = new Uint8Array(70_000);
  assert.ok(isZero(buf));
  assert.ok(isZero(buf.subarray(3, 69_999)));
  assert.ok(isZero(new Uint8Array(0)));
  for (const at of [0, 1, 2, 3, 4096, 69_998, 69_999]) {
    buf[at] = 1;
    assert.ok(!isZero(buf), `byte ${at}`);
    assert.ok(!isZero(buf.subarray(at > 0 ? at - 1 : 0, at + 1)), `slice at ${at}`);
    buf[at] = 0;
  }
});

/** Random overlapping ops; `aligned` keeps them on cluster boundaries. */
function randomOps(count: number, size: number, aligned: boolean, seed: number): Op[] {
  const next = prng(seed);
  const cs = 64 * KiB;
  const ops: Op[] = [];
  for (let i = 0; i < count; i++) {
    let offset: number;
    let length: number;
    if (aligned) {
      offset = (next() % (size / cs)) * cs;
      length = Math.min(size - offset, (1 + (next() % 4)) * cs);
    } else {
      offset = next() % size;
      length = Math.min(size - offset, 1 + (next() % (3 * cs)));
    }
    ops.push({ offset, length, zero: next() % 3 === 0 });
  }
  return withData(ops, seed);
}

Deno.test("random overlapping writes and zeroes, not cluster-aligned, match a raw file", async () => {
  await using tmp = new TempDir();
  const size = 2 * MiB;
  const ops = randomOps(300, size, false, 123);
  const raw = tmp.join("ref.raw");
  await applyRaw(raw, size, ops);
  const path = tmp.join("fuzz.qcow2");
  await writeImage(path, { size }, ops, "sync");
  await assertClean(path);
  await assertSameAsRaw(path, raw);
});

Deno.test("random overlapping cluster writes and zeroes over a backing file match a raw file", async () => {
  await using tmp = new TempDir();
  const size = 2 * MiB;
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", tmp.join("base.qcow2"), "2M"]);
  await sh("qemu-io", ["-c", "write -P 0x5a 0 2M", tmp.join("base.qcow2")]);
  const expected = tmp.join("expected.raw");
  await sh("qemu-img", ["convert", "-O", "raw", tmp.join("base.qcow2"), expected]);
  const ops = randomOps(100, size, true, 321);
  await applyRaw(expected, size, ops);
  const path = tmp.join("fuzz.qcow2");
  await writeImage(path, { size, backingFile: "base.qcow2" }, ops);
  await assertClean(path);
  await assertSameAsRaw(path, expected);
});

Deno.test("as the copy engine's sink: a full and an incremental backup over NBD equal the source", async () => {
  await using tmp = new TempDir();
  const size = 12 * MiB + 5 * 512;
  const disk = await buildImage(
    tmp.join("disk.qcow2"),
    size,
    [
      "write -P 0x11 0 2M",
      "write -P 0 3M 1M", // data that reads as zero: the engine turns it into zeros
      "write -P 0x12 5M 700k",
      `write -P 0x13 ${12 * MiB} 2560`, // the short last cluster
    ],
    [],
    64 * KiB,
  );
  const full = tmp.join("full.qcow2");
  {
    await using server = await startQemuNbd(disk, { readOnly: true, bitmap: "b0" });
    const sink: CallbackSink = await Qcow2Writer.create(full, { size });
    await copyNbd({ source: { uri: server.uri }, sink });
  }
  await assertClean(full);
  assert.ok(await imagesEqual(full, "qcow2", disk, "qcow2"), "the full backup equals the disk");

  await qemuIo(disk, [
    "write -P 0x21 64k 64k",
    "write -z 1M 128k", // must read as zeros in the incremental, not as the full's data
    "discard 5M 64k",
    "write -P 0x22 9M 300k",
    `write -P 0x23 ${12 * MiB + 2048} 512`,
  ]);
  const inc = tmp.join("inc.qcow2");
  await using server = await startQemuNbd(disk, { readOnly: true, bitmap: "b0" });
  const writer = await Qcow2Writer.create(inc, { size, backingFile: "full.qcow2" });
  const stats = await copyNbd({ source: { uri: server.uri }, bitmap: "b0", sink: writer });
  await assertClean(inc);
  assert.ok(await imagesEqual(inc, "qcow2", disk, "qcow2"), "the incremental equals the disk");
  assert.equal(writer.stats().dataBytes, stats.bytesWritten);
  assert.ok((await Deno.stat(inc)).size < 2 * MiB, "the incremental holds only the changes");
});

Deno.test("as the copy engine's sink: a raw source with 4 KiB holes (pieces smaller than a cluster)", async () => {
  await using tmp = new TempDir();
  const size = 4 * MiB;
  const disk = tmp.join("disk.raw");
  await sh("qemu-img", ["create", "-q", "-f", "raw", disk, String(size)]);
  await qemuIo(disk, [
    "write -P 0x31 0 4k",
    "write -P 0x32 12k 8k",
    "write -P 0x33 68k 4k",
    "write -P 0x34 1M 200k",
    "write -P 0x35 3076k 4k",
  ], "raw");
  const out = tmp.join("out.qcow2");
  await using server = await startQemuNbd(disk, { readOnly: true, format: "raw" });
  await copyNbd({ source: { uri: server.uri }, sink: await Qcow2Writer.create(out, { size }) });
  await assertClean(out);
  assert.ok(await imagesEqual(out, "qcow2", disk, "raw"));
});
