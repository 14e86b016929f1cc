/**
 * Benchmark: volt's streaming qcow2 writer against `qemu-img convert -O qcow2`, on the same
 * data: ~1 GiB of random (incompressible, non-zero) data in 1 MiB extents scattered over a
 * sparse 4 GiB raw file. Both sides read that raw file from the page cache; volt reads the
 * extents it knows (as the backup knows them from NBD block status) and feeds them to the
 * writer (one thread: read, then write), qemu-img finds them with SEEK_DATA and overlaps reads
 * and writes in its coroutines. Variants run interleaved, round by round; the
 * medians are printed with their ratio to qemu-img.
 *
 * Page cache fairness: neither side syncs by default (qemu-img convert writes with
 * cache=unsafe), so "page cache" times end with the output's data dirty in memory. After every
 * run, untimed, the output is fsynced and deleted, so the next run does not pay for the
 * previous one's writeback. The "durable" rows include `fdatasync` in the time (volt's
 * `sync: true`; qemu-img convert followed by an fsync of its output).
 *
 * A second section copies the same data from an NBD export of the raw file (`qemu-nbd -r`),
 * as a backup does: volt's NBD copy engine with the writer as its sink (the async API on the
 * main thread) against `qemu-img convert -W` reading the same export.
 *
 *   deno run -A scripts/bench/qcow2_writer.ts [--size-gib 4] [--data-gib 1] [--rounds 5]
 *     [--sections raw,nbd]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { copyNbd } from "../../lib/nbd/copy.ts";
import { Qcow2Writer } from "../../lib/qcow2/writer.ts";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

const { values } = parseArgs({
  options: {
    "size-gib": { type: "string", default: "4" },
    "data-gib": { type: "string", default: "1" },
    rounds: { type: "string", default: "5" },
    sections: { type: "string", default: "raw,nbd" },
    dir: { type: "string" },
  },
});
const size = Number(values["size-gib"]) * GiB;
const dataBytes = Number(values["data-gib"]) * GiB;
const rounds = Number(values.rounds);
const extent = MiB;

const dir = await Deno.makeTempDir({ dir: values.dir ?? "/var/tmp", prefix: "volt-bench-qcow2-" });
try {
  await main();
} finally {
  await Deno.remove(dir, { recursive: true });
}

async function main(): Promise<void> {
  const src = `${dir}/src.raw`;
  const extents = await makeSource(src);
  console.log(
    `source: ${size / GiB} GiB raw, ${extents.length} extents of 1 MiB ` +
      `(${(extents.length * extent / GiB).toFixed(2)} GiB of data), 64 KiB clusters, ` +
      `${rounds} rounds, interleaved`,
  );

  // Correctness first (untimed): the writer's image is clean and equals the source.
  await volt(src, extents, `${dir}/verify.qcow2`, "async", false);
  await run("qemu-img", ["check", "-q", `${dir}/verify.qcow2`]);
  await run("qemu-img", ["compare", "-q", "-f", "qcow2", "-F", "raw", `${dir}/verify.qcow2`, src]);
  await Deno.remove(`${dir}/verify.qcow2`);
  console.log("verified: qemu-img check clean, qemu-img compare identical to the source\n");

  const out = `${dir}/out.qcow2`;
  const sections = values.sections.split(",");
  if (sections.includes("raw")) {
    console.log("== from the raw file");
    await compare(out, {
      "volt writer (async API)": (sync) => volt(src, extents, out, "async", sync),
      "volt writer (sync API)": (sync) => volt(src, extents, out, "sync", sync),
      "qemu-img convert": (sync) => convert(src, out, [], sync),
      "qemu-img convert -W": (sync) => convert(src, out, ["-W"], sync),
    });
  }
  if (sections.includes("nbd")) {
    const socket = `${dir}/src.sock`;
    const server = new Deno.Command("qemu-nbd", {
      args: ["-r", "-t", "-k", socket, "-f", "raw", src],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      await waitFor(socket);
      const uri = `nbd+unix:///?socket=${socket}`;
      console.log("\n== from an NBD export of the raw file (qemu-nbd -r)");
      await compare(out, {
        "copyNbd -> volt writer": async (sync) => {
          await copyNbd({ source: { uri }, sink: await Qcow2Writer.create(out, { size, sync }) });
        },
        "qemu-img convert -W": (sync) => convert(uri, out, ["-W"], sync),
      }, "qemu-img convert -W");
    } finally {
      server.kill("SIGTERM");
      await server.status;
    }
  }
  const hwm = (await Deno.readTextFile("/proc/self/status")).match(/VmHWM:\s+(\d+)/)?.[1];
  console.log(`\nbench process peak RSS: ${Math.round(Number(hwm) / 1024)} MiB`);
}

/** Runs the variants interleaved, without and with sync, and reports medians. */
async function compare(
  out: string,
  variants: Record<string, (sync: boolean) => Promise<void>>,
  ...refs: string[]
): Promise<void> {
  const names = Object.keys(variants);
  for (const sync of [false, true]) {
    const times = new Map<string, number[]>(names.map((n) => [n, []]));
    for (let r = 0; r < rounds; r++) {
      // Rotate the order so no variant always runs right after the same other one.
      for (let k = 0; k < names.length; k++) {
        const name = names[(k + r) % names.length];
        await settle(out);
        const t0 = performance.now();
        await variants[name](sync);
        times.get(name)!.push((performance.now() - t0) / 1000);
      }
    }
    await settle(out);
    report(sync ? "durable (fdatasync included)" : "page cache (no sync)", times, refs);
  }
}

