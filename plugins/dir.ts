/**
 * The directory storage (`dir`): volumes are files and directories under `path`, laid out as
 * Proxmox's directory plugin does (see `lib/storage/dir_volname.ts`). A plugin like any
 * third-party one: it only uses the API in `plugins/api.ts` and volt's `lib/`.
 *
 * @module
 */

import type {
  ListFilter,
  OptionSchema,
  SnapshotInfo,
  Storage,
  StoragePlugin,
  StorageStatus,
  VolumeCheckReport,
  VolumeInfo,
  VolumeSize,
} from "./api.ts";
import { CONTENT_TYPES } from "./api.ts";
import { VoltError } from "../lib/errors.ts";
import { withLock } from "../lib/lock.ts";
import { run } from "../lib/run.ts";
import { assertInside, joinPath } from "../lib/storage/contained_path.ts";
import {
  CONTENT_DIRS,
  dirRelativePath,
  IMAGE_FORMATS,
  imageVolname,
  parseDirVolname,
} from "../lib/storage/dir_volname.ts";
import { allocatedBytes, imageSize } from "../lib/storage/image_size.ts";
import {
  checkSnapshotVolume,
  createSnapshot,
  deleteSnapshot,
  freeSnapshotVolume,
  listSnapshots,
  rollbackSnapshot,
  type SnapshotVolume,
} from "../lib/snapshots/volume_snapshots.ts";
import type { StreamSink, StreamSource, VolumeExportOptions, VolumeImportOptions } from "./api.ts";
import { exportFormatsForPath, exportPathVolume } from "../lib/streams/export.ts";
import { importFormatsForPath, importPathVolume } from "../lib/streams/import.ts";
import { pathExists } from "../lib/fs.ts";

/** Options of a directory storage (beyond content, disable, shared, nodes). */
export const DIR_OPTIONS: Readonly<Record<string, OptionSchema>> = {
  path: {
    type: "string",
    required: true,
    fixed: true,
    description: "directory holding the volumes",
  },
  format: { type: "enum", values: ["raw", "qcow2", "vmdk"], description: "default image format" },
  preallocation: {
    type: "enum",
    values: ["off", "metadata", "falloc", "full"],
    description:
      "preallocation for new raw/qcow2 images (default metadata; raw treats it as off; snapshot overlays use it only when set)",
  },
  "prune-backups": { type: "prune", description: "retention: keep-last=N,keep-daily=N,…" },
  "max-protected-backups": {
    type: "integer",
    minimum: -1,
    description: "protected backups per guest (-1: unlimited)",
  },
  is_mountpoint: {
    type: "string",
    description: "'yes' or a path: only use the storage while it is mounted",
  },
  mkdir: {
    type: "boolean",
    description: "create the path if missing (deprecated: create-base-path)",
  },
  "create-base-path": { type: "boolean", description: "create the path if missing (default 1)" },
  "create-subdirs": {
    type: "boolean",
    description: "create the content subdirectories (default 1)",
  },
  "snapshot-as-volume-chain": {
    type: "boolean",
    alias: "external-snapshots",
    fixed: true,
    description: "qcow2 snapshots as external volume chains (fixed once the storage holds images)",
  },
};

function root(storage: Storage): string {
  return storage.options.path as string;
}

function lockFile(storage: Storage): string {
  return joinPath(root(storage), ".volt-storage.lock");
}

/** Runs `fn` under the storage's lock (a file in the storage, so every volt process shares it). */
export function withStorageLock<T>(storage: Storage, fn: () => Promise<T>): Promise<T> {
  return withLock(lockFile(storage), fn, { what: `storage '${storage.id}'` });
}

function volumePath(storage: Storage, volname: string): string {
  const p = joinPath(root(storage), dirRelativePath(parseDirVolname(volname)));
  assertInside(root(storage), p, `volume '${storage.id}:${volname}'`);
  return p;
}

function optionFlag(storage: Storage, name: string, dflt: boolean): boolean {
  const v = storage.options[name];
  return typeof v === "boolean" ? v : dflt;
}

