/**
 * The manifest of a stored backup (`manifest.json`): what the backup holds (a VM's devices,
 * sizes and parent backup, or a container's archive) and the size and digest (`sha256-64m`)
 * of every file in it. Written LAST, after every other
 * file is complete and on disk, so a backup directory without a valid manifest is never a
 * backup. Layout and field meanings: `docs/formats.md`, "Backup layout".
 *
 * @module
 */

import { VoltError } from "../errors.ts";
import { DIGEST_ALGORITHM, fileDigest } from "./checksum.ts";

/** File name of the manifest inside a backup directory. */
export const MANIFEST_NAME = "manifest.json";
/** File name of the task log, added after the commit and not covered by the manifest. */
export const LOG_NAME = "backup.log";
/** File name of a backup's notes (`volt notes`): UTF-8 text, not covered by the manifest. */
export const NOTES_NAME = "notes";
/** An empty file whose presence marks a backup protected (`volt protect`); not in the manifest. */
export const PROTECTED_NAME = "protected";
/** Files a finished backup may hold besides the manifest and the files it lists. */
export const UNLISTED_FILES: readonly string[] = [
  MANIFEST_NAME,
  LOG_NAME,
  NOTES_NAME,
  PROTECTED_NAME,
];
/** The manifest version volt writes and reads. */
export const MANIFEST_VERSION = 1;
/** Largest manifest volt reads. */
const MAX_MANIFEST_BYTES = 1024 * 1024;

/** One file of a backup. */
export interface ManifestFile {
  /** Name inside the backup directory (no `/`). */
  name: string;
  /** Bytes. */
  size: number;
  /** `sha256-64m:<hex>`: see `lib/backup/checksum.ts` (for a file up to 64 MiB, the SHA-256 of its SHA-256). */
  digest: string;
}

/** One backed-up disk. */
export interface ManifestDevice {
  /** Image file inside the backup directory, `<device>.qcow2`. */
  file: string;
  /** Virtual size in bytes. */
  size: number;
  /** `incremental`: a qcow2 overlay whose backing file is the parent's image of the device. */
  kind: "full" | "incremental";
  /** Backing file name as recorded in the image (`../qemu-<parent>/<device>.qcow2`). */
  backing?: string;
  /** qcow2 cluster size of the image. */
  clusterSize: number;
}

/** Container archive formats (`lxc-backup-mode`). */
export type ArchiveFormat = "tar" | "squashfs";

/** The file name of a container archive of each format. */
export const ARCHIVE_FILES: Readonly<Record<ArchiveFormat, string>> = {
  tar: "archive.tar",
  squashfs: "archive.sqfs",
};

/** A container backup's archive of its file system. */
export interface ManifestArchive {
  /** `archive.tar` or `archive.sqfs` (see {@link ARCHIVE_FILES}); listed in `files`. */
  file: string;
  /** `tar`: GNU tar (restore mechanism `tar`); `squashfs`: a squashfs image (`directory`). */
  format: ArchiveFormat;
}

/** The manifest of one backup. */
export interface Manifest {
  /** Always `volt-backup`. */
  format: "volt-backup";
  /** {@link MANIFEST_VERSION}. */
  version: number;
  /** Guest type: `qemu` (a VM: `devices`) or `lxc` (a container: `archive`). */
  type: "qemu" | "lxc";
  /** Guest id. */
  vmid: number;
  /** Backup time, seconds since the epoch (the `<epoch>` of `qemu-<epoch>`). */
  time: number;
  /** Directory name of the backup that incremental devices are based on. */
  parent?: string;
  /** Backed-up disks by device name (`scsi0`); always empty for a container. */
  devices: Record<string, ManifestDevice>;
  /** Containers only (and required there): the archive of the file system. */
  archive?: ManifestArchive;
  /** Every file of the backup except the manifest and the log. */
  files: ManifestFile[];
}

const DEVICE_NAME = /^[a-z][a-z0-9_-]{0,31}$/;
const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const BACKUP_DIR_NAME = /^qemu-\d{1,12}$/;
const DIGEST = new RegExp(`^${DIGEST_ALGORITHM}:[0-9a-f]{64}$`);

/**
 * Whether `name` can be a device name in a backup (`scsi0`, `virtio1`, `efidisk0`): lower-case
 * letters, digits, `_` and `-`, starting with a letter, at most 32 characters.
 *
 * @example
 * ```ts
 * import { isDeviceName } from "./manifest.ts";
 * console.assert(isDeviceName("scsi0") && !isDeviceName("../x"));
 * ```
 */
export function isDeviceName(name: string): boolean {
  return DEVICE_NAME.test(name);
}

