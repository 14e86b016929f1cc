/**
 * Benchmark: `volt nbd copy` against `nbdcopy` and `qemu-img convert`, side by side in one
 * run, printed as ratios.
 *
 * Source: a 4 GiB qcow2 with ~1.1 GiB of data in scattered extents and a persistent dirty
 * bitmap b0 marking ~200 MiB, served by `qemu-nbd -r -B b0 -k SOCK` (one connection at a
 * time, no multi-conn: what a real host gives). Measured, interleaved (the order alternates
 * every round), after one warm-up round, medians of `--rounds` (default 5); `sync` (untimed)
 * before every run, so that none pays for the writeback of the one before:
 *
 * - full copy to a new sparse raw file: volt vs nbdcopy vs qemu-img convert. Fair about the
 *   page cache: nbdcopy syncs its output as it goes, so volt runs with `--sync` (fdatasync
 *   before it exits) and qemu-img convert is followed by `sync FILE` inside the timed command;
 *   every output is on disk when its timer stops. volt without `--sync` is shown too.
 * - full copy into a new qcow2 served by a second, writable qemu-nbd: volt vs
 *   `nbdcopy --flush` (volt flushes the target at the end; nbdcopy only with --flush), and
 *   `nbdcopy --flush --target-is-zero` (volt finds out that a new target reads as zeros).
 * - incremental (dirty ranges of b0, applied on top of the full copy, `--sync`) vs the full
 *   copy, with the bytes read; the same into `null:` against the full copy into `null:` (the
 *   ratio without the disk); and the same command on a second export whose bitmap marks
 *   1 MiB: the fixed cost of any copy (process start, Workers, libnbd, connect, map).
 * - the floor under any incremental on this runtime (`_nbd_floor.ts`): a Deno program with no
 *   volt code, one Worker and a bare libnbd loop, reading the same dirty ranges into memory.
 * - volt with `--depth 1` (one request at a time).
 * - peak RSS and CPU seconds per GiB of data (from `/usr/bin/time`).
 * - after the rounds, one incremental with `VOLT_NBD_TRACE=1`: where its time goes.
 *
 * Run alone: `deno run -A scripts/bench/nbd.ts [--rounds N] [--quick] [--keep]`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  exec,
  GiB,
  median,
  MiB,
  prng,
  qemuIo,
  qemuNbd,
  scatteredWrites,
  type TimedRun,
  timedRun,
  voltArgv,
} from "./_common.ts";

const QEMU_IMG = "qemu-img convert -W + sync";
const NBDCOPY_TIZ = "nbdcopy --flush --target-is-zero";
const FIXED = "same, 1 MiB dirty (fixed cost)";
const INCREMENTAL_NULL = "volt --bitmap b0 null: (no disk)";
const FLOOR = "floor: Deno + Worker + libnbd, no volt";
const FLOOR_SCRIPT = new URL("./_nbd_floor.ts", import.meta.url).pathname;

type Sample = TimedRun;

/** A command to time: argv, plus work to do (untimed) before and after it. */
interface Contender {
  name: string;
  argv: () => string[];
  before?: () => Promise<void>;
  after?: (s: Sample) => Promise<void>;
}

