/**
 * The directory backup storage (`backup-dir`): VM backups as directories of qcow2 images under
 * `path`, full or incremental (an image backed by the previous backup's), each with its guest
 * and firewall configuration and a checksummed manifest. A storage plugin with the
 * `backup-provider` feature: volt backs guests up into it through the provider API
 * (`plugins/backup_dir/provider.ts`), exactly as it would with a third-party provider.
 *
 * ```
 * backup-dir: backup
 *         path /var/lib/volt/backup
 *         vm-backup-mode incremental      # or full
 *         vm-backup-mechanism nbd         # or file-handle
 * ```
 *
 * Volume names: `backup/<vmid>/qemu-<epoch>`. Layout: `plugins/backup_dir/layout.ts`.
 *
 * @module
 */

import type {
  ListFilter,
  OptionSchema,
  Storage,
  StoragePlugin,
  StorageStatus,
  VolumeInfo,
  VolumeSize,
} from "./api.ts";
import type { BackupProvider } from "./backup_api.ts";
import type { LogFunction } from "./api.ts";
import { VoltError } from "../lib/errors.ts";
import { run } from "../lib/run.ts";
import { allocatedBytes } from "../lib/storage/image_size.ts";
import { assertInside } from "../lib/storage/contained_path.ts";
import {
  backupVolname,
  backupVolumeName,
  guestDir,
  listGuestBackups,
  listGuestIds,
  parseBackupVolname,
  type StoredBackup,
  TEMP_PREFIX,
} from "./backup_dir/layout.ts";
import { lockGuest } from "./backup_dir/guest_lock.ts";
import { DirBackupProvider } from "./backup_dir/provider.ts";

/** Options of a directory backup storage (beyond content, disable, shared, nodes). */
export const BACKUP_DIR_OPTIONS: Readonly<Record<string, OptionSchema>> = {
  path: {
    type: "string",
    required: true,
    fixed: true,
    description: "directory holding the backups",
  },
  "vm-backup-mode": {
    type: "enum",
    values: ["full", "incremental"],
    default: "incremental",
    description: "incremental: back up only what changed since the previous backup when possible",
  },
  "vm-backup-mechanism": {
    type: "enum",
    values: ["nbd", "file-handle"],
    default: "nbd",
    description: "how disks are read: an NBD export (any source) or a file handle (raw files)",
  },
  "prune-backups": { type: "prune", description: "retention: keep-last=N,keep-daily=N,…" },
  "max-protected-backups": {
    type: "integer",
    minimum: -1,
    description: "protected backups per guest (-1: unlimited)",
  },
  "create-base-path": { type: "boolean", description: "create the path if missing (default 1)" },
};

function root(storage: Storage): string {
  return String(storage.options.path).replace(/\/+$/, "") || "/";
}

function backupPath(storage: Storage, volname: string): string {
  const b = parseBackupVolname(volname);
  const p = `${guestDir(root(storage), b.vmid)}/${b.dirName}`;
  assertInside(root(storage), p, `volume '${storage.id}:${volname}'`);
  return p;
}

/** Size on disk of a backup: its files' sizes, and their allocated bytes. */
async function backupUsage(dir: string): Promise<{ size: number; used: number }> {
  let size = 0;
  let used = 0;
  for await (const e of Deno.readDir(dir)) {
    if (!e.isFile) continue;
    const st = await Deno.stat(`${dir}/${e.name}`);
    size += st.size;
    used += allocatedBytes(st);
  }
  return { size, used };
}

function volumeInfo(storage: Storage, b: StoredBackup, usage: { size: number; used: number }) {
  const info: VolumeInfo = {
    volid: `${storage.id}:${backupVolname(b.vmid, b.dirName)}`,
    format: "directory",
    size: usage.size,
    used: usage.used,
    vmid: b.vmid,
    content: "backup",
    subtype: "qemu",
    ctime: b.time,
  };
  if (b.manifest.parent) {
    info.parent = `${storage.id}:${backupVolname(b.vmid, b.manifest.parent)}`;
  }
  return info;
}