/**
 * Parses and checks manifest text. Throws `SyntaxError` naming `where` and the first problem:
 * not JSON, wrong format or version, a file name that could leave the directory, a device
 * whose image is not listed, a malformed checksum, a container backup with devices, a parent
 * or no listed archive, a VM backup with an archive.
 *
 * @example
 * ```ts
 * import { parseManifest } from "./manifest.ts";
 * const m = parseManifest(JSON.stringify({
 *   format: "volt-backup", version: 1, type: "qemu", vmid: 100, time: 1700000000,
 *   devices: {}, files: [],
 * }), "x");
 * console.assert(m.vmid === 100);
 * ```
 */
export function parseManifest(text: string, where: string): Manifest {
  const bad = (why: string) => new SyntaxError(`${where}: invalid manifest: ${why}`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw bad(`not JSON (${(err as Error).message})`);
  }
  if (!isObject(raw)) throw bad("not a JSON object");
  if (raw.format !== "volt-backup") throw bad(`format is not 'volt-backup'`);
  if (raw.version !== MANIFEST_VERSION) {
    throw bad(`version ${String(raw.version)} is not ${MANIFEST_VERSION}: update volt`);
  }
  if (raw.type !== "qemu" && raw.type !== "lxc") {
    throw bad(`type '${String(raw.type)}' is not 'qemu' or 'lxc'`);
  }
  const type = raw.type;
  if (!isCount(raw.vmid) || raw.vmid < 1) throw bad("vmid is not a positive integer");
  if (!isCount(raw.time)) throw bad("time is not a non-negative integer");
  if (raw.parent !== undefined) {
    if (typeof raw.parent !== "string" || !BACKUP_DIR_NAME.test(raw.parent)) {
      throw bad(`parent '${String(raw.parent)}' is not a backup name (qemu-<epoch>)`);
    }
  }
  if (!Array.isArray(raw.files)) throw bad("files is not a list");
  const files: ManifestFile[] = [];
  const names = new Set<string>();
  for (const f of raw.files) {
    if (!isObject(f)) throw bad("a file entry is not an object");
    if (typeof f.name !== "string" || !FILE_NAME.test(f.name)) {
      throw bad(`file name '${String(f.name)}' is not a plain file name`);
    }
    if (names.has(f.name)) throw bad(`file '${f.name}' is listed twice`);
    if (!isCount(f.size)) throw bad(`file '${f.name}': size is not a non-negative integer`);
    if (typeof f.digest !== "string" || !DIGEST.test(f.digest)) {
      throw bad(
        `file '${f.name}': digest is not '${DIGEST_ALGORITHM}:' and 64 lower-case hex digits`,
      );
    }
    names.add(f.name);
    files.push({ name: f.name, size: f.size, digest: f.digest });
  }
  if (!isObject(raw.devices)) throw bad("devices is not an object");
  const devices: Record<string, ManifestDevice> = {};
  for (const [dev, d] of Object.entries(raw.devices)) {
    if (!isDeviceName(dev)) throw bad(`device name '${dev}' is not valid`);
    if (!isObject(d)) throw bad(`device '${dev}' is not an object`);
    if (d.file !== `${dev}.qcow2`) throw bad(`device '${dev}': file is not '${dev}.qcow2'`);
    if (!names.has(d.file)) throw bad(`device '${dev}': its image is not in the file list`);
    if (!isCount(d.size) || d.size < 1) throw bad(`device '${dev}': size is not positive`);
    if (d.kind !== "full" && d.kind !== "incremental") {
      throw bad(`device '${dev}': kind is not 'full' or 'incremental'`);
    }
    if (!isCount(d.clusterSize)) throw bad(`device '${dev}': clusterSize is not an integer`);
    if (d.kind === "incremental") {
      if (raw.parent === undefined) {
        throw bad(`device '${dev}' is incremental but there is no parent`);
      }
      if (d.backing !== `../${raw.parent}/${d.file}`) {
        throw bad(`device '${dev}': backing is not '../${raw.parent}/${d.file}'`);
      }
    } else if (d.backing !== undefined) {
      throw bad(`device '${dev}' is full but names a backing file`);
    }
    devices[dev] = {
      file: d.file,
      size: d.size,
      kind: d.kind,
      clusterSize: d.clusterSize,
      ...(d.kind === "incremental" ? { backing: d.backing as string } : {}),
    };
  }
  let archive: ManifestArchive | undefined;
  if (type === "lxc") {
    // A container backup is one archive: no disks, no incremental chain.
    if (Object.keys(devices).length > 0) throw bad("a container backup has devices");
    if (raw.parent !== undefined) throw bad("a container backup has a parent");
    const a = raw.archive;
    if (!isObject(a)) throw bad("a container backup has no archive");
    if (a.format !== "tar" && a.format !== "squashfs") {
      throw bad(`archive format '${String(a.format)}' is not 'tar' or 'squashfs'`);
    }
    const file = ARCHIVE_FILES[a.format];
    if (a.file !== file) throw bad(`archive file is not '${file}' (format ${a.format})`);
    if (!names.has(file)) throw bad("the archive is not in the file list");
    archive = { file, format: a.format };
  } else if (raw.archive !== undefined) {
    throw bad("a VM backup has an archive");
  }
  return {
    format: "volt-backup",
    version: MANIFEST_VERSION,
    type,
    vmid: raw.vmid,
    time: raw.time,
    ...(raw.parent !== undefined ? { parent: raw.parent as string } : {}),
    devices,
    ...(archive !== undefined ? { archive } : {}),
    files,
  };
}

