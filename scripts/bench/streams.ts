/**
 * Benchmark of `volt export` / `volt import` against what Proxmox runs for the same job (`dd`
 * and `cat`), side by side in one run, printed as ratios (reference time / volt time: above
 * 1.0 means volt is faster), with peak RSS and allocated sizes.
 *
 *   deno run -A scripts/bench/streams.ts [--size 2G] [--runs 3] [--dir /var/tmp] [--only import]
 *     [--verbose]
 *
 * The image is raw, half data (1 MiB runs of random bytes) and half holes. Runs alternate
 * A B B A so that page-cache growth and other noise hit both sides alike; medians are
 * reported. Nothing is synced to disk by either side (dd does not sync either).
 *
 * @module
 */

import { parseArgs } from "node:util";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const { values } = parseArgs({
  args: Deno.args,
  options: {
    size: { type: "string", default: "2G" },
    runs: { type: "string", default: "3" },
    dir: { type: "string" },
    only: { type: "string" },
    verbose: { type: "boolean", default: false },
  },
});

function parseSize(text: string): number {
  const m = /^(\d+)([KMG]?)$/i.exec(text);
  if (!m) throw new Error(`bad size ${text}`);
  return Number(m[1]) * { "": 1, K: 1 << 10, M: 1 << 20, G: 1 << 30 }[m[2].toUpperCase()]!;
}

const size = parseSize(values.size!);
const runs = Math.max(1, Number(values.runs));
const tmp = Deno.makeTempDirSync({ dir: values.dir, prefix: "volt-bench-streams-" });
const store = `${tmp}/store`;
const env = { VOLT_CONFIG: `${tmp}/storage.cfg`, VOLT_HOME: `${tmp}/home`, NO_COLOR: "1" };
Deno.writeTextFileSync(env.VOLT_CONFIG, `dir: local\n\tpath ${store}\n\tcontent images\n`);
const hasTime = (() => {
  try {
    return Deno.statSync("/usr/bin/time").isFile;
  } catch {
    return false;
  }
})();

const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
const volt = (args: string[]) => [Deno.execPath(), "run", "-A", MAIN, ...args].map(q).join(" ");

/** What one run cost: wall seconds, CPU seconds of all its processes, peak RSS (KiB) of volt. */
interface Run {
  s: number;
  cpu: number;
  rss: number;
}

/**
 * Runs a shell line; returns wall and CPU time (user + system of every process in it: on a
 * shared machine the steadier figure) and the peak RSS written to `rssFiles`, if any.
 */
async function timed(script: string, rssFiles: string[] = []): Promise<Run> {
  const cpuFile = `${tmp}/cpu`;
  const t0 = performance.now();
  const out = await new Deno.Command(hasTime ? "/usr/bin/time" : "sh", {
    args: hasTime ? ["-o", cpuFile, "-f", "%U %S", "sh", "-c", script] : ["-c", script],
    env,
    stdout: "null",
    stderr: "piped",
  }).output();
  const s = (performance.now() - t0) / 1000;
  if (out.code !== 0) {
    throw new Error(`failed (${out.code}): ${script}\n${new TextDecoder().decode(out.stderr)}`);
  }
  let cpu = 0;
  if (hasTime) {
    const [u, sys] = Deno.readTextFileSync(cpuFile).trim().split("\n").at(-1)!.split(" ");
    cpu = Number(u) + Number(sys);
  }
  let rss = 0;
  for (const f of rssFiles) {
    try {
      rss = Math.max(rss, Number(Deno.readTextFileSync(f).trim().split("\n").at(-1)));
    } catch { /* no measurement */ }
  }
  return { s, cpu, rss };
}

