/**
 * Test helpers for snapshots: a temporary volt setup with one directory storage (volume chains
 * on or off), data patterns written with real `qemu-io`, and reference raw images to compare
 * against with real `qemu-img compare`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { sh, TempDir, volt, type VoltResult } from "./volt.ts";

/** One write: `qemu-io -c "write -P <pattern> <offset> <length>"`. */
export interface Write {
  pattern: number;
  offset: number;
  length: number;
}

const MiB = 1024 * 1024;

/** P0, P1, P2 of the acceptance test: overlapping writes, one near the end of 256 MiB. */
export const PATTERNS: Write[][] = [
  [{ pattern: 0x11, offset: 0, length: 8 * MiB }, {
    pattern: 0x12,
    offset: 100 * MiB,
    length: 4 * MiB,
  }],
  [{ pattern: 0x22, offset: 4 * MiB, length: 8 * MiB }, {
    pattern: 0x23,
    offset: 200 * MiB,
    length: MiB,
  }],
  [{ pattern: 0x33, offset: 6 * MiB, length: MiB }, {
    pattern: 0x34,
    offset: 10 * MiB,
    length: 10 * MiB,
  }, { pattern: 0x35, offset: 255 * MiB, length: MiB }],
];

/** A volt environment in a temp dir: `storage.cfg` with one dir storage `st`. */
export class SnapshotEnv implements AsyncDisposable {
  readonly tmp: TempDir;
  readonly env: Record<string, string>;
  readonly root: string;

  constructor(options: { chain?: boolean; preallocation?: string } = {}) {
    this.tmp = new TempDir("volt-snap-test-");
    this.root = this.tmp.join("st");
    const lines = ["dir: st", `\tpath ${this.root}`, "\tcontent images"];
    if (options.chain ?? true) lines.push("\tsnapshot-as-volume-chain 1");
    if (options.preallocation) lines.push(`\tpreallocation ${options.preallocation}`);
    Deno.writeTextFileSync(this.tmp.join("storage.cfg"), lines.join("\n") + "\n");
    this.env = {
      VOLT_CONFIG: this.tmp.join("storage.cfg"),
      VOLT_HOME: this.tmp.join("home"),
      VOLT_PLUGINS: this.tmp.join("no-plugins"),
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    };
  }

  /** Runs volt with this environment (plus `env`). */
  volt(args: string[], env: Record<string, string> = {}): Promise<VoltResult> {
    return volt(args, { env: { ...this.env, ...env } });
  }

  /** Runs volt and fails the test unless it exits 0. */
  async ok(args: string[], env: Record<string, string> = {}): Promise<VoltResult> {
    const r = await this.volt(args, env);
    assert.equal(r.code, 0, `volt ${args.join(" ")} failed: ${r.stderr}`);
    return r;
  }

  /** Runs volt, expects exit 1 and one error line matching `re`. */
  async fails(args: string[], re: RegExp, env: Record<string, string> = {}): Promise<string> {
    const r = await this.volt(args, env);
    assert.equal(r.code, 1, `volt ${args.join(" ")} should fail: ${r.stdout}${r.stderr}`);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, `one error line expected: ${r.stderr}`);
    assert.match(lines[0], re);
    return lines[0];
  }

  /** The image directory of guest `vmid`. */
  dir(vmid = 100): string {
    return `${this.root}/images/${vmid}`;
  }

  /** A file in the image directory. */
  file(name: string, vmid = 100): string {
    return `${this.dir(vmid)}/${name}`;
  }

  /** Names in the image directory, sorted. */
  listDir(vmid = 100): string[] {
    return [...Deno.readDirSync(this.dir(vmid))].map((e) => e.name).sort();
  }

  /** A reference raw image of `size` bytes with `writes` applied. */
  async reference(name: string, size: number, writes: Write[]): Promise<string> {
    const path = this.tmp.join(`ref-${name}.raw`);
    await sh("qemu-img", ["create", "-q", "-f", "raw", path, String(size)]);
    await applyWrites(path, "raw", writes);
    return path;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.tmp[Symbol.asyncDispose]();
  }
}

/** Applies writes with real qemu-io. */
export async function applyWrites(path: string, format: string, writes: Write[]): Promise<void> {
  if (writes.length === 0) return;
  const args = ["-f", format];
  for (const w of writes) args.push("-c", `write -P ${w.pattern} ${w.offset} ${w.length}`);
  await sh("qemu-io", [...args, path]);
}

/** Fails unless the qcow2 `path` (with its backing chain) reads exactly like `reference`. */
export async function assertSameContent(path: string, reference: string): Promise<void> {
  const out = await new Deno.Command("qemu-img", {
    args: ["compare", "-f", "qcow2", "-F", "raw", path, reference],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  assert.equal(
    out.code,
    0,
    `${path} differs from ${reference}: ${dec.decode(out.stdout)}${dec.decode(out.stderr)}`,
  );
}

/** Fails unless `qemu-io -r` reads `pattern` at the region (the way of reading back). */
export async function assertPattern(path: string, w: Write): Promise<void> {
  const out = await sh("qemu-io", [
    "-r",
    "-f",
    "qcow2",
    "-c",
    `read -P ${w.pattern} ${w.offset} ${w.length}`,
    path,
  ]);
  assert.doesNotMatch(out, /Pattern verification failed/, `${path}: ${out}`);
}

/** Fails unless `qemu-img check` finds nothing wrong with the file (no errors, no leaks). */
export async function assertImageClean(path: string): Promise<void> {
  const out = await new Deno.Command("qemu-img", {
    args: ["check", "-f", "qcow2", path],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  assert.equal(out.code, 0, `qemu-img check ${path}: ${dec.decode(out.stdout)}`);
}

/** `qemu-img check` on every qcow2 file in a directory. */
export async function assertAllImagesClean(dir: string): Promise<void> {
  for (const e of [...Deno.readDirSync(dir)].sort((a, b) => a.name.localeCompare(b.name))) {
    if (e.isFile && e.name.endsWith(".qcow2")) await assertImageClean(`${dir}/${e.name}`);
  }
}

/** The `volt snapshots --output-format json` names, in order. */
export async function snapshotNames(env: SnapshotEnv, volid: string): Promise<string[]> {
  const r = await env.ok(["snapshots", volid, "--output-format", "json"]);
  return (JSON.parse(r.stdout) as { name: string }[]).map((s) => s.name);
}

/**
 * Allocates a 256 MiB qcow2 volume, writes P0, snapshot s1, P1, snapshot s2, P2. Returns the
 * volume id and the references for P0, P0+P1 and P0+P1+P2.
 */
export async function twoSnapshotChain(
  env: SnapshotEnv,
): Promise<{ volid: string; path: string; refs: string[] }> {
  const size = 256 * MiB;
  const r = await env.ok(["alloc", "st", "100", "vm-100-disk-0.qcow2", "256M"]);
  const volid = /'(.+)'/.exec(r.stdout)![1];
  const path = env.file("vm-100-disk-0.qcow2");
  const refs = [
    await env.reference("p0", size, PATTERNS[0]),
    await env.reference("p01", size, [...PATTERNS[0], ...PATTERNS[1]]),
    await env.reference("p012", size, PATTERNS.flat()),
  ];
  await applyWrites(path, "qcow2", PATTERNS[0]);
  await env.ok(["snapshot", volid, "s1"]);
  await applyWrites(path, "qcow2", PATTERNS[1]);
  await env.ok(["snapshot", volid, "s2"]);
  await applyWrites(path, "qcow2", PATTERNS[2]);
  return { volid, path, refs };
}
