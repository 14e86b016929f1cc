/**
 * Benchmark: volt's main job (`volt backup` / `volt restore` into and from the directory
 * backup storage) against what a user would do instead, side by side in one run, as ratios.
 *
 * Source: a 4 GiB qcow2 with ~1.1 GiB of data in ~400 scattered extents (as in
 * `scripts/bench/nbd.ts`), an offline image: volt exports it itself (read-only `qemu-nbd` on a
 * private socket). The references read an identical copy through a read-only `qemu-nbd`
 * started once (volt needs its image free of other users). Everything is read from the page
 * cache (both are read once before timing).
 *
 * Fair about durability: volt's backup is durable when it returns (every image `fdatasync`ed,
 * the manifest and directories `fsync`ed), so the references are too: `nbdcopy --flush` (the
 * target qemu-nbd flushes to disk) and `qemu-img convert -W … && sync FILE`. Restores are
 * measured without any sync on both sides (volt runs `qemu-img convert` itself, which leaves
 * its output in the page cache). After every run, untimed, all outputs are synced and
 * removed, so no run pays for the previous one's writeback.
 *
 * Measured, interleaved round by round (the order rotates), after one warm-up round, medians
 * of `--rounds` (default 3):
 *
 * - full backup: `volt backup --mode full` (whole CLI: start-up, export, copy, SHA-256 of the
 *   image, manifest) vs `qemu-img create` + writable `qemu-nbd` + `nbdcopy --flush` into a fresh
 *   qcow2, vs `qemu-img convert -W -O qcow2` from the export + `sync`;
 * - incremental (~5% of the disk dirty in the bitmap) vs full, both `volt backup`;
 * - restore of the full+incremental chain to a raw volume: `volt restore` vs `qemu-img convert
 *   -O raw` of the same chain (with and without `-W`);
 * - the SHA-256 cost on its own: the full backup's image hashed as volt does, and by
 *   `sha256sum`;
 * - peak RSS of each volt process (`/usr/bin/time`).
 *
 * Run alone: `deno run -A scripts/bench/backup.ts [--rounds N] [--size-gib 4] [--data-gib 1.1]`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { fileDigest } from "../../lib/backup/checksum.ts";
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

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    "size-gib": { type: "string", default: "4" },
    "data-gib": { type: "string", default: "1.1" },
    "dirty-percent": { type: "string", default: "5" },
    dir: { type: "string" },
  },
});
const rounds = Number(values.rounds);
const size = Number(values["size-gib"]) * GiB;
const dataBytes = Math.round(Number(values["data-gib"]) * GiB);
const dirtyBytes = Math.round(size * Number(values["dirty-percent"]) / 100);

/** One timed run. */
type Sample = Pick<TimedRun, "seconds" | "rssKiB">;

/** Syncs and removes paths (untimed, between runs). */
async function settle(paths: string[]): Promise<void> {
  await exec("sync", []);
  for (const p of paths) await Deno.remove(p, { recursive: true }).catch(() => {});
}

const dir = await Deno.makeTempDir({ dir: values.dir ?? "/var/tmp", prefix: "volt-bench-backup-" });
const stops: (() => Promise<void>)[] = [];
try {
  await main();
} finally {
  for (const stop of stops) await stop().catch(() => {});
  await Deno.remove(dir, { recursive: true });
}