/**
 * Reads and checks `<dir>/manifest.json`. Throws `Deno.errors.NotFound` when there is none
 * (not a finished backup), `SyntaxError` when it is invalid.
 */
export async function readManifest(dir: string): Promise<Manifest> {
  const path = `${dir}/${MANIFEST_NAME}`;
  // lstat first: a link or FIFO is refused without being opened (opening a FIFO blocks).
  const lst = await Deno.lstat(path);
  if (!lst.isFile) throw new SyntaxError(`${path}: not a regular file`);
  using f = await Deno.open(path, { read: true });
  const st = await f.stat();
  if (!st.isFile) throw new SyntaxError(`${path}: not a regular file`);
  if (st.size > MAX_MANIFEST_BYTES) throw new SyntaxError(`${path}: larger than 1 MiB`);
  const bytes = new Uint8Array(st.size);
  let n = 0;
  while (n < bytes.length) {
    const r = await f.read(bytes.subarray(n));
    if (r === null) break;
    n += r;
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(0, n));
  } catch {
    throw new SyntaxError(`${path}: invalid manifest: not UTF-8`);
  }
  return parseManifest(text, path);
}

/** The manifest as written: stable key order, two-space indent, final newline. */
export function formatManifest(m: Manifest): string {
  const ordered = {
    format: m.format,
    version: m.version,
    type: m.type,
    vmid: m.vmid,
    time: m.time,
    ...(m.parent !== undefined ? { parent: m.parent } : {}),
    devices: Object.fromEntries(
      Object.keys(m.devices).sort().map((k) => {
        const d = m.devices[k];
        return [k, {
          file: d.file,
          size: d.size,
          kind: d.kind,
          ...(d.backing !== undefined ? { backing: d.backing } : {}),
          clusterSize: d.clusterSize,
        }];
      }),
    ),
    ...(m.archive !== undefined
      ? { archive: { file: m.archive.file, format: m.archive.format } }
      : {}),
    files: [...m.files].sort((a, b) => a.name.localeCompare(b.name)).map((f) => ({
      name: f.name,
      size: f.size,
      digest: f.digest,
    })),
  };
  return `${JSON.stringify(ordered, null, 2)}\n`;
}

/**
 * Writes `<dir>/manifest.json` durably: a temporary file, `fsync`, rename, `fsync` of the
 * directory. Checks the manifest by parsing it back first.
 */
export async function writeManifest(dir: string, m: Manifest): Promise<void> {
  const text = formatManifest(m);
  parseManifest(text, `${dir}/${MANIFEST_NAME}`);
  await writeFileDurably(`${dir}/${MANIFEST_NAME}`, new TextEncoder().encode(text));
}

/**
 * Writes a small file durably and atomically: `<path>.tmp`, `fsync`, rename over `path`,
 * `fsync` of the directory.
 */
export async function writeFileDurably(path: string, data: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp`;
  try {
    {
      using f = await Deno.open(tmp, { write: true, create: true, truncate: true });
      for (let n = 0; n < data.length;) n += await f.write(data.subarray(n));
      await f.syncData();
    }
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw new VoltError(`cannot write '${path}': ${(err as Error).message}`, { cause: err });
  }
  await syncDir(path.slice(0, path.lastIndexOf("/")) || "/");
}

/** `fsync` of a directory, so a rename or new entry in it is on disk. */
export async function syncDir(dir: string): Promise<void> {
  using d = await Deno.open(dir, { read: true });
  await d.sync();
}

/** The manifest entry of `<dir>/<name>`: its size and digest. */
export async function fileEntry(
  dir: string,
  name: string,
  options: { signal?: AbortSignal } = {},
): Promise<ManifestFile> {
  const d = await fileDigest(`${dir}/${name}`, options);
  return { name, size: d.size, digest: d.digest };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}