async function waitFor(path: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      await Deno.stat(path);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`${path} did not appear`);
}

/** A sparse raw file with random 1 MiB extents at random 1 MiB-aligned offsets. */
async function makeSource(path: string): Promise<number[]> {
  const slots = size / extent;
  const want = Math.min(slots, Math.round(dataBytes / extent));
  const picked = new Set<number>();
  let x = 0x9e3779b9;
  while (picked.size < want) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    picked.add(x % slots);
  }
  const offsets = [...picked].sort((a, b) => a - b).map((s) => s * extent);
  const pool = new Uint8Array(16 * MiB + extent);
  for (let i = 0; i < pool.length; i += 65536) crypto.getRandomValues(pool.subarray(i, i + 65536));
  using f = await Deno.open(path, { write: true, create: true, truncate: true });
  await f.truncate(size);
  for (const [i, off] of offsets.entries()) {
    await f.seek(off, Deno.SeekMode.Start);
    const start = (i * 4099 * 64) % (16 * MiB); // a different slice of the pool each time
    await writeAll(f, pool.subarray(start, start + extent));
  }
  await f.syncData();
  // Warm the page cache so both sides read from memory.
  await run("cat", [path], true);
  return offsets;
}

/** Reads each extent from the raw source into one reused buffer and writes it. */
async function volt(
  src: string,
  extents: number[],
  out: string,
  api: "async" | "sync",
  sync: boolean,
): Promise<void> {
  const buf = new Uint8Array(extent);
  using f = Deno.openSync(src, { read: true });
  // The source is read synchronously in both variants: reading is the copy engine's job (in
  // its own thread); only the writer's API differs.
  const read = (off: number) => {
    f.seekSync(off, Deno.SeekMode.Start);
    for (let got = 0; got < buf.length;) got += f.readSync(buf.subarray(got)) ?? 0;
  };
  if (api === "async") {
    const w = await Qcow2Writer.create(out, { size, sync });
    for (const off of extents) {
      read(off);
      await w.writeData(off, buf);
    }
    await w.finish();
  } else {
    const w = Qcow2Writer.createSync(out, { size, sync });
    for (const off of extents) {
      read(off);
      w.writeDataSync(off, buf);
    }
    w.finishSync();
  }
}

async function convert(src: string, out: string, extra: string[], sync: boolean) {
  await run("qemu-img", ["convert", ...extra, "-f", "raw", "-O", "qcow2", src, out]);
  if (sync) await fsync(out);
}

/** Untimed between runs: the previous output's dirty pages written back, then deleted. */
async function settle(out: string): Promise<void> {
  try {
    await fsync(out);
    await Deno.remove(out);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

async function fsync(path: string): Promise<void> {
  using f = await Deno.open(path, { read: true, write: true });
  await f.syncData();
}

function report(title: string, times: Map<string, number[]>, refs: string[]): void {
  const median = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  };
  const against = refs.length > 0 ? refs : ["qemu-img convert", "qemu-img convert -W"];
  const refTimes = against.map((r) => median(times.get(r)!));
  console.log(`${title}: median seconds (min..max), ratio to ${against.join(" / ")}`);
  for (const [name, xs] of times) {
    const m = median(xs);
    const range = `${Math.min(...xs).toFixed(3)}..${Math.max(...xs).toFixed(3)}`;
    const rate = (dataBytes / GiB / m).toFixed(2);
    const ratios = refTimes.map((r) => `${(m / r).toFixed(2)}x`).join(" / ");
    console.log(`  ${name.padEnd(26)} ${m.toFixed(3)} s (${range})  ${rate} GiB/s  ${ratios}`);
  }
}

async function writeAll(f: Deno.FsFile, data: Uint8Array): Promise<void> {
  for (let done = 0; done < data.length;) done += await f.write(data.subarray(done));
}

async function run(cmd: string, args: string[], quiet = false): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: quiet ? "null" : "piped" }).output();
  if (out.code !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${out.code})`);
}