async function main(): Promise<void> {
  const home = `${dir}/home`;
  const env = { VOLT_HOME: home, VOLT_CONFIG: `${dir}/none.cfg`, NO_COLOR: "1" };
  const work = `${dir}/work.qcow2`;
  const guest = `${dir}/guest.conf`;
  await Deno.writeTextFile(guest, "memory: 1024\nscsi0: local:100/vm-100-disk-0.qcow2,size=4G\n");

  // The source: data, then the first backup (creates the bitmap), then ~5% dirtied.
  console.log(`preparing: ${size / GiB} GiB qcow2, ${(dataBytes / GiB).toFixed(2)} GiB of data…`);
  await exec("qemu-img", ["create", "-q", "-f", "qcow2", work, String(size)]);
  const rand = prng(7);
  await qemuIo(work, scatteredWrites(rand, size, dataBytes, Math.round(dataBytes / 200), 1));
  const runVolt = (...args: string[]) => exec(Deno.execPath(), voltArgv(...args).slice(1), env);
  const backupArgs = ["backup", "100", "--disk", `scsi0=${work}`, "--config", guest];
  const base = JSON.parse(await runVolt(...backupArgs, "--output-format", "json")) as {
    volid: string;
  };
  await qemuIo(work, scatteredWrites(rand, size, dirtyBytes, 4 * MiB, 100));
  const dirtySaved = `${dir}/dirty.qcow2`;
  await exec("cp", ["--sparse=always", work, dirtySaved]);
  const guestDir = `${home}/backup/100`;
  const baseName = base.volid.split("/").at(-1)!;
  const previousInfo = await Deno.readTextFile(`${guestDir}/previous-info`);
  const extents = (JSON.parse(await exec("qemu-img", ["map", "--output=json", work])) as {
    data: boolean;
  }[]).filter((e) => e.data).length;
  console.log(
    `source: ${extents} data extents; bitmap volt-backup marks ~${
      (dirtyBytes / MiB).toFixed(0)
    } MiB` +
      ` (${values["dirty-percent"]}% of the disk); ${rounds} rounds after a warm-up, interleaved`,
  );

  // The references read an identical copy: volt needs the image free of other users (it adds
  // its pending bitmap before exporting it).
  const refImage = `${dir}/ref.qcow2`;
  await exec("cp", ["--sparse=always", work, refImage]);
  const socket = `${dir}/src.sock`;
  stops.push(await qemuNbd(["-r", "-f", "qcow2", "-x", "src", refImage], socket));
  const srcUri = `nbd+unix:///src?socket=${socket}`;
  await exec("nbdcopy", [srcUri, "null:"]); // page cache warm

  /** Removes backups made by a run, so the storage holds only the base again. */
  const resetStorage = async () => {
    for await (const e of Deno.readDir(guestDir)) {
      if (/^(qemu-\d+|\.tmp-.*)$/.test(e.name) && e.name !== baseName) {
        await Deno.remove(`${guestDir}/${e.name}`, { recursive: true });
      }
    }
    await Deno.writeTextFile(`${guestDir}/previous-info`, previousInfo);
  };
  const out = `${dir}/out.qcow2`;
  const dstSock = `${dir}/dst.sock`;

  type Run = { name: string; run: () => Promise<Sample>; after: () => Promise<void> };
  const results = new Map<string, Sample[]>();
  const series = async (title: string, runs: Run[]) => {
    console.log(`\n== ${title}`);
    for (let r = -1; r < rounds; r++) {
      for (let k = 0; k < runs.length; k++) {
        const c = runs[(k + Math.max(r, 0)) % runs.length];
        const s = await c.run();
        await c.after();
        if (r >= 0) {
          const key = `${title}/${c.name}`;
          if (!results.has(key)) results.set(key, []);
          results.get(key)!.push(s);
        }
      }
    }
    for (const c of runs) {
      const xs = results.get(`${title}/${c.name}`)!;
      const rss = Math.max(...xs.map((x) => x.rssKiB));
      const times = xs.map((x) => x.seconds);
      console.log(
        `  ${c.name.padEnd(44)} ${median(times).toFixed(2).padStart(6)} s` +
          ` (min ${Math.min(...times).toFixed(2)}, max ${Math.max(...times).toFixed(2)})` +
          (rss > 0 ? `   peak RSS ${Math.round(rss / 1024)} MiB` : ""),
      );
    }
  };

  const voltFull: Run = {
    name: "volt backup --mode full",
    run: () => timedRun(voltArgv(...backupArgs, "--mode", "full"), dir, env),
    after: async () => {
      await exec("sync", []);
      await resetStorage();
      await exec("cp", ["--sparse=always", dirtySaved, work]); // its bitmap, not consumed
      await exec("sync", []); // no writeback left for the next run
    },
  };
  const FULL = "full backup (durable: every output on disk when its timer stops)";
  const INCR = "incremental (dirty ranges only) vs full, both volt backup";
  const RESTORE = "restore of the full+incremental chain to raw (page cache, no sync)";
  await series(FULL, [
    voltFull,
    {
      name: "qemu-img create + qemu-nbd + nbdcopy --flush",
      run: () =>
        timedRun(
          [
            "bash",
            "-c",
            `set -e; qemu-img create -q -f qcow2 '${out}' ${size}; ` +
            `qemu-nbd -t -k '${dstSock}' -f qcow2 '${out}' & pid=$!; ` +
            `while [ ! -S '${dstSock}' ]; do sleep 0.01; done; ` +
            `nbdcopy --flush '${srcUri}' 'nbd+unix:///?socket=${dstSock}'; kill $pid; wait $pid || true`,
          ],
          dir,
          env,
        ).then((s) => ({ ...s, rssKiB: 0 })),
      after: () => settle([out, dstSock]),
    },
    {
      name: "qemu-img convert -W -O qcow2 + sync",
      run: () =>
        timedRun(
          [
            "bash",
            "-c",
            `qemu-img convert -q -W -f raw -O qcow2 '${srcUri}' '${out}' && sync '${out}'`,
          ],
          dir,
          env,
        ).then((s) => ({ ...s, rssKiB: 0 })),
      after: () => settle([out]),
    },
  ]);

  await series(INCR, [
    voltFull,
    {
      name: "volt backup (incremental)",
      run: () => timedRun(voltArgv(...backupArgs), dir, env),
      after: async () => {
        await exec("sync", []);
        await resetStorage();
        await exec("cp", ["--sparse=always", dirtySaved, work]); // the bitmap as it was
        await exec("sync", []);
      },
    },
  ]);

  // A chain to restore: the base and one incremental.
  const inc = JSON.parse(await runVolt(...backupArgs, "--output-format", "json")) as {
    volid: string;
  };
  const chainTop = `${guestDir}/${inc.volid.split("/").at(-1)}/scsi0.qcow2`;
  const raw = `${dir}/restored.raw`;
  const cleanRestore = async () => {
    await exec("sync", []);
    await Deno.remove(`${home}/images`, { recursive: true }).catch(() => {});
    await Deno.remove(`${home}/qemu-server`, { recursive: true }).catch(() => {});
  };
  await series(RESTORE, [
    {
      name: "volt restore",
      run: () => timedRun(voltArgv("restore", inc.volid, "300", "--storage", "local"), dir, env),
      after: cleanRestore,
    },
    {
      name: "qemu-img convert -O raw",
      run: () =>
        timedRun(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", chainTop, raw], dir, env)
          .then((s) => ({ ...s, rssKiB: 0 })),
      after: () => settle([raw]),
    },
    {
      name: "qemu-img convert -W -O raw",
      run: () =>
        timedRun(["qemu-img", "convert", "-W", "-f", "qcow2", "-O", "raw", chainTop, raw], dir, env)
          .then((s) => ({ ...s, rssKiB: 0 })),
      after: () => settle([raw]),
    },
  ]);

  // The hashing cost on its own (page cache).
  const fullImage = `${guestDir}/${baseName}/scsi0.qcow2`;
  const fileSize = (await Deno.stat(fullImage)).size;
  const hashTimes: number[] = [];
  const sumTimes: number[] = [];
  for (let r = 0; r < rounds; r++) {
    let t0 = performance.now();
    await fileDigest(fullImage, { parallel: 1 });
    hashTimes.push((performance.now() - t0) / 1000);
    t0 = performance.now();
    await exec("sha256sum", [fullImage]);
    sumTimes.push((performance.now() - t0) / 1000);
  }

  const med = (title: string, name: string) =>
    median(results.get(`${title}/${name}`)!.map((x) => x.seconds));
  const full = med(FULL, "volt backup --mode full");
  const ratio = (a: number, b: number) => (a / b).toFixed(2);
  console.log(
    `\n== SHA-256 of the full backup's image (${(fileSize / GiB).toFixed(2)} GiB, page cache)`,
  );
  console.log(
    `  volt (libcrypto, reads overlapped)            ${median(hashTimes).toFixed(2)} s  ` +
      `(${(fileSize / GiB / median(hashTimes)).toFixed(2)} GiB/s)`,
  );
  console.log(`  sha256sum                                     ${median(sumTimes).toFixed(2)} s`);
  console.log(
    `  share of the full backup's time               ${
      (100 * median(hashTimes) / full).toFixed(0)
    }%`,
  );

  const rssMax = Math.max(...[...results.values()].flat().map((x) => x.rssKiB));
  console.log("\n== ratios (time of volt / time of the other; lower is better)");
  const rows: [string, string, string][] = [
    [
      "full backup / nbdcopy route",
      ratio(full, med(FULL, "qemu-img create + qemu-nbd + nbdcopy --flush")),
      "<= 1.0",
    ],
    [
      "full backup / qemu-img convert -W",
      ratio(full, med(FULL, "qemu-img convert -W -O qcow2 + sync")),
      "goal < 1",
    ],
    [
      "incremental / full",
      ratio(med(INCR, "volt backup (incremental)"), med(INCR, "volt backup --mode full")),
      "<= 0.25",
    ],
    [
      "restore chain / qemu-img convert",
      ratio(med(RESTORE, "volt restore"), med(RESTORE, "qemu-img convert -O raw")),
      "<= 1.2",
    ],
    [
      "restore chain / qemu-img convert -W",
      ratio(med(RESTORE, "volt restore"), med(RESTORE, "qemu-img convert -W -O raw")),
      "",
    ],
    ["peak RSS of volt (MiB)", String(Math.round(rssMax / 1024)), "< 250"],
  ];
  for (const [what, v, target] of rows) {
    console.log(`  ${what.padEnd(40)} ${v.padStart(6)}   ${target}`);
  }
}