/** The directory backup storage plugin. */
export const plugin: StoragePlugin = {
  type: "backup-dir",
  api: 1,
  description: "VM backups (full and incremental qcow2 chains) in a local or mounted directory",
  content: { supported: ["backup"], default: ["backup"] },
  options: BACKUP_DIR_OPTIONS,
  features: ["backup-provider"],

  parseVolname: backupVolumeName,

  path(storage: Storage, volname: string): string {
    return backupPath(storage, volname);
  },

  async activateStorage(storage: Storage): Promise<void> {
    const path = root(storage);
    const create = storage.options["create-base-path"] !== false;
    try {
      const st = await Deno.stat(path);
      if (!st.isDirectory) {
        throw new VoltError(`storage '${storage.id}': '${path}' is not a directory`);
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      if (!create) {
        throw new VoltError(`storage '${storage.id}': directory '${path}' does not exist`);
      }
      await Deno.mkdir(path, { recursive: true, mode: 0o700 });
    }
  },

  async status(storage: Storage): Promise<StorageStatus> {
    try {
      const { stdout } = await run("df", ["-P", "-B1", root(storage)]);
      const f = stdout.trim().split("\n").at(-1)!.split(/\s+/);
      return { active: true, total: Number(f[1]), used: Number(f[2]), avail: Number(f[3]) };
    } catch {
      return { active: false, total: 0, used: 0, avail: 0 };
    }
  },

  allocImage(storage: Storage): Promise<string> {
    return Promise.reject(
      new VoltError(`storage '${storage.id}' holds backups only: create them with 'volt backup'`),
    );
  },

  async freeImage(storage: Storage, volname: string): Promise<void> {
    const b = parseBackupVolname(volname);
    const path = backupPath(storage, volname);
    const dir = guestDir(root(storage), b.vmid);
    try {
      await Deno.stat(path);
    } catch {
      throw new VoltError(`volume '${storage.id}:${volname}' does not exist`);
    }
    using _lock = await lockGuest(dir, `backups of guest ${b.vmid} on '${storage.id}'`);
    const children = (await listGuestBackups(root(storage), b.vmid))
      .filter((x) => x.manifest.parent === b.dirName);
    if (children.length > 0) {
      const names = children.map((c) => `${storage.id}:${backupVolname(c.vmid, c.dirName)}`);
      throw new VoltError(
        `backup '${storage.id}:${volname}' is the base of ${names.join(", ")}: ` +
          "remove those first",
      );
    }
    // Out of the listing at once (rename), then removed; an interruption leaves a working
    // directory the next backup of the guest sweeps away.
    const doomed = `${dir}/${TEMP_PREFIX}delete-${b.dirName}`;
    await Deno.rename(path, doomed);
    await Deno.remove(doomed, { recursive: true });
  },

  async listVolumes(storage: Storage, filter: ListFilter): Promise<VolumeInfo[]> {
    const enabled = (storage.options.content as string[] | undefined) ?? ["backup"];
    if (!enabled.includes("backup")) return [];
    if (filter.content && !filter.content.includes("backup")) return [];
    const ids = filter.vmid !== undefined ? [filter.vmid] : await listGuestIds(root(storage));
    const out: VolumeInfo[] = [];
    for (const vmid of ids) {
      for (const b of await listGuestBackups(root(storage), vmid)) {
        out.push(volumeInfo(storage, b, await backupUsage(b.dir)));
      }
    }
    return out;
  },

  async volumeSizeInfo(storage: Storage, volname: string): Promise<VolumeSize> {
    const path = backupPath(storage, volname);
    try {
      return { format: "directory", ...(await backupUsage(path)) };
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw new VoltError(`volume '${storage.id}:${volname}' does not exist`);
      }
      throw err;
    }
  },

  newBackupProvider(storage: Storage, log: LogFunction): BackupProvider {
    return new DirBackupProvider(storage, log);
  },
};
