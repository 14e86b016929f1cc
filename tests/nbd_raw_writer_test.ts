import assert from "node:assert/strict";
import { libc, O } from "../ffi/libc.ts";
import { SLOT_DATA, SLOT_ZERO } from "../lib/nbd/copy_shared.ts";
import { openSlotWriter } from "../lib/nbd/sink_writers.ts";
import { TempDir } from "./helpers/volt.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** The `open` flags of this process's descriptors on `path` (from /proc/self/fdinfo). */
function openFlags(path: string): number[] {
  const flags: number[] = [];
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    let target: string;
    try {
      target = Deno.readLinkSync(`/proc/self/fd/${entry.name}`);
    } catch {
      continue; // closed meanwhile (the readDir descriptor itself)
    }
    if (target !== path) continue;
    const info = Deno.readTextFileSync(`/proc/self/fdinfo/${entry.name}`);
    flags.push(parseInt(/^flags:\s+([0-7]+)/m.exec(info)![1], 8));
  }
  return flags;
}

const allocated: Deno.PointerObject[] = [];

/** C memory aligned for O_DIRECT, filled with `pattern`, at `offset` bytes into the block. */
function cBuffer(length: number, pattern: number, offset = 0): Deno.PointerObject {
  const base = libc().aligned_alloc(4096n, BigInt(length + 4096))!;
  allocated.push(base);
  const p = offset === 0 ? base : Deno.UnsafePointer.offset(base, offset)!;
  new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(p, length)).fill(pattern);
  return p;
}

/** Bytes of `path` in the page cache (util-linux `fincore`). */
async function cachedBytes(path: string): Promise<number> {
  const out = await new Deno.Command("fincore", {
    args: ["--bytes", "--noheadings", "--output", "RES", path],
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return Number(new TextDecoder().decode(out.stdout).trim());
}

Deno.test("a direct raw writer writes aligned ranges O_DIRECT and the rest through the cache", async () => {
  await using dir = new TempDir();
  const path = dir.join("disk.raw");
  const size = 8 * MiB + 2560; // a short, unaligned last range
  const writer = openSlotWriter({ type: "raw", path, direct: true }, size, MiB);
  const flags = openFlags(path);
  assert.equal(flags.length, 2, "a buffered and a direct descriptor");
  assert.equal(flags.filter((f) => (f & O.DIRECT) !== 0).length, 1, "one of them O_DIRECT");

  const aligned = cBuffer(MiB, 0x11);
  writer.submit(0, SLOT_DATA, 0, MiB, aligned);
  assert.equal(await cachedBytes(path), 0, "the aligned range went past the page cache");
  writer.submit(1, SLOT_DATA, 3 * MiB, 64 * KiB, cBuffer(64 * KiB, 0x22, 512)); // memory
  assert.equal(await cachedBytes(path), 64 * KiB, "a misaligned buffer goes through it");
  writer.submit(2, SLOT_DATA, 5 * MiB + 512, 4096, aligned); // offset not aligned
  writer.submit(3, SLOT_ZERO, 6 * MiB, MiB, aligned); // a hole punched
  writer.submit(4, SLOT_DATA, 8 * MiB, 2560, cBuffer(2560, 0x33)); // length not aligned
  writer.finish();
  assert.deepEqual(openFlags(path), [], "both descriptors closed");

  const expected = new Uint8Array(size);
  expected.fill(0x11, 0, MiB);
  expected.fill(0x22, 3 * MiB, 3 * MiB + 64 * KiB);
  expected.fill(0x11, 5 * MiB + 512, 5 * MiB + 512 + 4096);
  expected.fill(0x33, 8 * MiB, size);
  assert.deepEqual(Deno.readFileSync(path), expected);
  for (const p of allocated.splice(0)) libc().free(p);
});

Deno.test("without direct a raw writer opens one buffered descriptor", async () => {
  await using dir = new TempDir();
  const path = dir.join("disk.raw");
  const writer = openSlotWriter({ type: "raw", path, sync: true }, MiB, MiB);
  const flags = openFlags(path);
  assert.equal(flags.length, 1);
  assert.equal(flags[0] & O.DIRECT, 0);
  writer.submit(0, SLOT_DATA, 0, MiB, cBuffer(MiB, 0x44));
  writer.finish();
  assert.deepEqual(Deno.readFileSync(path), new Uint8Array(MiB).fill(0x44));
  for (const p of allocated.splice(0)) libc().free(p);
});
