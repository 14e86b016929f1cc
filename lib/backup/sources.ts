/**
 * The disks of a backup as volt (the host) offers them to a provider: what each `--disk`
 * names, and making it readable the way the provider asked.
 *
 * Sources:
 * - an NBD URI (`nbd+unix:///drive-scsi0?socket=/run/…`): QEMU's NBD server, qemu-nbd,
 *   qemu-storage-daemon. With `--bitmap NAME` its dirty bitmap is offered for an incremental;
 *   that bitmap belongs to whoever runs the server (volt cannot clear it over NBD).
 * - an offline qcow2 image (a path or a volume id): volt keeps a persistent bitmap
 *   `volt-<storeid>` in it, one per backup storage. Before the copy a pending bitmap
 *   `volt-<storeid>:pending` is added, which records every write from then on; the image is
 *   exported read-only with `qemu-nbd -B` on a private socket. Only after the backup is
 *   committed does the pending bitmap replace `volt-<storeid>` ({@link PreparedDisk.commit});
 *   after a failure it is dropped and `volt-<storeid>` is untouched.
 * - a raw file or block device: no bitmap; offered as an open file (`file-handle`) or through
 *   a read-only `qemu-nbd` (`nbd`).
 *
 * Formats are never guessed from content (a raw guest disk can look like qcow2): they come
 * from `,format=`, the file name (`.qcow2`, `.raw`, `.img`), a volume id, or a block device.
 *
 * @module
 */

import type {
  BitmapMode,
  IncrementalChoice,
  VmBackupMechanism,
  VmVolume,
} from "../../plugins/backup_api.ts";
import { UsageError, VoltError } from "../errors.ts";
import { BASE_ALLOCATION, dirtyBitmapContext } from "../nbd/extents.ts";
import { connectNbd } from "../nbd/source.ts";
import { isQcow2 } from "../qcow2/header.ts";
import { QemuNbdServer } from "../qemu/qemu_nbd.ts";
import { run } from "../run.ts";
import type { Storages } from "../storage/storages.ts";
import { closeFd, O, openFd } from "../streams/fd.ts";
import { dataExtents, type FileExtent } from "../streams/extents.ts";
import { isDeviceName } from "./manifest.ts";
import { bitmapName, listBitmaps } from "./offline_bitmap.ts";

/** Granularity of the bitmaps volt creates (and the cluster size of backup images). */
export const BITMAP_GRANULARITY = 64 * 1024;

/** One `--disk DEVICE=SOURCE[,format=raw|qcow2]`. */
export interface DiskArg {
  device: string;
  source: string;
  format?: "raw" | "qcow2";
}

/**
 * Parses `--disk scsi0=/path/disk.qcow2`, `scsi0=nbd+unix:///d?socket=/s`,
 * `scsi1=local:100/vm-100-disk-1.raw` or `scsi0=/dev/vg/lv,format=raw`.
 *
 * @example
 * ```ts
 * import { parseDiskArg } from "./sources.ts";
 * const d = parseDiskArg("scsi0=/srv/disk.img,format=raw");
 * console.assert(d.device === "scsi0" && d.source === "/srv/disk.img" && d.format === "raw");
 * ```
 */
export function parseDiskArg(text: string): DiskArg {
  const eq = text.indexOf("=");
  if (eq <= 0) {
    throw new UsageError(`--disk '${text}': expected DEVICE=SOURCE, e.g. scsi0=disk.qcow2`);
  }
  const device = text.slice(0, eq);
  let source = text.slice(eq + 1);
  if (!isDeviceName(device)) {
    throw new UsageError(
      `--disk '${text}': '${device}' is not a device name like scsi0 or virtio1`,
    );
  }
  let format: DiskArg["format"];
  const m = /,format=([^,]*)$/.exec(source);
  if (m) {
    if (m[1] !== "raw" && m[1] !== "qcow2") {
      throw new UsageError(`--disk '${text}': format must be raw or qcow2, not '${m[1]}'`);
    }
    format = m[1];
    source = source.slice(0, m.index);
  }
  if (source === "") throw new UsageError(`--disk '${text}': the source is empty`);
  return { device, source, ...(format ? { format } : {}) };
}

