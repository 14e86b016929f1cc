import assert from "node:assert/strict";
import { copyNbd, type CopyStats } from "../lib/nbd/copy.ts";
import { type CallbackSink, nbdSink } from "../lib/nbd/sink.ts";
import { runNbdMap } from "../lib/commands/nbd.ts";
import {
  buildImage,
  createImage,
  imagesEqual,
  qemuIo,
  startQemuNbd,
  startStorageDaemon,
} from "./helpers/nbd_server.ts";
import { sh, TempDir, volt } from "./helpers/volt.ts";
import { residentBytes } from "./helpers/page_cache.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** Runs `volt nbd copy … --output-format json` and returns its stats. */
async function cliCopy(src: string, dst: string, extra: string[] = []): Promise<CopyStats> {
  const r = await volt(["nbd", "copy", src, dst, "--output-format", "json", ...extra]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /read .*, wrote .*, zeroed .*, zero bytes skipped .*, [\d.]+ s/);
  return JSON.parse(r.stdout) as CopyStats;
}

/** Bytes of the export that are dirty and hold data (what an incremental must read). */
function dirtyData(uri: string): number {
  return runNbdMap({ source: { uri }, bitmap: "b0" })
    .filter((e) => e.dirty && !e.zero)
    .reduce((n, e) => n + e.length, 0);
}

interface Scenario {
  name: string;
  size: number;
  granularity?: number;
  /** Data present when the full copy is taken. */
  before: string[];
  /** Changes after it, recorded by bitmap b0. */
  after: string[];
  /** Apply the incremental with --sync (writeback while copying, fdatasync at the end). */
  sync?: boolean;
}

const SCENARIOS: Scenario[] = [
  {
    name: "64 KiB granularity, size not a multiple of 64 KiB",
    size: 12 * MiB + 5 * 512,
    granularity: 64 * KiB,
    before: [
      "write -P 0x11 0 2M",
      "write -P 0x12 5M 700k",
      `write -P 0x13 ${12 * MiB} 2560`,
    ],
    after: [
      "write -P 0x21 64k 64k",
      "write -z 1M 128k", // data overwritten with zeros: must become zeros in the copy
      "discard 5M 64k", // data discarded: must become zeros in the copy
      "write -P 0x22 9M 300k", // new data in a former hole
      `write -P 0x23 ${12 * MiB + 2048} 512`, // the short last granule
    ],
    sync: true,
  },
  {
    name: "4 MiB granularity",
    size: 40 * MiB,
    granularity: 4 * MiB,
    before: ["write -P 0x31 0 8M", "write -P 0x32 20M 3M"],
    after: ["write -P 0x41 1M 4k", "write -z 20M 1M", "write -P 0x42 30M 64k"],
  },
  {
    name: "sparse 8 GiB disk with data past 4 GiB",
    size: 8 * GiB,
    before: ["write -P 0x51 0 1M", "write -P 0x52 5G 2M", "write -P 0x53 8191M 1M"],
    after: ["write -P 0x61 4095M 2M", "write -z 5G 1M", "write -P 0x62 7G 64k"],
    sync: true,
  },
];

for (const sc of SCENARIOS) {
  Deno.test(`full copy then incremental on top equal the source (${sc.name})`, async () => {
    await using dir = new TempDir();
    const disk = dir.join("disk.qcow2");
    const copy = dir.join("copy.raw");
    await buildImage(disk, sc.size, sc.before, [], sc.granularity);
    {
      await using server = await startQemuNbd(disk, { readOnly: true, bitmap: "b0" });
      const full = await cliCopy(server.uri, copy);
      assert.equal(full.bytesTotal, sc.size);
      assert.equal(full.bytesWritten + full.bytesZeroed + full.bytesSkipped, sc.size);
      assert.ok(await imagesEqual(disk, "qcow2", copy, "raw"), "full copy equals the source");
      assert.equal((await Deno.stat(copy)).size, sc.size);
    }
    await qemuIo(disk, sc.after);
    assert.ok(!(await imagesEqual(disk, "qcow2", copy, "raw")), "the source changed");
    await using server = await startQemuNbd(disk, { readOnly: true, bitmap: "b0" });
    const expectedRead = dirtyData(server.uri);
    const inc = await cliCopy(server.uri, copy, ["--bitmap", "b0", ...(sc.sync ? ["--sync"] : [])]);
    assert.ok(await imagesEqual(disk, "qcow2", copy, "raw"), "incremental equals the source");
    assert.equal(inc.bytesRead, expectedRead, "reads exactly the dirty data, nothing outside");
    assert.ok(inc.bytesZeroed > 0, "dirty ranges that read as zero were zeroed");
    assert.equal(inc.bytesSkipped, 0, "an existing file is never assumed to be zero");
  });
}

