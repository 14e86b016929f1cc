/**
 * Helpers the benchmarks share: statistics, a seeded PRNG, building a source image with
 * scattered data, running programs, and a qemu-nbd on a unix socket. Not a benchmark itself
 * (`run.ts` skips files starting with `_`).
 *
 * @module
 */

export const MiB = 2 ** 20;
export const GiB = 2 ** 30;

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** The argv that runs volt with `args`, as a user would (a fresh `deno run` each time). */
export function voltArgv(...args: string[]): string[] {
  return [Deno.execPath(), "run", "-A", "--no-prompt", MAIN, ...args];
}

/** The median of a list of numbers. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Runs a program to completion and returns its stdout; throws with its stderr on failure. */
export async function exec(
  cmd: string,
  args: string[],
  env?: Record<string, string>,
): Promise<string> {
  const out = await new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" }).output();
  if (out.code !== 0) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** A small deterministic PRNG (mulberry32). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** qemu-io writes of `total` bytes in scattered runs of 64 KiB to `maxRun`, on a disk of `size`. */
export function scatteredWrites(
  rand: () => number,
  size: number,
  total: number,
  maxRun: number,
  pattern: number,
): string[] {
  const cmds: string[] = [];
  let written = 0;
  const unit = 64 * 1024;
  while (written < total) {
    const len = Math.min(total - written, unit * (1 + Math.floor(rand() * (maxRun / unit))));
    const off = unit * Math.floor(rand() * ((size - len) / unit));
    cmds.push(`write -P ${(pattern + cmds.length) % 250 + 1} ${off} ${len}`);
    written += len;
  }
  return cmds;
}

/** Applies qemu-io commands to a qcow2 image, 200 per qemu-io run. */
export async function qemuIo(image: string, cmds: string[]): Promise<void> {
  for (let i = 0; i < cmds.length; i += 200) {
    await exec("qemu-io", [
      "-f",
      "qcow2",
      ...cmds.slice(i, i + 200).flatMap((c) => ["-c", c]),
      image,
    ]);
  }
}

/** A qemu-nbd child on a unix socket (`-t`, plus `args`); returns the function that stops it by PID. */
export async function qemuNbd(args: string[], socket: string): Promise<() => Promise<void>> {
  const child = new Deno.Command("qemu-nbd", {
    args: ["-t", "-k", socket, ...args],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  for (let i = 0;; i++) {
    try {
      (await Deno.connect({ transport: "unix", path: socket })).close();
      break;
    } catch {
      if (i > 500) throw new Error(`qemu-nbd did not start on ${socket}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  return async () => {
    child.kill("SIGTERM");
    await child.status;
  };
}

/** One run timed by {@link timedRun}. */
export interface TimedRun {
  /** Wall time. */
  seconds: number;
  /** User + system CPU seconds. */
  cpu: number;
  /** Peak resident set size. */
  rssKiB: number;
  stdout: string;
}

/**
 * Runs argv under `/usr/bin/time` (its report goes to `scratch/time.txt`): wall time, CPU
 * time, peak RSS and stdout. Throws with the command's stderr when it fails.
 */
export async function timedRun(
  argv: string[],
  scratch: string,
  env?: Record<string, string>,
): Promise<TimedRun> {
  const timeFile = `${scratch}/time.txt`;
  const t0 = performance.now();
  const out = await new Deno.Command("/usr/bin/time", {
    args: ["-f", "%U %S %M", "-o", timeFile, ...argv],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const seconds = (performance.now() - t0) / 1000;
  if (out.code !== 0) {
    throw new Error(`${argv.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  const [user, sys, rss] = (await Deno.readTextFile(timeFile)).trim().split("\n").at(-1)!
    .split(" ").map(Number);
  return { seconds, cpu: user + sys, rssKiB: rss, stdout: new TextDecoder().decode(out.stdout) };
}