/** A disk source, resolved. */
export type DiskSource =
  | {
    kind: "nbd";
    device: string;
    uri: string;
    socket: string;
    exportName: string;
    size: number;
    /** The dirty bitmap given with `--bitmap`, if the export offers it. */
    bitmap?: string;
  }
  | {
    kind: "image";
    device: string;
    path: string;
    format: "qcow2" | "raw";
    size: number;
    blockDevice: boolean;
    /** How the user named it (path or volume id), for messages. */
    what: string;
  };

const NBD_URI = /^nbds?(\+(unix|tcp|vsock))?:\/\//;

/** Options of {@link resolveDiskSource}. */
export interface ResolveOptions {
  /** To resolve volume ids. */
  storages?: Storages;
  /** `--bitmap`: the dirty bitmap of NBD sources. */
  bitmap?: string;
  /** Warnings (a bitmap the export does not offer). */
  warn?: (message: string) => void;
}

/** Finds out what a `--disk` names: its kind, format and size. Throws one clear line. */
export async function resolveDiskSource(arg: DiskArg, o: ResolveOptions = {}): Promise<DiskSource> {
  const { device, source } = arg;
  if (NBD_URI.test(source)) {
    if (arg.format === "qcow2") {
      throw new UsageError(`--disk ${device}: an NBD export is read as raw; drop ',format=qcow2'`);
    }
    return resolveNbd(device, source, o);
  }
  let path = source;
  let format = arg.format;
  let what = `'${source}'`;
  if (!source.startsWith("/") && !source.startsWith(".") && source.includes(":")) {
    if (!o.storages) throw new UsageError(`--disk ${device}: volume ids need the storages`);
    const v = await o.storages.volume(source);
    if (v.name.vtype !== "images") {
      throw new VoltError(`--disk ${device}: '${source}' is not a disk image`);
    }
    if (v.name.format !== "raw" && v.name.format !== "qcow2") {
      throw new VoltError(
        `--disk ${device}: '${source}' is ${v.name.format}; volt backs up raw and qcow2`,
      );
    }
    path = v.plugin.path(v.storage, v.volname);
    format ??= v.name.format;
    what = `volume '${source}'`;
  }
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch (err) {
    throw new VoltError(
      `--disk ${device}: ${what} ${
        err instanceof Deno.errors.NotFound
          ? "does not exist"
          : `cannot be read: ${(err as Error).message}`
      }`,
    );
  }
  const blockDevice = st.isBlockDevice === true;
  if (!st.isFile && !blockDevice) {
    throw new VoltError(`--disk ${device}: ${what} is neither a file nor a block device`);
  }
  if (blockDevice) format ??= "raw";
  if (!format) {
    if (/\.qcow2$/i.test(path)) format = "qcow2";
    else if (/\.(raw|img)$/i.test(path)) format = "raw";
    else {
      throw new UsageError(
        `--disk ${device}: cannot tell whether ${what} is raw or qcow2 from its name; ` +
          "add ',format=raw' or ',format=qcow2' (volt never guesses: a raw disk can look like qcow2)",
      );
    }
  }
  if (format === "qcow2" && !(await isQcow2(path))) {
    throw new VoltError(`--disk ${device}: ${what} is not a qcow2 image`);
  }
  const size = format === "qcow2" ? await qcow2Size(path, what) : await rawSize(path, blockDevice);
  if (size <= 0) throw new VoltError(`--disk ${device}: ${what} is empty`);
  return { kind: "image", device, path, format, size, blockDevice, what };
}