Deno.test("a full copy writes holes as holes: the raw file stays sparse", async () => {
  await using dir = new TempDir();
  const disk = await buildImage(dir.join("d.qcow2"), 256 * MiB, [
    "write -P 1 0 1M",
    "write -P 2 100M 2M",
    "write -z 50M 4M", // allocated zeros are not written as data either
  ]);
  await using server = await startQemuNbd(disk, { readOnly: true });
  const out = dir.join("out.raw");
  const stats = await copyNbd({ source: { uri: server.uri }, sink: { type: "raw", path: out } });
  assert.equal(stats.bytesRead, 3 * MiB);
  assert.equal(stats.bytesWritten, 3 * MiB);
  assert.equal(stats.bytesSkipped, 253 * MiB);
  const blocks = Number((await sh("stat", ["-c", "%b", out])).trim());
  assert.ok(blocks * 512 <= 4 * MiB, `only the data is allocated (${blocks} blocks)`);
  assert.ok(await imagesEqual(disk, "qcow2", out, "raw"));
});

Deno.test("a raw copy writes back as it goes and leaves no page cache behind, without --sync too", async () => {
  await using dir = new TempDir();
  const disk = await buildImage(dir.join("d.qcow2"), 96 * MiB, ["write -P 5 0 80M"]);
  await using server = await startQemuNbd(disk, { readOnly: true });
  const out = dir.join("out.raw");
  const stats = await cliCopy(server.uri, out);
  assert.equal(stats.bytesWritten, 80 * MiB);
  // At most the last 16 ranges of 1 MiB are still on their way: the copy's data does not
  // fill memory (nor push the host's own cache out), as nbdcopy does it.
  const resident = residentBytes(out);
  assert.ok(resident <= 24 * MiB, `${resident / MiB} MiB of the copy stayed in the page cache`);
  assert.ok(await imagesEqual(disk, "qcow2", out, "raw"));
});

Deno.test("all-zero data blocks are detected and not written", async () => {
  await using dir = new TempDir();
  const disk = await buildImage(dir.join("d.qcow2"), 8 * MiB, [
    "write -P 0 0 2M", // allocated, written with zero bytes (not a zero cluster)
    "write -P 7 4M 1M",
  ]);
  await using server = await startQemuNbd(disk, { readOnly: true });
  const out = dir.join("out.raw");
  const stats = await copyNbd({ source: { uri: server.uri }, sink: { type: "raw", path: out } });
  assert.equal(stats.bytesRead, 3 * MiB);
  assert.equal(stats.bytesZeroDetected, 2 * MiB);
  assert.equal(stats.bytesWritten, MiB);
  assert.ok(await imagesEqual(disk, "qcow2", out, "raw"));
});

Deno.test("an empty bitmap copies nothing; a fully dirty one copies everything", async () => {
  await using dir = new TempDir();
  const size = 6 * MiB + 64 * KiB;
  const disk = await buildImage(dir.join("d.qcow2"), size, ["write -P 1 0 3M"]);
  const out = dir.join("out.raw");
  {
    await using server = await startQemuNbd(disk, { readOnly: true, bitmap: "b0" });
    await cliCopy(server.uri, out);
    const before = await Deno.readFile(out);
    const inc = await cliCopy(server.uri, out, ["--bitmap", "b0"]);
    assert.equal(inc.bytesTotal, 0);
    assert.equal(inc.bytesRead, 0);
    assert.equal(inc.bytesWritten + inc.bytesZeroed, 0);
    assert.deepEqual(await Deno.readFile(out), before);
  }
  await qemuIo(disk, [`write -P 9 0 ${size}`, "write -z 1M 1M"]);
  await using server = await startQemuNbd(disk, { readOnly: true, bitmap: "b0" });
  const inc = await cliCopy(server.uri, out, ["--bitmap", "b0"]);
  assert.equal(inc.bytesTotal, size);
  assert.equal(inc.bytesRead, size - MiB);
  assert.ok(await imagesEqual(disk, "qcow2", out, "raw"));
});

