/**
 * Snapshot benchmark: `volt snapshot` and `volt rollback` on a volume chain must not depend on
 * the size of the volume. Times both (through the engine, as the CLI calls it) on a 1 GiB and
 * a 64 GiB sparse qcow2 volume, side by side with the ratio, for a storage without
 * preallocation and for the default `preallocation metadata` (where qemu-img writes the new
 * overlay's L2 tables, which do grow with the size). The last rows are the floor: one bare
 * `qemu-img create` of the same overlay, what a user would run by hand.
 *
 * Run: `deno run -A scripts/bench/snapshots.ts [iterations]` (default 15; median reported).
 *
 * @module
 */

import { runRollback } from "../../lib/commands/rollback.ts";
import { runSnapshot } from "../../lib/commands/snapshot.ts";
import { run } from "../../lib/run.ts";
import { Storages } from "../../lib/storage/storages.ts";

const iterations = Number(Deno.args[0] ?? 15);
const GiB = 1024 ** 3;
const SIZES = [GiB, 64 * GiB];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function benchStorage(
  tmp: string,
  preallocation: string,
): Promise<{ snapshot: number[]; rollback: number[]; overlay: number[] }> {
  const root = `${tmp}/${preallocation}`;
  const cfg = `${tmp}/${preallocation}.cfg`;
  Deno.writeTextFileSync(
    cfg,
    `dir: bench\n\tpath ${root}\n\tcontent images\n\tsnapshot-as-volume-chain 1\n` +
      `\tpreallocation ${preallocation}\n`,
  );
  const storages = await Storages.open({ configPath: cfg });
  const out = { snapshot: [] as number[], rollback: [] as number[], overlay: [] as number[] };
  for (const [i, size] of SIZES.entries()) {
    const vmid = 100 + i;
    const dir = `${root}/images/${vmid}`;
    Deno.mkdirSync(dir, { recursive: true });
    const file = `vm-${vmid}-disk-0.qcow2`;
    const opts = preallocation === "off" ? [] : ["-o", `preallocation=${preallocation}`];
    await run("qemu-img", ["create", "-q", "-f", "qcow2", ...opts, `${dir}/${file}`, String(size)]);
    const volid = `bench:${vmid}/${file}`;
    const snaps: number[] = [];
    const rolls: number[] = [];
    const bare: number[] = [];
    for (let n = 0; n < iterations; n++) {
      snaps.push(await timed(() => runSnapshot(storages, volid, `s${n}`)));
      rolls.push(await timed(() => runRollback(storages, volid, `s${n}`)));
      const overlay = `${dir}/bare-${n}.qcow2`;
      bare.push(
        await timed(() =>
          run("qemu-img", [
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            file,
            "-o",
            `extended_l2=on,cluster_size=128k${
              preallocation === "off" ? "" : `,preallocation=${preallocation}`
            }`,
            overlay,
            String(size),
          ])
        ),
      );
      Deno.removeSync(overlay);
    }
    out.snapshot.push(median(snaps));
    out.rollback.push(median(rolls));
    out.overlay.push(median(bare));
  }
  return out;
}

const tmp = Deno.makeTempDirSync({ prefix: "volt-bench-snap-" });
Deno.env.set("VOLT_PLUGINS", `${tmp}/no-plugins`);
try {
  console.log(
    `snapshot create and rollback on a volume chain, median of ${iterations} (ms), sparse volumes`,
  );
  const rows: string[][] = [[
    "preallocation",
    "operation",
    "1 GiB",
    "64 GiB",
    "64 GiB / 1 GiB",
  ]];
  for (const prealloc of ["off", "metadata"]) {
    const r = await benchStorage(tmp, prealloc);
    const row = (label: string, xs: number[]) =>
      rows.push([prealloc, label, xs[0].toFixed(1), xs[1].toFixed(1), (xs[1] / xs[0]).toFixed(2)]);
    row("volt snapshot", r.snapshot);
    row("volt rollback", r.rollback);
    row("qemu-img create overlay (bare)", r.overlay);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const r of rows) {
    console.log(r.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  "));
  }
} finally {
  Deno.removeSync(tmp, { recursive: true });
}