function resolveNbd(device: string, uri: string, o: ResolveOptions): DiskSource {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw new UsageError(`--disk ${device}: '${uri}' is not a valid NBD URI`);
  }
  const socket = url.searchParams.get("socket") ?? "";
  const exportName = decodeURIComponent(url.pathname.replace(/^\//, ""));
  const contexts = [BASE_ALLOCATION];
  if (o.bitmap !== undefined) contexts.push(dirtyBitmapContext(o.bitmap));
  let size: number;
  let hasBitmap = false;
  try {
    using h = connectNbd({ uri }, { metaContexts: contexts, name: `volt-${device}-probe` });
    size = h.size();
    hasBitmap = o.bitmap !== undefined && h.canMetaContext(dirtyBitmapContext(o.bitmap));
  } catch (err) {
    throw new VoltError(`--disk ${device}: ${(err as Error).message}`, { cause: err });
  }
  if (o.bitmap !== undefined && !hasBitmap) {
    o.warn?.(
      `${device}: the export does not offer dirty bitmap '${o.bitmap}': a full backup is made`,
    );
  }
  return {
    kind: "nbd",
    device,
    uri,
    socket,
    exportName,
    size,
    ...(hasBitmap ? { bitmap: o.bitmap } : {}),
  };
}

async function qcow2Size(path: string, what: string): Promise<number> {
  const { stdout } = await run("qemu-img", ["info", "-U", "-f", "qcow2", "--output=json", path])
    .catch((err) => {
      throw new VoltError(`${what}: ${(err as Error).message}`);
    });
  return (JSON.parse(stdout) as { "virtual-size": number })["virtual-size"];
}

async function rawSize(path: string, blockDevice: boolean): Promise<number> {
  if (!blockDevice) return (await Deno.stat(path)).size;
  using f = await Deno.open(path, { read: true });
  return await f.seek(0, Deno.SeekMode.End);
}

/** A disk made readable for the provider. */
export interface PreparedDisk {
  /** What the provider gets. */
  volume: VmVolume;
  /** Stops the private NBD server, closes the file. Always called; idempotent. */
  release(): Promise<void>;
  /** The backup was committed: mark the changes consumed (offline qcow2: promote the bitmap). */
  commit(): Promise<void>;
  /** The backup failed: drop what preparing added; the bitmap stays as it was. */
  abandon(): Promise<void>;
}

/** Options of {@link prepareDisk}. */
export interface PrepareOptions {
  mechanism: VmBackupMechanism;
  /** The provider's answer for this device. */
  choice: IncrementalChoice;
  /** The backup storage id: names the offline bitmap. */
  storeid: string;
  /** A private directory for sockets. */
  workDir: string;
  /** Where the backup storage is, for messages. */
  log?: (level: "info" | "warn", message: string) => void;
}

/** Makes one disk readable as the provider asked. */
export async function prepareDisk(src: DiskSource, o: PrepareOptions): Promise<PreparedDisk> {
  if (o.mechanism === "file-handle") {
    if (src.kind !== "image" || src.format !== "raw") {
      throw new VoltError(
        `disk ${src.device}: the backup storage reads disks as file handles ` +
          "(vm-backup-mechanism file-handle), which volt offers only for raw files and block " +
          `devices, and this disk is ${src.kind === "nbd" ? "an NBD export" : "a qcow2 image"}: ` +
          "set vm-backup-mechanism nbd",
      );
    }
    return fileHandleDisk(src);
  }
  if (src.kind === "nbd") {
    const mode: BitmapMode = src.bitmap === undefined
      ? "none"
      : o.choice === "use"
      ? "reuse"
      : "new";
    return {
      volume: {
        device: src.device,
        size: src.size,
        bitmapMode: mode,
        nbd: {
          uri: src.uri,
          socket: src.socket,
          exportName: src.exportName,
          ...(mode === "reuse" ? { bitmapName: src.bitmap } : {}),
        },
      },
      release: () => Promise.resolve(),
      commit() {
        if (src.bitmap !== undefined) {
          o.log?.(
            "info",
            `${src.device}: backup committed: dirty bitmap '${src.bitmap}' of the NBD export can ` +
              "now be reset by its owner (volt cannot change it over NBD)",
          );
        }
        return Promise.resolve();
      },
      abandon: () => Promise.resolve(),
    };
  }
  if (src.format === "raw") return await exportImage(src, o.workDir, "none", undefined);
  return await offlineQcow2Disk(src, o);
}

/** The pending bitmap of a backup storage: `:` cannot occur in a storage id. */
export function pendingBitmapName(storeid: string): string {
  return `${bitmapName(storeid)}:pending`;
}

async function offlineQcow2Disk(
  src: Extract<DiskSource, { kind: "image" }>,
  o: PrepareOptions,
): Promise<PreparedDisk> {
  const name = bitmapName(o.storeid);
  const pending = pendingBitmapName(o.storeid);
  const bitmaps = await listBitmaps(src.path);
  const main = bitmaps.find((b) => b.name === name);
  const usable = main !== undefined && !main.flags.includes("in-use");
  if (main && !usable) {
    o.log?.(
      "warn",
      `${src.device}: bitmap '${name}' is inconsistent (in use): a full backup is made`,
    );
  }
  const mode: BitmapMode = o.choice === "use" && usable ? "reuse" : "new";
  const bitmapOp = (args: string[]) =>
    run("qemu-img", ["bitmap", "-f", "qcow2", ...args]).catch((err) => {
      throw new VoltError(
        `${src.what}: cannot change its dirty bitmaps (${(err as Error).message}); ` +
          "is a VM using it? Back up a running VM through its NBD export",
      );
    });
  if (bitmaps.some((b) => b.name === pending)) await bitmapOp(["--remove", src.path, pending]);
  // From here on, every write to the image is recorded for the next backup.
  await bitmapOp(["--add", "-g", String(BITMAP_GRANULARITY), src.path, pending]);
  let prepared: PreparedDisk;
  try {
    prepared = await exportImage(src, o.workDir, mode, mode === "reuse" ? name : undefined);
  } catch (err) {
    await bitmapOp(["--remove", src.path, pending]).catch(() => {});
    throw err;
  }
  let settled = false;
  return {
    ...prepared,
    async commit() {
      if (settled) return;
      settled = true;
      // volt-<id> := pending, then drop pending. A crash in between leaves no volt-<id>: the
      // next backup is full, never wrong.
      if ((await listBitmaps(src.path)).some((b) => b.name === name)) {
        await bitmapOp(["--remove", src.path, name]);
      }
      await bitmapOp([
        "--add",
        "-g",
        String(BITMAP_GRANULARITY),
        "--merge",
        pending,
        src.path,
        name,
      ]);
      await bitmapOp(["--remove", src.path, pending]);
    },
    async abandon() {
      if (settled) return;
      settled = true;
      await bitmapOp(["--remove", src.path, pending]);
    },
  };
}

/** Serves an image read-only with qemu-nbd on a private socket. */
async function exportImage(
  src: Extract<DiskSource, { kind: "image" }>,
  workDir: string,
  mode: BitmapMode,
  bitmap: string | undefined,
): Promise<PreparedDisk> {
  const server = await QemuNbdServer.start({
    image: src.path,
    format: src.format,
    socket: `${workDir}/${src.device}.sock`,
    exportName: src.device,
    readOnly: true,
    bitmaps: bitmap !== undefined ? [bitmap] : [],
  });
  return {
    volume: {
      device: src.device,
      size: src.size,
      bitmapMode: mode,
      nbd: {
        uri: server.uri,
        socket: server.socket,
        exportName: server.exportName,
        ...(bitmap !== undefined ? { bitmapName: bitmap } : {}),
      },
    },
    release: () => server.stop(),
    commit: () => Promise.resolve(),
    abandon: () => Promise.resolve(),
  };
}

/** A raw file or block device as an open file and its data regions (no bitmap: everything). */
async function fileHandleDisk(src: Extract<DiskSource, { kind: "image" }>): Promise<PreparedDisk> {
  const file = await Deno.open(src.path, { read: true });
  let fd = -1;
  let extents: Generator<FileExtent> | undefined;
  try {
    fd = openFd(src.path, O.RDONLY);
    extents = dataExtents(fd, 0, src.size);
  } catch {
    // No SEEK_DATA: the whole device is one region.
  }
  let whole = extents === undefined;
  let released = false;
  return {
    volume: {
      device: src.device,
      size: src.size,
      bitmapMode: "none",
      fileHandle: {
        file,
        path: src.path,
        nextDirtyRegion() {
          if (whole) {
            whole = false;
            return Promise.resolve({ offset: 0, length: src.size });
          }
          if (!extents) return Promise.resolve(null);
          for (;;) {
            const r = extents.next();
            if (r.done) return Promise.resolve(null);
            if (r.value.data) {
              return Promise.resolve({ offset: r.value.offset, length: r.value.length });
            }
          }
        },
      },
    },
    release() {
      if (released) return Promise.resolve();
      released = true;
      file.close();
      if (fd >= 0) closeFd(fd);
      return Promise.resolve();
    },
    commit: () => Promise.resolve(),
    abandon: () => Promise.resolve(),
  };
}