async function checkMounted(storage: Storage): Promise<void> {
  const mp = storage.options.is_mountpoint;
  if (mp === undefined || mp === "no" || mp === "0") return;
  const point = mp === "yes" || mp === "1" ? root(storage) : String(mp);
  const { code } = await run("mountpoint", ["-q", point], { allowFailure: true });
  if (code !== 0) {
    throw new VoltError(
      `storage '${storage.id}': '${point}' is not mounted (is_mountpoint is set)`,
    );
  }
}

/** Preallocation argument for qemu-img create, Proxmox's rules. */
function preallocation(storage: Storage, format: string): string | undefined {
  const p = (storage.options.preallocation as string | undefined) ?? "metadata";
  if (format === "qcow2") return p;
  if (format === "raw") return p === "metadata" ? "off" : p;
  return undefined;
}

/**
 * A disk image as the snapshot code sees it: its directory, file, and how this storage keeps
 * snapshots (`snapshot-as-volume-chain`) and preallocates overlays.
 */
function snapshotVolume(storage: Storage, volname: string): SnapshotVolume {
  const v = parseDirVolname(volname);
  if (v.vtype !== "images") {
    throw new VoltError(`volume '${storage.id}:${volname}': only disk images have snapshots`);
  }
  const path = volumePath(storage, volname);
  return {
    volid: `${storage.id}:${volname}`,
    storeid: storage.id,
    root: root(storage),
    dir: path.slice(0, path.lastIndexOf("/")),
    volfile: v.name,
    format: v.format,
    chain: optionFlag(storage, "snapshot-as-volume-chain", false),
    // Overlays follow an explicitly set preallocation only. Proxmox's implicit default
    // (metadata) writes L2 tables for the whole virtual size, which would make a snapshot of
    // a 64 GiB disk ~6x slower than of a 1 GiB one; without it both take the same time.
    preallocation: storage.options.preallocation as string | undefined,
  };
}

