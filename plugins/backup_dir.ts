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
 *         lxc-backup-mode tar             # or squashfs (containers)
 * ```
 *
 * Volume names: `backup/<vmid>/qemu-<epoch>` (VMs), `backup/<vmid>/lxc-<epoch>` (containers).
 * Layout: `plugins/backup_dir/layout.ts`. Notes and
 * protection (`volt notes`, `volt protect`) are side files of a backup
 * (`plugins/backup_dir/attributes.ts`), changed under the guest's lock; `max-protected-backups`
 * limits how many backups of a guest may be protected. Retention: `lib/backup/retention.ts`.
 *
 * @module
 */

import type {
  ListFilter,
  OptionSchema,
  Storage,
  StoragePlugin,
  StorageStatus,
  VolumeAttribute,
  VolumeInfo,
  VolumeSize,
} from "./api.ts";
import type { BackupProvider } from "./backup_api.ts";
import type { LogFunction } from "./api.ts";
import { VoltError } from "../lib/errors.ts";
import { run } from "../lib/run.ts";
import { allocatedBytes } from "../lib/storage/image_size.ts";
import { assertInside } from "../lib/storage/contained_path.ts";
import { MANIFEST_NAME } from "../lib/backup/manifest.ts";
import {
  backupVolname,
  backupVolumeName,
  guestDir,
  listGuestBackups,
  listGuestIds,
  parseBackupVolname,
  type StoredBackup,
} from "./backup_dir/layout.ts";
import { lockGuest } from "./backup_dir/guest_lock.ts";
import { isProtected, readNotes, writeNotes, writeProtected } from "./backup_dir/attributes.ts";
import { DirBackupProvider } from "./backup_dir/provider.ts";
import { freeBackup } from "./backup_dir/remove_backup.ts";

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
  "lxc-backup-mode": {
    type: "enum",
    values: ["tar", "squashfs"],
    default: "tar",
    description: "how container files are archived: GNU tar, or a squashfs image (no POSIX ACLs)",
  },
  "prune-backups": {
    type: "prune",
    description: "retention for 'volt prune': keep-last=N,keep-daily=N,… (unset: keep all)",
  },
  "max-protected-backups": {
    type: "integer",
    minimum: -1,
    description: "protected backups per guest and guest type (-1 or unset: unlimited)",
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

/** A backup as `volt list` shows it: sizes, guest type, parent, chain, notes, protection. */
async function volumeInfo(
  storage: Storage,
  b: StoredBackup,
  chainLength: number,
): Promise<VolumeInfo> {
  const usage = await backupUsage(b.dir);
  const info: VolumeInfo = {
    volid: `${storage.id}:${backupVolname(b.vmid, b.dirName)}`,
    format: "directory",
    size: usage.size,
    used: usage.used,
    vmid: b.vmid,
    content: "backup",
    subtype: b.manifest.type,
    ctime: b.time,
    protected: await isProtected(b.dir),
    chainLength,
  };
  if (b.manifest.parent) {
    info.parent = `${storage.id}:${backupVolname(b.vmid, b.manifest.parent)}`;
  }
  const notes = await readNotes(b.dir);
  if (notes !== "") info.notes = notes;
  return info;
}

/**
 * How many backups a restore of each of one guest's backups reads (oldest first in
 * `backups`): 1 for a full backup, 1 + its parent's for an incremental one. A parent that is
 * missing counts as one (the restore needs it and fails on it).
 */
function chainLengths(backups: readonly StoredBackup[]): Map<string, number> {
  const lengths = new Map<string, number>();
  for (const b of backups) {
    const parent = b.manifest.parent;
    lengths.set(b.dirName, parent === undefined ? 1 : 1 + (lengths.get(parent) ?? 1));
  }
  return lengths;
}

/** The directory of an existing backup, or "does not exist" naming the volume. */
async function existingBackupPath(storage: Storage, volname: string): Promise<string> {
  const path = backupPath(storage, volname);
  try {
    if ((await Deno.stat(`${path}/${MANIFEST_NAME}`)).isFile) return path;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  throw new VoltError(`volume '${storage.id}:${volname}' does not exist`);
}

/**
 * Refuses to protect one more backup of a guest (and guest type) that already has
 * `max-protected-backups` protected ones (Proxmox's rule; unset means unlimited, as for
 * Proxmox's administrators: volt has no less privileged users). Called under the guest's lock.
 */
async function checkProtectedLimit(storage: Storage, volname: string): Promise<void> {
  const max = Number(storage.options["max-protected-backups"] ?? -1);
  if (max < 0) return;
  const b = parseBackupVolname(volname);
  let count = 0;
  for (const other of await listGuestBackups(root(storage), b.vmid)) {
    if (other.dirName !== b.dirName && other.manifest.type === b.type) {
      if (await isProtected(other.dir)) count++;
    }
  }
  if (count >= max) {
    throw new VoltError(
      `the number of protected backups per guest is limited to ${max} on storage ` +
        `'${storage.id}' (guest ${b.vmid} has ${count}): unprotect one first, or raise ` +
        "max-protected-backups",
    );
  }
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
    backupPath(storage, volname); // Refuses a guest directory resolving outside the storage.
    // Merges the backup into those based on it first: plugins/backup_dir/remove_backup.ts.
    await freeBackup(storage.id, root(storage), volname);
  },

  async listVolumes(storage: Storage, filter: ListFilter): Promise<VolumeInfo[]> {
    const enabled = (storage.options.content as string[] | undefined) ?? ["backup"];
    if (!enabled.includes("backup")) return [];
    if (filter.content && !filter.content.includes("backup")) return [];
    const ids = filter.vmid !== undefined ? [filter.vmid] : await listGuestIds(root(storage));
    const out: VolumeInfo[] = [];
    for (const vmid of ids) {
      const backups = await listGuestBackups(root(storage), vmid);
      const chains = chainLengths(backups);
      for (const b of backups) out.push(await volumeInfo(storage, b, chains.get(b.dirName)!));
    }
    return out;
  },

  async getVolumeAttribute(
    storage: Storage,
    volname: string,
    attribute: VolumeAttribute,
  ): Promise<string | boolean> {
    const path = await existingBackupPath(storage, volname);
    if (attribute === "notes") return await readNotes(path);
    if (attribute === "protected") return await isProtected(path);
    throw new VoltError(`unknown volume attribute '${attribute}': use notes or protected`);
  },

  async updateVolumeAttribute(
    storage: Storage,
    volname: string,
    attribute: VolumeAttribute,
    value: string | boolean,
  ): Promise<void> {
    if (attribute === "notes" && typeof value !== "string") {
      throw new TypeError("notes must be text");
    } else if (attribute === "protected" && typeof value !== "boolean") {
      throw new TypeError("protected must be true or false");
    } else if (attribute !== "notes" && attribute !== "protected") {
      throw new VoltError(`unknown volume attribute '${attribute}': use notes or protected`);
    }
    const b = parseBackupVolname(volname);
    await existingBackupPath(storage, volname);
    using _lock = await lockGuest(
      guestDir(root(storage), b.vmid),
      `backups of guest ${b.vmid} on '${storage.id}'`,
    );
    // Again under the lock: the backup may have been removed while we waited.
    const path = await existingBackupPath(storage, volname);
    if (attribute === "notes") return await writeNotes(path, value as string);
    if (value === true && !(await isProtected(path))) {
      await checkProtectedLimit(storage, volname);
    }
    await writeProtected(path, value as boolean);
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