/** `/usr/bin/time -o FILE -f %M` in front of a command, when available. */
function rssWrap(cmd: string, file: string): string {
  return hasTime ? `/usr/bin/time -o ${q(file)} -f %M ${cmd}` : cmd;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function du(path: string): number {
  const st = Deno.statSync(path);
  return (st.blocks ?? 0) * 512;
}

const MiB = 1 << 20;

function makeImage(path: string): void {
  Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  const pool = new Uint8Array(8 * MiB);
  for (let i = 0; i < pool.length; i += 65536) crypto.getRandomValues(pool.subarray(i, i + 65536));
  using f = Deno.openSync(path, { write: true, create: true, truncate: true });
  f.truncateSync(size);
  for (let off = 0, i = 0; off < size; off += 2 * MiB, i++) {
    f.seekSync(off, Deno.SeekMode.Start);
    const chunk = pool.subarray((i % 8) * MiB, (i % 8 + 1) * MiB);
    let done = 0;
    while (done < chunk.length) done += f.writeSync(chunk.subarray(done));
  }
}

interface Case {
  name: string;
  target: number;
  volt: () => Promise<Run>;
  ref: () => Promise<Run>;
  cleanup?: () => Promise<void>;
}

const volname = "100/vm-100-disk-0.raw";
const img = `${store}/images/100/vm-100-disk-0.raw`;
const headerFile = `${tmp}/header.bin`;
const outRaw = `${tmp}/out.raw`;
const importVol = "local:100/vm-100-disk-1.raw";
const importPath = `${store}/images/100/vm-100-disk-1.raw`;
const rss1 = `${tmp}/rss1`;
const rss2 = `${tmp}/rss2`;

async function rmImported(): Promise<void> {
  await Deno.remove(importPath).catch(() => {});
  await Deno.remove(outRaw).catch(() => {});
  await timed("sync"); // no writeback of an earlier run's output during the next one
}

const cases: Case[] = [
  {
    name: "export into a pipe (| cat)",
    target: 1.0,
    volt: () =>
      timed(
        `${rssWrap(volt(["export", `local:${volname}`, "raw+size", "-"]), rss1)} | cat > /dev/null`,
        [rss1],
      ),
    ref: () => timed(`dd if=${q(img)} bs=4k status=none | cat > /dev/null`),
  },
  {
    name: "export into /dev/null",
    target: 0.8,
    volt: () =>
      timed(rssWrap(volt(["export", `local:${volname}`, "raw+size", "/dev/null"]), rss1), [rss1]),
    ref: () => timed(`cat ${q(img)} > /dev/null`),
  },
  {
    name: "import from a pipe (cat |)",
    target: 1.3,
    volt: () =>
      timed(
        `cat ${q(headerFile)} ${q(img)} | ${
          rssWrap(volt(["import", importVol, "raw+size", "-"]), rss2)
        }`,
        [rss2],
      ),
    ref: () => timed(`cat ${q(img)} | dd of=${q(outRaw)} conv=sparse bs=64k status=none`),
    cleanup: rmImported,
  },
  {
    name: "export | import",
    target: 1.0,
    volt: () =>
      timed(
        `${rssWrap(volt(["export", `local:${volname}`, "raw+size", "-"]), rss1)} | ${
          rssWrap(volt(["import", importVol, "raw+size", "-"]), rss2)
        }`,
        [rss1, rss2],
      ),
    ref: () =>
      timed(
        `dd if=${q(img)} bs=4k status=none | dd of=${q(outRaw)} conv=sparse bs=64k status=none`,
      ),
    cleanup: rmImported,
  },
  {
    name: "volt migrate (in process)",
    target: 1.0,
    volt: () => timed(rssWrap(volt(["migrate", `local:${volname}`, importVol]), rss1), [rss1]),
    ref: () =>
      timed(
        `dd if=${q(img)} bs=4k status=none | dd of=${q(outRaw)} conv=sparse bs=64k status=none`,
      ),
    cleanup: rmImported,
  },
];

try {
  console.log(
    `image: ${
      size / MiB
    } MiB raw, half holes; ${runs} runs per side (A B B A …), medians; ${Deno.build.target}, ${navigator.hardwareConcurrency} cores`,
  );
  makeImage(img);
  // The import input: the stream's size header, then the image itself (the same hot file).
  Deno.writeFileSync(headerFile, new Uint8Array(new BigUint64Array([BigInt(size)]).buffer));
  await timed(`sync; cat ${q(img)} > /dev/null`); // written back, and in the page cache
  const rows: string[][] = [];
  let failed = 0;
  let peak = 0;
  let duVolt = 0;
  let duRef = 0;
  for (const c of cases) {
    if (values.only && !c.name.includes(values.only)) continue;
    const vt: number[] = [];
    const rt: number[] = [];
    const vc: number[] = [];
    const rc: number[] = [];
    for (let i = 0; i < runs; i++) {
      const order = i % 2 === 0 ? ["volt", "ref"] : ["ref", "volt"];
      for (const side of order) {
        await c.cleanup?.();
        const r = side === "volt" ? await c.volt() : await c.ref();
        if (side === "volt") {
          vt.push(r.s);
          vc.push(r.cpu);
          peak = Math.max(peak, r.rss);
          if (c.cleanup) duVolt = du(importPath);
        } else {
          rt.push(r.s);
          rc.push(r.cpu);
          if (c.cleanup) duRef = du(outRaw);
        }
      }
    }
    await c.cleanup?.();
    if (values.verbose) {
      const f = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(" ");
      console.log(`${c.name}: volt ${f(vt)} | reference ${f(rt)}`);
    }
    const ratio = median(rt) / median(vt);
    const ok = ratio >= c.target;
    if (!ok) failed++;
    rows.push([
      c.name,
      `${median(vt).toFixed(2)} s`,
      `${median(rt).toFixed(2)} s`,
      `${ratio.toFixed(2)}x`,
      `>= ${c.target.toFixed(1)}x`,
      ok ? "ok" : "BELOW",
      hasTime ? `${median(vc).toFixed(2)} / ${median(rc).toFixed(2)} s` : "n/a",
    ]);
  }
  const header = ["case", "volt", "reference", "ratio", "target", "", "CPU volt / reference"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((x, i) => x.padEnd(widths[i])).join("  ").trimEnd();
  console.log(line(header));
  for (const r of rows) console.log(line(r));
  console.log(
    `references: dd if=IMG bs=4k | cat; cat IMG > /dev/null; cat IMG | dd conv=sparse bs=64k; dd bs=4k | dd conv=sparse bs=64k (also for migrate)`,
  );
  console.log(
    `allocated after import: volt ${(duVolt / MiB).toFixed(1)} MiB, dd conv=sparse ${
      (duRef / MiB).toFixed(1)
    } MiB`,
  );
  console.log(
    hasTime
      ? `peak RSS of volt export/import: ${(peak / 1024).toFixed(1)} MiB (target < 150 MiB)`
      : "peak RSS: /usr/bin/time not installed",
  );
  if (hasTime && peak / 1024 >= 150) failed++;
  if (failed > 0) console.log(`${failed} target(s) missed`);
} finally {
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
}
