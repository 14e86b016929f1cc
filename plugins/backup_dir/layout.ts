/**
 * Where the directory backup storage keeps things, and reading what is there:
 *
 * ```
 * <path>/<vmid>/qemu-<epoch>/       one finished VM backup (volume backup/<vmid>/qemu-<epoch>)
 *                  manifest.json     written last; without it the directory is not a backup
 *                  guest.conf, firewall.conf, <device>.qcow2, backup.log
 * <path>/<vmid>/lxc-<epoch>/        one finished container backup (backup/<vmid>/lxc-<epoch>)
 *                  manifest.json, guest.conf, firewall.conf, archive.tar or archive.sqfs,
 *                  backup.log
 * <path>/<vmid>/.tmp-<type>-<epoch>/ a backup being written (removed on failure)
 * <path>/<vmid>/.tmp-merge-<name>/  a backup being merged (remove_backup.ts)
 * <path>/<vmid>/.tmp-delete-<name>/ a backup being removed
 *     (every .tmp-* is a leftover once the guest's lock is free: swept by the next backup or
 *     removal of the guest)
 * <path>/<vmid>/previous-info       the VM backup the disks' dirty bitmaps are relative to
 * <path>/<vmid>/.lock               held while a backup or removal of the guest runs
 * <path>/.tmp-restore-<vmid>-<pid>-<start>-<rnd>/ a squashfs archive unpacked for a container restore
 * ```
 *
 * The byte layout of each file: `docs/formats.md`, "Backup layout".
 *
 * @module
 */

import type { VolumeName } from "../api.ts";
import { type Manifest, readManifest } from "../../lib/backup/manifest.ts";
import { assertSafeVolname, printable } from "../../lib/storage/volume_id.ts";

/** `backup/<vmid>/<type>-<epoch>`. */
const VOLNAME = /^backup\/([1-9]\d{0,8})\/(qemu|lxc)-(\d{1,12})$/;
/** Directory names of finished backups. */
export const BACKUP_DIR = /^(qemu|lxc)-(\d{1,12})$/;
/** Prefix of working directories. */
export const TEMP_PREFIX = ".tmp-";

/** A parsed backup volume name. */
export interface BackupVolname {
  vmid: number;
  type: "qemu" | "lxc";
  /** Seconds since the epoch. */
  time: number;
  /** `qemu-<epoch>` or `lxc-<epoch>`. */
  dirName: string;
}

/**
 * Parses `backup/<vmid>/<qemu|lxc>-<epoch>`. Throws `TypeError` naming the name otherwise.
 *
 * @example
 * ```ts
 * import { parseBackupVolname } from "./layout.ts";
 * const b = parseBackupVolname("backup/100/qemu-1700000000");
 * console.assert(b.vmid === 100 && b.dirName === "qemu-1700000000");
 * ```
 */
export function parseBackupVolname(volname: string): BackupVolname {
  assertSafeVolname(volname);
  const m = VOLNAME.exec(volname);
  if (!m) {
    throw new TypeError(
      `invalid volume name '${
        printable(volname)
      }': a backup storage holds backup/<vmid>/qemu-<epoch> or backup/<vmid>/lxc-<epoch>`,
    );
  }
  const type = m[2] as "qemu" | "lxc";
  return { vmid: Number(m[1]), type, time: Number(m[3]), dirName: `${type}-${m[3]}` };
}

/** The {@link VolumeName} of a backup volume name. */
export function backupVolumeName(volname: string): VolumeName {
  const b = parseBackupVolname(volname);
  return { vtype: "backup", name: b.dirName, vmid: b.vmid, format: "directory" };
}

/** `backup/<vmid>/<dirName>`. */
export function backupVolname(vmid: number, dirName: string): string {
  return `backup/${vmid}/${dirName}`;
}

/** `<root>/<vmid>`. */
export function guestDir(root: string, vmid: number): string {
  return `${root.replace(/\/+$/, "")}/${vmid}`;
}

/** A finished backup found on disk. */
export interface StoredBackup {
  vmid: number;
  /** `qemu-<epoch>` or `lxc-<epoch>`. */
  dirName: string;
  time: number;
  /** Absolute directory. */
  dir: string;
  manifest: Manifest;
}

/**
 * The finished backups of one guest (directories with a valid manifest), VM and container
 * backups alike, oldest first. Directories without one, or with an invalid one (or one whose
 * guest, type or time differs from the directory's name), are reported through `onSkip`.
 */
export async function listGuestBackups(
  root: string,
  vmid: number,
  onSkip?: (dir: string, why: string) => void,
): Promise<StoredBackup[]> {
  const base = guestDir(root, vmid);
  const out: StoredBackup[] = [];
  let entries: Deno.DirEntry[] = [];
  try {
    entries = await Array.fromAsync(Deno.readDir(base));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
  for (const e of entries) {
    const m = BACKUP_DIR.exec(e.name);
    if (!m || !e.isDirectory) continue;
    const dir = `${base}/${e.name}`;
    try {
      const manifest = await readManifest(dir);
      if (manifest.vmid !== vmid || manifest.time !== Number(m[2]) || manifest.type !== m[1]) {
        onSkip?.(dir, "its manifest names another guest, type or time");
        continue;
      }
      out.push({ vmid, dirName: e.name, time: Number(m[2]), dir, manifest });
    } catch (err) {
      onSkip?.(dir, (err as Error).message);
    }
  }
  return out.sort((a, b) => a.time - b.time);
}

/** The guests that have a directory in the storage, ascending. */
export async function listGuestIds(root: string): Promise<number[]> {
  const ids: number[] = [];
  try {
    for await (const e of Deno.readDir(root)) {
      if (e.isDirectory && /^[1-9]\d{0,8}$/.test(e.name)) ids.push(Number(e.name));
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return ids.sort((a, b) => a - b);
}

/** What `previous-info` records: the backup the guest's dirty bitmaps are relative to. */
export interface PreviousInfo {
  /** `qemu-<epoch>` of the last successful VM backup (container backups never write it). */
  backup: string;
}

/** Reads `<guest dir>/previous-info`; undefined when missing or unreadable. */
export async function readPreviousInfo(dir: string): Promise<PreviousInfo | undefined> {
  try {
    const raw = JSON.parse(await Deno.readTextFile(`${dir}/previous-info`));
    if (typeof raw?.backup === "string" && BACKUP_DIR.test(raw.backup)) {
      return { backup: raw.backup };
    }
  } catch {
    // Missing or damaged: no incremental.
  }
  return undefined;
}