Deno.test("copy into a qcow2 served by a second qemu-nbd equals the source", async () => {
  await using dir = new TempDir();
  const size = 32 * MiB;
  const disk = await buildImage(dir.join("src.qcow2"), size, [
    "write -P 1 0 3M",
    "write -P 2 16M 1M",
    `write -P 3 ${size - 64 * KiB} 64k`,
  ]);
  const cases = [
    { writer: "reader", fresh: false },
    { writer: "worker", fresh: false },
    { writer: "reader", fresh: true },
  ] as const;
  for (const { writer, fresh } of cases) {
    const target = dir.join(`dst-${writer}-${fresh}.qcow2`);
    await createImage(target, size);
    // Old data where the source has a hole: it must be zeroed.
    if (!fresh) await qemuIo(target, ["write -P 0xee 20M 1M"]);
    {
      await using src = await startQemuNbd(disk, { readOnly: true });
      await using dst = await startQemuNbd(target, {});
      const stats = writer === "worker"
        ? await copyNbd({ source: { uri: src.uri }, sink: nbdSink({ uri: dst.uri }), writer })
        : await cliCopy(src.uri, dst.uri);
      assert.equal(stats.bytesRead, 4 * MiB + 64 * KiB);
      if (fresh) {
        assert.equal(stats.bytesZeroed, 0, "a target whose map is all zero is not zeroed");
        assert.equal(stats.bytesSkipped, size - stats.bytesRead);
      } else {
        assert.equal(stats.bytesSkipped, 0, "a target holding data has its holes zeroed");
      }
    }
    assert.ok(
      await imagesEqual(disk, "qcow2", target, "qcow2"),
      JSON.stringify({ writer, fresh }),
    );
  }
});

Deno.test("copy between qemu-storage-daemon exports, incremental included, equals the source", async () => {
  await using dir = new TempDir();
  const size = 24 * MiB;
  const disk = await buildImage(dir.join("src.qcow2"), size, ["write -P 1 0 4M"]);
  const target = dir.join("dst.qcow2");
  await createImage(target, size);
  {
    await using src = await startStorageDaemon(disk, { bitmaps: ["b0"] });
    await using dst = await startStorageDaemon(target, { writable: true, exportName: "t" });
    await copyNbd({
      source: { uri: src.uri },
      sink: { type: "nbd", target: { uri: dst.uri }, targetIsZero: true },
    });
  }
  assert.ok(await imagesEqual(disk, "qcow2", target, "qcow2"));
  await qemuIo(disk, ["write -z 1M 1M", "write -P 5 10M 2M"]);
  {
    await using src = await startStorageDaemon(disk, { bitmaps: ["b0"] });
    await using dst = await startStorageDaemon(target, { writable: true, exportName: "t" });
    const stats = await copyNbd({
      source: { socket: src.socket, export: src.exportName },
      bitmap: "b0",
      sink: { type: "nbd", target: { socket: dst.socket, export: "t" } },
    });
    assert.equal(stats.bytesRead, 2 * MiB);
    assert.equal(stats.bytesZeroed, MiB);
  }
  assert.ok(await imagesEqual(disk, "qcow2", target, "qcow2"));
});

/** A callback sink that builds the image in memory, recording its calls. */
function memorySink(size: number, initial?: Uint8Array, initiallyZero = false) {
  const image = initial ? initial.slice() : new Uint8Array(size);
  const calls: string[] = [];
  let finished = false;
  const sink: CallbackSink = {
    initiallyZero,
    async writeData(offset, data) {
      await Promise.resolve(); // a real sink awaits I/O
      image.set(data, offset);
      calls.push(`data ${offset} ${data.length}`);
    },
    writeZeroes(offset, length) {
      image.fill(0, offset, offset + length);
      calls.push(`zero ${offset} ${length}`);
    },
    finish() {
      finished = true;
    },
  };
  return { sink, image, calls, finished: () => finished };
}