/** Next free `vm-<vmid>-disk-<n>` (or `subvol-…`) name in the guest's image directory. */
async function nextDiskName(dir: string, vmid: number, format: string): Promise<string> {
  const taken = new Set<number>();
  try {
    for await (const e of Deno.readDir(dir)) {
      const m = /^(?:vm|base|subvol|basevol|snap-.+-(?:vm|base))-(\d+)-disk-(\d+)(?:\.|$)/.exec(
        e.name,
      );
      if (m && Number(m[1]) === vmid) taken.add(Number(m[2]));
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  let n = 0;
  while (taken.has(n)) n++;
  const prefix = format === "subvol" ? "subvol" : "vm";
  return `${prefix}-${vmid}-disk-${n}.${format}`;
}

/** Checks a wanted image name and adds the format's extension when missing. */
function checkedImageName(name: string, vmid: number, format: string): string {
  const withExt = /\.(raw|qcow2|vmdk|subvol)$/.test(name) ? name : `${name}.${format}`;
  if (!withExt.endsWith(`.${format}`)) {
    throw new VoltError(`name '${name}' does not match format '${format}'`);
  }
  if (!new RegExp(`^(?:vm|base|subvol)-${vmid}-[^/\\s]+$`).test(withExt)) {
    throw new VoltError(`illegal name '${name}': should be 'vm-${vmid}-*' (or 'subvol-${vmid}-*')`);
  }
  parseDirVolname(imageVolname(vmid, withExt));
  return withExt;
}

async function createImage(
  storage: Storage,
  path: string,
  format: string,
  size: number,
): Promise<void> {
  // The exclusive create reserves the name; only after it is the path ours to remove on failure.
  if (format === "subvol") {
    await Deno.mkdir(path);
    return;
  }
  const file = await Deno.open(path, { write: true, createNew: true });
  try {
    const prealloc = preallocation(storage, format);
    if (format === "raw" && (prealloc === undefined || prealloc === "off")) {
      await file.truncate(size);
      return;
    }
    const args = ["create", "-q", "-f", format];
    if (prealloc) args.push("-o", `preallocation=${prealloc}`);
    await run("qemu-img", [...args, path, String(size)]);
  } catch (err) {
    await Deno.remove(path).catch(() => {});
    throw err;
  } finally {
    file.close();
  }
}

/** The directory storage plugin. */
export const plugin: StoragePlugin = {
  type: "dir",
  api: 1,
  description: "volumes as files in a local or mounted directory",
  content: { supported: CONTENT_TYPES, default: ["images", "rootdir"] },
  formats: { supported: IMAGE_FORMATS, default: "raw" },
  options: DIR_OPTIONS,

  parseVolname: parseDirVolname,

  path(storage: Storage, volname: string): string {
    return volumePath(storage, volname);
  },

  async activateStorage(storage: Storage): Promise<void> {
    const path = root(storage);
    await checkMounted(storage);
    const createBase = optionFlag(storage, "create-base-path", optionFlag(storage, "mkdir", true));
    if (!(await pathExists(path))) {
      if (!createBase) {
        throw new VoltError(`storage '${storage.id}': directory '${path}' does not exist`);
      }
      await Deno.mkdir(path, { recursive: true });
    }
    const st = await Deno.stat(path);
    if (!st.isDirectory) {
      throw new VoltError(`storage '${storage.id}': '${path}' is not a directory`);
    }
    if (optionFlag(storage, "create-subdirs", optionFlag(storage, "mkdir", true))) {
      const content = (storage.options.content as string[] | undefined) ?? ["images", "rootdir"];
      for (const c of content) {
        const dir = joinPath(path, CONTENT_DIRS[c as keyof typeof CONTENT_DIRS]);
        assertInside(path, dir, `storage '${storage.id}'`);
        await Deno.mkdir(dir, { recursive: true });
      }
    }
  },

  async status(storage: Storage): Promise<StorageStatus> {
    const path = root(storage);
    try {
      await checkMounted(storage);
      const { stdout } = await run("df", ["-P", "-B1", path]);
      const f = stdout.trim().split("\n").at(-1)!.split(/\s+/);
      return { active: true, total: Number(f[1]), used: Number(f[2]), avail: Number(f[3]) };
    } catch {
      return { active: false, total: 0, used: 0, avail: 0 };
    }
  },

  allocImage(
    storage: Storage,
    vmid: number,
    format: string,
    name: string | undefined,
    size: number,
  ) {
    if (!Number.isInteger(vmid) || vmid <= 0) throw new VoltError(`invalid vmid '${vmid}'`);
    if (!(IMAGE_FORMATS as readonly string[]).includes(format)) {
      throw new VoltError(`unsupported format '${format}': use one of ${IMAGE_FORMATS.join(", ")}`);
    }
    if (format !== "subvol" && !(size > 0)) throw new VoltError("size must be greater than 0");
    const bytes = Math.ceil(size / 1024) * 1024; // Proxmox allocates in KiB.
    const dir = joinPath(root(storage), `images/${vmid}`);
    return withStorageLock(storage, async () => {
      const file = name === undefined
        ? await nextDiskName(dir, vmid, format)
        : checkedImageName(name, vmid, format);
      const volname = imageVolname(vmid, file);
      const path = volumePath(storage, volname);
      if (await pathExists(path)) {
        throw new VoltError(`volume '${storage.id}:${volname}' already exists`);
      }
      await Deno.mkdir(dir, { recursive: true });
      await createImage(storage, path, format, bytes);
      return volname;
    });
  },

  freeImage(storage: Storage, volname: string): Promise<void> {
    const path = volumePath(storage, volname);
    const v = parseDirVolname(volname);
    return withStorageLock(storage, async () => {
      if (!(await pathExists(path))) {
        throw new VoltError(`volume '${storage.id}:${volname}' does not exist`);
      }
      if (v.format === "qcow2") {
        // Under the volume's lock; with chains, every snapshot file goes too.
        await freeSnapshotVolume(snapshotVolume(storage, volname));
        return;
      }
      await Deno.remove(path, { recursive: v.format === "subvol" });
    });
  },

  volumeSnapshot(storage: Storage, volname: string, snap: string): Promise<void> {
    return createSnapshot(snapshotVolume(storage, volname), snap);
  },

  volumeSnapshotRollback(storage: Storage, volname: string, snap: string): Promise<void> {
    return rollbackSnapshot(snapshotVolume(storage, volname), snap);
  },

  volumeSnapshotDelete(storage: Storage, volname: string, snap: string): Promise<void> {
    return deleteSnapshot(snapshotVolume(storage, volname), snap);
  },

  volumeSnapshotList(storage: Storage, volname: string): Promise<SnapshotInfo[]> {
    return listSnapshots(snapshotVolume(storage, volname));
  },

  volumeCheck(
    storage: Storage,
    volname: string,
    options: { repair?: boolean },
  ): Promise<VolumeCheckReport> {
    return checkSnapshotVolume(snapshotVolume(storage, volname), options);
  },

  async listVolumes(storage: Storage, filter: ListFilter): Promise<VolumeInfo[]> {
    const enabled = (storage.options.content as string[] | undefined) ?? ["images", "rootdir"];
    const wanted = (filter.content ?? CONTENT_TYPES).filter((c) => enabled.includes(c));
    const out: VolumeInfo[] = [];
    const base = root(storage);
    const add = async (volname: string) => {
      let v;
      try {
        v = parseDirVolname(volname);
      } catch {
        return; // Not a volume (temporary or foreign file).
      }
      if (!wanted.includes(v.vtype)) return;
      if (filter.vmid !== undefined && v.vmid !== filter.vmid) return;
      const path = joinPath(base, dirRelativePath(v));
      const stat = await Deno.lstat(path).catch(() => undefined);
      if (!stat || stat.isSymlink) return;
      let size = 0;
      let used = allocatedBytes(stat);
      try {
        ({ size, used } = await imageSize(
          path,
          v.format,
          base,
          `volume '${storage.id}:${volname}'`,
        ));
      } catch {
        // Unsafe or unreadable image: listed with size 0; `volt path`/`info` say why.
      }
      out.push({
        volid: `${storage.id}:${volname}`,
        format: v.format,
        size,
        used,
        vmid: v.vmid,
        content: v.vtype,
        ctime: Math.floor((stat.ctime ?? stat.mtime ?? new Date(0)).getTime() / 1000),
      });
    };
    const readNames = async (dir: string): Promise<string[]> => {
      const names: string[] = [];
      try {
        for await (const e of Deno.readDir(joinPath(base, dir))) names.push(e.name);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
      return names.sort();
    };
    if (wanted.includes("images") || wanted.includes("rootdir")) {
      for (const vmid of await readNames("images")) {
        if (!/^\d+$/.test(vmid)) continue;
        for (const name of await readNames(`images/${vmid}`)) await add(`${vmid}/${name}`);
      }
    }
    const prefixes: Partial<Record<string, string>> = {
      iso: "iso",
      vztmpl: "vztmpl",
      backup: "backup",
      snippets: "snippets",
      import: "import",
    };
    for (const c of wanted) {
      const prefix = prefixes[c];
      if (!prefix) continue;
      for (const name of await readNames(CONTENT_DIRS[c])) await add(`${prefix}/${name}`);
    }
    return out;
  },

  volumeSizeInfo(storage: Storage, volname: string): Promise<VolumeSize> {
    const v = parseDirVolname(volname);
    return imageSize(
      volumePath(storage, volname),
      v.format,
      root(storage),
      `volume '${storage.id}:${volname}'`,
    );
  },

  // Streams: the generic implementations for path-based storages (lib/streams/).
  volumeExportFormats(storage: Storage, volname: string, options: VolumeExportOptions) {
    return exportFormatsForPath(plugin, storage, volname, options);
  },

  volumeExport(
    storage: Storage,
    volname: string,
    format: string,
    sink: StreamSink,
    options: VolumeExportOptions,
  ): Promise<void> {
    return exportPathVolume(plugin, storage, volname, format, sink, options);
  },

  volumeImportFormats(storage: Storage, volname: string, options: VolumeImportOptions) {
    return importFormatsForPath(plugin, storage, volname, options);
  },

  volumeImport(
    storage: Storage,
    volname: string,
    format: string,
    source: StreamSource,
    options: VolumeImportOptions,
  ): Promise<string> {
    return importPathVolume(plugin, storage, volname, format, source, options);
  },
};