/** Runs the benchmark and prints the table. */
export async function main(argv: string[] = Deno.args): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      rounds: { type: "string", default: "5" },
      quick: { type: "boolean", default: false },
      keep: { type: "boolean", default: false },
    },
  });
  const rounds = Number(values.rounds);
  const size = values.quick ? GiB : 4 * GiB;
  const dataBefore = values.quick ? 230 * MiB : 1060 * MiB;
  const dataDirty = values.quick ? 50 * MiB : 200 * MiB;
  const dir = await Deno.makeTempDir({ prefix: "volt-bench-nbd-" });
  const stops: (() => Promise<void>)[] = [];
  try {
    // The source disk.
    const src = `${dir}/src.qcow2`;
    console.log(`creating a ${size / GiB} GiB qcow2 with scattered data in ${dir}`);
    await exec("qemu-img", ["create", "-q", "-f", "qcow2", src, String(size)]);
    const rand = prng(42);
    await qemuIo(src, scatteredWrites(rand, size, dataBefore, 8 * MiB, 1));
    await exec("qemu-img", ["bitmap", "--add", src, "b0"]);
    await qemuIo(src, scatteredWrites(rand, size, dataDirty, 2 * MiB, 100));
    const srcSock = `${dir}/src.sock`;
    stops.push(await qemuNbd(["-r", "-B", "b0", "-f", "qcow2", src], srcSock));
    const srcUri = `nbd+unix:///?socket=${srcSock}`;
    // The fixed cost: the same disk size, one dirty MiB.
    const tiny = `${dir}/tiny.qcow2`;
    await exec("qemu-img", ["create", "-q", "-f", "qcow2", tiny, String(size)]);
    await exec("qemu-img", ["bitmap", "--add", tiny, "b0"]);
    await qemuIo(tiny, [`write -P 7 ${size / 2} 1M`]);
    const tinySock = `${dir}/tiny.sock`;
    stops.push(await qemuNbd(["-r", "-B", "b0", "-f", "qcow2", tiny], tinySock));
    const tinyUri = `nbd+unix:///?socket=${tinySock}`;
    const [voltCmd, ...mapArgs] = voltArgv(
      "nbd",
      "map",
      srcUri,
      "--bitmap",
      "b0",
      "--output-format",
      "json",
    );
    const map = JSON.parse(await exec(voltCmd, mapArgs)) as {
      offset: number;
      length: number;
      allocated: boolean;
      zero: boolean;
      dirty: boolean;
    }[];
    const data = map.filter((e) => !e.zero).reduce((n, e) => n + e.length, 0);
    const dirty = map.filter((e) => e.dirty).reduce((n, e) => n + e.length, 0);
    const extents = map.filter((e) => !e.zero).length;
    // The dirty ranges, for the floor program (which reads no map).
    const rangesFile = `${dir}/dirty.json`;
    await Deno.writeTextFile(
      rangesFile,
      JSON.stringify(map.filter((e) => e.dirty).map((e) => [e.offset, e.length])),
    );
    console.log(
      `source: ${(data / GiB).toFixed(2)} GiB data in ${extents} extents, ` +
        `${(dirty / MiB).toFixed(0)} MiB dirty; qemu-nbd -r -B b0 (no multi-conn)`,
    );

    const raw = `${dir}/out.raw`;
    const base = `${dir}/base.raw`; // the full copy the incremental applies to
    const incremental = ["nbd", "copy", srcUri, base, "--bitmap", "b0", "--sync"];
    const rmRaw = () => Deno.remove(raw).catch(() => {});
    const tgt = `${dir}/tgt.qcow2`;
    const tgtSock = `${dir}/tgt.sock`;
    const tgtUri = `nbd+unix:///?socket=${tgtSock}`;
    let stopTarget: (() => Promise<void>) | undefined;
    const newTarget = async () => {
      await Deno.remove(tgt).catch(() => {});
      await exec("qemu-img", ["create", "-q", "-f", "qcow2", tgt, String(size)]);
      stopTarget = await qemuNbd(["-f", "qcow2", tgt], tgtSock);
    };
    const endTarget = async () => {
      await stopTarget?.();
      stopTarget = undefined;
    };
    let bytesReadIncremental = 0;
    // The copy engine's own time (from --output-format json), without process start-up.
    const engine = { full: [] as number[], incremental: [] as number[] };
    const engineSeconds = (s: Sample) => (JSON.parse(s.stdout) as { seconds: number }).seconds;

    const groups: { title: string; contenders: Contender[] }[] = [
      {
        title: "full copy to a new sparse raw file (output on disk when the timer stops)",
        contenders: [
          {
            name: "volt --sync",
            before: rmRaw,
            argv: () => voltArgv("nbd", "copy", srcUri, raw, "--sync", "--output-format", "json"),
            after: (s) => {
              engine.full.push(engineSeconds(s));
              return Deno.rename(raw, base);
            },
          },
          { name: "nbdcopy", before: rmRaw, argv: () => ["nbdcopy", srcUri, raw] },
          {
            name: QEMU_IMG,
            before: rmRaw,
            argv: () => [
              "sh",
              "-c",
              `qemu-img convert -q -W -f raw -O raw '${srcUri}' '${raw}' && sync '${raw}'`,
            ],
          },
          {
            name: "volt (no sync)",
            before: rmRaw,
            argv: () => voltArgv("nbd", "copy", srcUri, raw),
          },
          {
            name: "volt --depth 1 --sync",
            before: rmRaw,
            argv: () => voltArgv("nbd", "copy", srcUri, raw, "--depth", "1", "--sync"),
          },
        ],
      },
      {
        title: "full copy into a new qcow2 served by a second qemu-nbd (target flushed at the end)",
        contenders: [
          {
            name: "volt",
            before: newTarget,
            argv: () => voltArgv("nbd", "copy", srcUri, tgtUri),
            after: endTarget,
          },
          {
            name: "nbdcopy --flush",
            before: newTarget,
            argv: () => ["nbdcopy", "--flush", srcUri, tgtUri],
            after: endTarget,
          },
          {
            name: NBDCOPY_TIZ,
            before: newTarget,
            argv: () => ["nbdcopy", "--flush", "--target-is-zero", srcUri, tgtUri],
            after: endTarget,
          },
        ],
      },
      {
        title: "read only (null sink): what request depth buys on one connection",
        contenders: [
          { name: "volt null:", argv: () => voltArgv("nbd", "copy", srcUri, "null:") },
          {
            name: "volt null: --depth 1",
            argv: () => voltArgv("nbd", "copy", srcUri, "null:", "--depth", "1"),
          },
          { name: "nbdcopy null:", argv: () => ["nbdcopy", srcUri, "null:"] },
        ],
      },
      {
        title: "incremental (dirty ranges of b0 onto the full copy, --sync)",
        contenders: [
          {
            name: "volt --bitmap b0 --sync",
            argv: () => voltArgv(...incremental, "--output-format", "json"),
            after: (s) => {
              bytesReadIncremental = (JSON.parse(s.stdout) as { bytesRead: number }).bytesRead;
              engine.incremental.push(engineSeconds(s));
              return Promise.resolve();
            },
          },
          {
            name: INCREMENTAL_NULL,
            argv: () => voltArgv("nbd", "copy", srcUri, "null:", "--bitmap", "b0"),
          },
          {
            name: FLOOR,
            argv: () => [Deno.execPath(), "run", "-A", FLOOR_SCRIPT, srcUri, rangesFile],
          },
          {
            name: FIXED,
            argv: () =>
              voltArgv("nbd", "copy", tinyUri, `${dir}/tiny.raw`, "--bitmap", "b0", "--sync"),
          },
        ],
      },
    ];

    const samples = new Map<string, Sample[]>();
    for (let round = 0; round <= rounds; round++) {
      const warm = round === 0;
      console.log(warm ? "warm-up round" : `round ${round}/${rounds}`);
      for (const g of groups) {
        const order = round % 2 === 0 ? g.contenders : [...g.contenders].reverse();
        // The incremental needs the full copy from this round's first group.
        for (const c of order) {
          await c.before?.();
          // Every run starts with nothing left to write back from the runs before it (the
          // qcow2 group leaves gigabytes behind; a deleted output frees its blocks): the
          // disk is quiet for each, as each leaves its output on disk.
          await exec("sync", []);
          const s = await timedRun(c.argv(), dir);
          await c.after?.(s);
          if (!warm) samples.set(c.name, [...(samples.get(c.name) ?? []), s]);
        }
      }
      if (warm) {
        // Check once that volt's outputs are right (untimed).
        const cmp = await new Deno.Command("qemu-img", {
          args: ["compare", "-q", "-f", "qcow2", "-F", "raw", src, base],
        }).output();
        if (cmp.code !== 0) {
          throw new Error("volt's full + incremental copy differs from the source");
        }
      }
    }

    const med = (name: string, f: (s: Sample) => number) => median(samples.get(name)!.map(f));
    const t = (name: string) => med(name, (s) => s.seconds);
    const rows: string[][] = [];
    const dataGiB = data / GiB;
    for (const g of groups) {
      rows.push([g.title]);
      for (const c of g.contenders) {
        rows.push([
          `  ${c.name}`,
          `${t(c.name).toFixed(2)} s`,
          `${(med(c.name, (s) => s.cpu) / dataGiB).toFixed(2)} s/GiB`,
          `${(med(c.name, (s) => s.rssKiB) / 1024).toFixed(0)} MiB`,
          `  ${samples.get(c.name)!.map((s) => s.seconds.toFixed(2)).join(" ")}`,
        ]);
      }
    }
    console.log("\nmedians (wall time, CPU seconds per GiB of data, peak RSS; every run's time):");
    for (const r of rows) {
      console.log(
        r.length === 1
          ? r[0]
          : r[0].padEnd(38) + r.slice(1, 4).map((x) => x.padStart(12)).join("") + r[4],
      );
    }
    const ratio = (a: string, b: string) => (t(a) / t(b)).toFixed(2);
    const cpuRatio = (a: string, b: string) =>
      (med(a, (s) => s.cpu) / med(b, (s) => s.cpu)).toFixed(2);
    const rss = Math.max(
      ...[...samples.entries()].filter(([k]) => k.startsWith("volt")).flatMap(([, v]) =>
        v.map((s) => s.rssKiB)
      ),
    );
    const lines: [string, string, string][] = [
      ["full to raw: volt / nbdcopy", ratio("volt --sync", "nbdcopy"), "<= 0.8"],
      ["full to raw: volt / qemu-img convert", ratio("volt --sync", QEMU_IMG), ""],
      ["full to raw: volt without sync / nbdcopy", ratio("volt (no sync)", "nbdcopy"), ""],
      ["into qcow2: volt / nbdcopy --flush", ratio("volt", "nbdcopy --flush"), "<= 1.0"],
      ["into qcow2: volt / nbdcopy --flush --target-is-zero", ratio("volt", NBDCOPY_TIZ), ""],
      ["incremental / full", ratio("volt --bitmap b0 --sync", "volt --sync"), "<= 0.25"],
      ["incremental / full, read only (null sink)", ratio(INCREMENTAL_NULL, "volt null:"), ""],
      ["fixed cost (1 MiB dirty) / full", ratio(FIXED, "volt --sync"), ""],
      // The runtime's floor: a Deno program with no volt code reading the dirty ranges.
      ["floor (no volt, into memory) / full into null:", ratio(FLOOR, "volt null:"), ""],
      [
        "floor + volt's cost of the disk / full",
        ((t(FLOOR) + t("volt --bitmap b0 --sync") - t(INCREMENTAL_NULL)) / t("volt --sync"))
          .toFixed(2),
        "",
      ],
      [
        "volt's own cost above the floor, ms (into null:)",
        ((t(INCREMENTAL_NULL) - t(FLOOR)) * 1000).toFixed(0),
        "",
      ],
      [
        "incremental / full, engine time (no process start-up)",
        (median(engine.incremental.slice(1)) / median(engine.full.slice(1))).toFixed(2),
        "",
      ],
      ["to raw: depth 1 / depth 4 (default)", ratio("volt --depth 1 --sync", "volt --sync"), ""],
      ["read only: depth 1 / depth 4 (default)", ratio("volt null: --depth 1", "volt null:"), ""],
      ["read only: volt / nbdcopy", ratio("volt null:", "nbdcopy null:"), ""],
      ["CPU to raw: volt / nbdcopy", cpuRatio("volt --sync", "nbdcopy"), "<= 1.5"],
      ["CPU into qcow2: volt / nbdcopy --flush", cpuRatio("volt", "nbdcopy --flush"), "<= 1.5"],
      ["volt peak RSS, MiB (max over all runs)", (rss / 1024).toFixed(0), "< 200"],
      ["incremental MiB read", (bytesReadIncremental / MiB).toFixed(1), ""],
      ["  dirty MiB in the bitmap", (dirty / MiB).toFixed(1), ""],
    ];
    console.log("\nratios (time of volt / time of the other) [target]:");
    for (const [label, value, target] of lines) {
      console.log(`  ${label.padEnd(52)} ${value.padStart(6)}  ${target ? `[${target}]` : ""}`);
    }
    console.log("\none incremental traced (VOLT_NBD_TRACE=1; ms since the runtime started):");
    const [tracedCmd, ...tracedArgs] = voltArgv(...incremental);
    const traced = await new Deno.Command(tracedCmd, {
      args: tracedArgs,
      env: { VOLT_NBD_TRACE: "1" },
      stdout: "null",
      stderr: "piped",
    }).output();
    for (const line of new TextDecoder().decode(traced.stderr).split("\n")) {
      if (line.startsWith("nbd-trace ")) console.log(`  ${line.slice("nbd-trace ".length)}`);
    }
  } finally {
    for (const stop of stops) await stop().catch(() => {});
    if (values.keep) console.log(`kept ${dir}`);
    else await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) await main();