Deno.test("a callback sink receives data and zero writes that rebuild the disk", async () => {
  await using dir = new TempDir();
  const size = 8 * MiB;
  const disk = await buildImage(dir.join("d.qcow2"), size, ["write -P 1 0 2M", "write -P 2 5M 1M"]);
  const expected = async () => {
    await sh("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", disk, dir.join("x.raw")]);
    return await Deno.readFile(dir.join("x.raw"));
  };
  let full;
  {
    await using server = await startQemuNbd(disk, { readOnly: true, bitmap: "b0" });
    full = memorySink(size, undefined, true);
    const stats = await copyNbd({ source: { uri: server.uri }, sink: full.sink, depth: 4 });
    assert.ok(full.finished());
    assert.equal(stats.bytesWritten, 3 * MiB);
    assert.ok(full.calls.every((c) => c.startsWith("data")), "a zero target needs no zeroing");
    assert.deepEqual(full.image, await expected());
  }
  await qemuIo(disk, ["write -z 1M 64k", "discard 5M 1M", "write -P 3 7M 64k"]);
  await using server = await startQemuNbd(disk, { readOnly: true, bitmap: "b0" });
  // The incremental sink holds the previous backup: it must see zero writes for the dirty
  // zero ranges, or the old data would survive there.
  const inc = memorySink(size, full.image, false);
  await copyNbd({ source: { uri: server.uri }, bitmap: "b0", sink: inc.sink });
  assert.ok(inc.calls.includes(`zero ${MiB} ${64 * KiB}`), inc.calls.join(", "));
  assert.ok(inc.calls.includes(`zero ${5 * MiB} ${MiB}`), inc.calls.join(", "));
  assert.deepEqual(inc.image, await expected());
});

Deno.test("depth 1, several connections and small requests copy the same bytes", async () => {
  await using dir = new TempDir();
  const size = 20 * MiB;
  const disk = await buildImage(dir.join("d.qcow2"), size, [
    "write -P 1 0 5M",
    "write -P 2 7M 3M",
    "write -P 3 15M 64k",
  ]);
  await using server = await startQemuNbd(disk, { readOnly: true, shared: 4 });
  const variants = [
    { depth: 1 },
    { depth: 16, connections: 2 },
    { depth: 3, requestSize: 192 * KiB },
    { depth: 4, writer: "reader" as const }, // the reader writes the file itself
    { depth: 2, writer: "worker" as const }, // a writer Worker writes it
    { depth: 8, sync: true }, // writeback while copying, fdatasync at the end
  ];
  for (const [i, v] of variants.entries()) {
    const out = dir.join(`out${i}.raw`);
    const { sync, ...rest } = v as typeof v & { sync?: boolean };
    const stats = await copyNbd({
      source: { uri: server.uri },
      sink: { type: "raw", path: out, sync },
      ...rest,
    });
    assert.equal(stats.connections, v.connections ?? 1);
    assert.ok(await imagesEqual(disk, "qcow2", out, "raw"), JSON.stringify(v));
  }
  const nul = await cliCopy(server.uri, "null:", ["--depth", "2"]);
  assert.equal(nul.bytesRead, 8 * MiB + 64 * KiB);
});

Deno.test("progress reports bytes done of the total, ending at the total", async () => {
  await using dir = new TempDir();
  const disk = await buildImage(dir.join("d.qcow2"), 16 * MiB, ["write -P 1 0 6M"]);
  await using server = await startQemuNbd(disk, { readOnly: true });
  const seen: number[] = [];
  await copyNbd({
    source: { uri: server.uri },
    sink: { type: "null" },
    bwlimitKiB: 12 * 1024,
    progressInterval: 100,
    onProgress: (p) => {
      assert.ok(p.bytesDone <= p.bytesTotal);
      seen.push(p.bytesDone);
    },
  });
  assert.ok(seen.length >= 2, `several progress calls (${seen.length})`);
  assert.equal(seen.at(-1), 16 * MiB);
});
