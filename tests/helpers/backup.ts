/**
 * Test helpers for backups: a private volt home on the built-in default configuration (a
 * `dir` storage `local` and a `backup-dir` storage `backup`), running `volt backup` /
 * `restore` / `verify` / `list`, and reading what a backup storage holds.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createImage, qemuIo } from "./nbd_server.ts";
import { sh, TempDir, volt, type VoltResult } from "./volt.ts";

/** A volt environment in a temporary directory. */
export interface BackupEnv {
  tmp: TempDir;
  /** Environment for {@link volt}. */
  env: Record<string, string>;
  /** `$VOLT_HOME`. */
  home: string;
  /** The path of the `backup` storage. */
  backupRoot: string;
}

/** A fresh environment using the built-in default configuration. */
export function backupEnv(tmp: TempDir): BackupEnv {
  const home = tmp.join("home");
  return {
    tmp,
    env: { VOLT_HOME: home, VOLT_CONFIG: tmp.join("none.cfg") },
    home,
    backupRoot: `${home}/backup`,
  };
}

/**
 * A guest in `tmp` with one qcow2 disk (`disk.qcow2`, `size` bytes, then `writes`: qemu-io
 * commands) and the configuration `guest.conf` holding `conf`; `args` are the `volt backup`
 * options naming both (`--disk scsi0=… --config …`).
 */
export async function oneDiskGuest(
  tmp: TempDir,
  size: number,
  writes: string[],
  conf: string,
): Promise<{ img: string; conf: string; args: string[] }> {
  const img = tmp.join("disk.qcow2");
  await createImage(img, size);
  if (writes.length > 0) await qemuIo(img, writes);
  const confPath = tmp.join("guest.conf");
  await Deno.writeTextFile(confPath, conf);
  return { img, conf: confPath, args: ["--disk", `scsi0=${img}`, "--config", confPath] };
}

/** Runs `volt backup VMID ARGS…`. */
export function backup(e: BackupEnv, vmid: number, args: string[]): Promise<VoltResult> {
  return volt(["backup", String(vmid), ...args], { env: e.env });
}

/** Runs `volt backup` and returns the new volume id, failing the test on error. */
export async function backupOk(e: BackupEnv, vmid: number, args: string[]): Promise<string> {
  const r = await backup(e, vmid, args);
  assert.equal(r.code, 0, `volt backup failed: ${r.stderr}`);
  const volid = r.stdout.trim();
  assert.match(volid, /^[a-z][a-z0-9_.-]*:backup\/\d+\/qemu-\d+$/);
  return volid;
}

/** Runs `volt restore` to raw volumes on `local` and returns device → path of the new volume. */
export async function restoreOk(
  e: BackupEnv,
  volid: string,
  vmid: number,
  extra: string[] = [],
): Promise<Record<string, string>> {
  const r = await volt(["restore", volid, String(vmid), "--storage", "local", ...extra], {
    env: e.env,
  });
  assert.equal(r.code, 0, `volt restore failed: ${r.stderr}`);
  const out: Record<string, string> = {};
  for (const line of r.stdout.trim().split("\n")) {
    const [dev, vol] = line.split("=");
    const p = await volt(["path", vol], { env: e.env });
    assert.equal(p.code, 0, p.stderr);
    out[dev] = p.stdout.trim();
  }
  return out;
}

/** One row of `volt list --output-format json`. */
export interface ListedVolume {
  volid: string;
  format: string;
  size: number;
  used: number;
  vmid?: number;
  content: string;
  subtype?: string;
  parent?: string;
}

/** `volt list STORAGE` as JSON. */
export async function listVolumes(e: BackupEnv, storage = "backup"): Promise<ListedVolume[]> {
  const r = await volt(["list", storage, "--output-format", "json"], { env: e.env });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as ListedVolume[];
}

/** Names in a directory (empty when it does not exist), sorted. */
export async function dirNames(path: string): Promise<string[]> {
  try {
    return (await Array.fromAsync(Deno.readDir(path))).map((e) => e.name).sort();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
}

/** The persistent bitmaps of a qcow2 image: name → flags. */
export async function imageBitmaps(image: string): Promise<Record<string, string[]>> {
  const info = JSON.parse(
    await sh("qemu-img", ["info", "-U", "-f", "qcow2", "--output=json", image]),
  );
  const list = (info["format-specific"]?.data?.bitmaps ?? []) as {
    name: string;
    flags: string[];
  }[];
  return Object.fromEntries(list.map((b) => [b.name, b.flags]));
}

/** A sparse copy of a file (a disk as it was at some point). */
export async function snapshotFile(from: string, to: string): Promise<void> {
  await sh("cp", ["--sparse=always", from, to]);
}

/** Inverts every bit of the byte at `offset` of a file (a stored backup damaged on purpose). */
export async function flipByte(path: string, offset: number): Promise<void> {
  const mode = (await Deno.stat(path)).mode ?? 0o600;
  await Deno.chmod(path, mode | 0o200); // backups may be stored read-only
  try {
    using f = await Deno.open(path, { read: true, write: true });
    const b = new Uint8Array(1);
    await f.seek(offset, Deno.SeekMode.Start);
    await f.read(b);
    b[0] ^= 0xff;
    await f.seek(offset, Deno.SeekMode.Start);
    await f.write(b);
  } finally {
    await Deno.chmod(path, mode & 0o7777);
  }
}
