/**
 * The generic import of a path-based storage: {@link importPathVolume} and
 * {@link importFormatsForPath} serve as `volumeImport` and `volumeImportFormats` for any plugin
 * whose volumes are local files or directories.
 *
 * Never leaves a half-written volume: disk images and subvolumes are allocated through the
 * plugin (under its storage lock, so two imports of one name cannot both succeed) and freed on
 * any failure or interruption, or, when the importer was killed outright, by the next import
 * into the same directory (`import_marker.ts`); other volume types (iso, vztmpl, snippets, import, backup) are
 * written into an unnamed file (`O_TMPFILE`) that is linked into place only when complete,
 * so even a killed importer leaves nothing behind.
 *
 * Checks beyond Proxmox's: a raw payload shorter or longer than its size header allows is an
 * error; an imported qcow2/vmdk must be a self-contained, undamaged image of the announced
 * size; the metadata header is bounded to 64 KiB.
 *
 * @module
 */

import type {
  ContentType,
  Storage,
  StoragePlugin,
  StreamSource,
  VolumeImportOptions,
  VolumeName,
} from "../../plugins/api.ts";
import { strerror } from "../../ffi/libc.ts";
import { VoltError } from "../errors.ts";
import { readQcow2Header } from "../qcow2/header.ts";
import { run } from "../run.ts";
import { InterruptedError } from "../signals.ts";
import { knownFormat } from "./export.ts";
import { clearFile, closeFd, O, openFd } from "./fd.ts";
import { dataFormatOf, importFormatsFor } from "./formats.ts";
import { AT, check, cString, E, OsCallError, sys } from "../../ffi/libc_fd.ts";
import { decodeMetaJson, decodeMetaLength } from "./meta_header.ts";
import { decodeSizeHeader, SIZE_HEADER_LENGTH } from "./size_header.ts";
import { writeSparse } from "./sparse_writer.ts";
import { tarExtract } from "./tar.ts";
import { vmdkParent } from "../storage/vmdk_parent.ts";
import { dirname } from "node:path";
import { pathExists } from "../fs.ts";
import { markImport, sweepKilledImports } from "./import_marker.ts";

/** The plugin members the generic import uses. */
export type PathImportPlugin = Pick<
  StoragePlugin,
  "parseVolname" | "path" | "allocImage" | "freeImage" | "volumeSizeInfo" | "content"
>;

/** Does the storage keep qcow2 snapshots as volume chains? */
function isChainStorage(storage: Storage): boolean {
  return storage.options["snapshot-as-volume-chain"] === true;
}

/**
 * Formats {@link importPathVolume} accepts for a new volume (seed 000's order). A storage with
 * `snapshot-as-volume-chain` accepts no qcow2 with snapshots: it could not keep them.
 */
export function importFormatsForPath(
  plugin: Pick<StoragePlugin, "parseVolname">,
  storage: Storage,
  volname: string,
  options: VolumeImportOptions = {},
): Promise<string[]> {
  const v = plugin.parseVolname(volname);
  const ws = options.withSnapshots === true;
  if (ws && v.format === "qcow2" && isChainStorage(storage)) return Promise.resolve([]);
  return Promise.resolve(importFormatsFor(v.vtype, v.format, ws));
}

/** Reads the 8-byte size header. */
export async function readSizeHeader(source: StreamSource): Promise<number> {
  return decodeSizeHeader(await source.readExact(SIZE_HEADER_LENGTH));
}

/** Reads a metadata header (length, then at most 64 KiB of JSON). */
export async function readMetaHeader(
  source: StreamSource,
): Promise<{ vtype: string; format: string }> {
  const length = decodeMetaLength(await source.readExact(SIZE_HEADER_LENGTH));
  return decodeMetaJson(await source.readExact(length), length);
}

/**
 * The payload lengths a raw header of `size` allows: exactly `size`, or, when `size` is a
 * multiple of 512, anything it is the 512-rounded size of (a 1000-byte file has header 1024).
 */
export function rawPayloadRange(size: number): { min: number; max: number } {
  return { min: size % 512 === 0 && size > 0 ? size - 511 : size, max: size };
}

/**
 * Imports a stream of `format` from `source` into the new volume `volname` and returns the
 * volume name used. See the module documentation for the guarantees.
 */
export async function importPathVolume(
  plugin: PathImportPlugin,
  storage: Storage,
  volname: string,
  format: string,
  source: StreamSource,
  options: VolumeImportOptions = {},
): Promise<string> {
  try {
    return await importChecked(plugin, storage, volname, format, source, options);
  } catch (err) {
    const signal = options.signal;
    if (signal?.aborted) {
      throw new InterruptedError(`import of '${storage.id}:${volname}'`, String(signal.reason));
    }
    throw err;
  }
}

async function importChecked(
  plugin: PathImportPlugin,
  storage: Storage,
  volname: string,
  format: string,
  source: StreamSource,
  options: VolumeImportOptions,
): Promise<string> {
  const v = plugin.parseVolname(volname);
  const volid = `${storage.id}:${volname}`;
  const f = knownFormat(format);
  const ws = options.withSnapshots === true;
  const signal = options.signal;
  const log = options.log ?? ((_level, message) => console.error(message));

  let data: string;
  if (f.kind === "meta") {
    if (f.vtype !== v.vtype) {
      throw new VoltError(
        `volume type does not match import format: '${volid}' is of type ${v.vtype}, the stream is ${format}`,
      );
    }
    const meta = await readMetaHeader(source);
    if (meta.vtype !== v.vtype) {
      throw new VoltError(
        `volume type does not match metadata header: '${volid}' is of type ${v.vtype}, the stream carries ${meta.vtype}`,
      );
    }
    data = meta.format;
  } else if (f.kind === "size") {
    data = f.data;
  } else {
    throw new VoltError(`volume import format '${format}' not available for '${volid}'`);
  }
  const described = f.kind === "meta" ? `${format} (data format ${data})` : format;
  const isDisk = v.vtype === "images" || v.vtype === "rootdir";
  if (isDisk) {
    if (!ws && (data === "qcow2" || data === "vmdk")) {
      throw new VoltError(
        `format ${described} cannot be imported without snapshots (use --with-snapshots)`,
      );
    }
    if (ws && (data === "raw" || data === "tar")) {
      throw new VoltError(`format ${described} cannot be imported with snapshots`);
    }
  } else if (ws) {
    throw new VoltError(`format ${described} cannot be imported with snapshots`);
  }
  const fileFormat = dataFormatOf(v.format);
  // Files that are not disks travel byte for byte: raw+size fits any of them.
  const fits = data === fileFormat || (!isDisk && f.kind === "size" && data === "raw");
  if (!fits) {
    throw new VoltError(`cannot import format ${described} into a file of format ${v.format}`);
  }
  if (!["raw", "qcow2", "vmdk", "tar", "ova", "ovf"].includes(data)) {
    throw new VoltError(`volume import format '${format}': unknown data format '${data}'`);
  }
  const content = (storage.options.content as ContentType[] | undefined) ??
    plugin.content.default;
  if (!content.includes(v.vtype)) {
    throw new VoltError(
      `storage '${storage.id}' does not hold content type ${v.vtype} (content: ${
        content.join(",")
      })`,
    );
  }
  if (ws && data === "qcow2" && isChainStorage(storage)) {
    throw new VoltError(
      `cannot import '${volid}' with snapshots: storage '${storage.id}' keeps snapshots as volume chains (snapshot-as-volume-chain), which a qcow2 stream's internal snapshots cannot become; import into a .raw volume without --with-snapshots`,
    );
  }

  const path = plugin.path(storage, volname);
  if (isDisk) {
    // A volume an importer killed outright (kill -9) left here is freed first.
    await sweepKilledImports(
      dirname(path),
      (name) => plugin.freeImage(storage, name),
      (message) => log("warn", `storage '${storage.id}': ${message}`),
    );
  }
  let rename = false;
  if (await pathExists(path)) {
    if (!(options.allowRename && isDisk)) throw new VoltError(`file '${path}' already exists`);
    log("warn", `file '${path}' already exists - importing with a different name`);
    rename = true;
  }

  const size = await readSizeHeader(source);
  const raw = data === "raw" || !isDisk;
  const limits = raw ? rawPayloadRange(size) : undefined;
  if (!isDisk) {
    await importFile(path, source, limits!, signal);
    return volname;
  }
  return await importDisk(plugin, storage, v, rename, data, size, source, limits, signal);
}

/** A failed write names the file and says why ("No space left on device"). */
function writeError(err: unknown, path: string): unknown {
  if (!(err instanceof OsCallError) || err.op !== "write") return err;
  return new VoltError(`cannot write '${path}': ${strerror(err.errno)}`);
}

/** A payload of the wrong length. */
function checkLength(got: number, limits: { min: number; max: number }): void {
  if (got < limits.min) {
    throw new SyntaxError(
      `stream truncated: ${got} bytes of data where its size header announced ${limits.max}`,
    );
  }
}

async function importDisk(
  plugin: PathImportPlugin,
  storage: Storage,
  v: VolumeName,
  rename: boolean,
  data: string,
  size: number,
  source: StreamSource,
  limits: { min: number; max: number } | undefined,
  signal: AbortSignal | undefined,
): Promise<string> {
  const allocSize = v.format === "subvol" ? 0 : Math.max(size, 512);
  const volname = await plugin.allocImage(
    storage,
    v.vmid!,
    v.format,
    rename ? undefined : v.name,
    allocSize,
  );
  const volid = `${storage.id}:${volname}`;
  const path = plugin.path(storage, volname);
  let unmark: (() => Promise<void>) | undefined;
  try {
    unmark = await markImport(path, volname);
    if (signal?.aborted) throw new InterruptedError(`import of '${volid}'`, String(signal.reason));
    if (data === "tar") {
      await tarExtract(path, source, signal);
    } else {
      const fd = openFd(path, O.RDWR);
      try {
        // A new raw image reads as zeros; a new qcow2/vmdk has metadata to drop.
        if (data !== "raw") clearFile(fd);
        const got = await writeSparse(fd, source.chunks(), { maxBytes: limits?.max, signal })
          .catch((err) => {
            throw writeError(err, path);
          });
        if (limits) checkLength(got, limits);
      } finally {
        closeFd(fd);
      }
      if (data === "qcow2" || data === "vmdk") {
        await verifyImage(plugin, storage, volname, path, data, size);
      }
    }
    await unmark();
    return volname;
  } catch (err) {
    // The mark goes first: killed before the free, this leaves a volume, never a mark that
    // could outlive it (see import_marker.ts).
    await unmark?.();
    try {
      await plugin.freeImage(storage, volname);
    } catch (freeErr) {
      throw new VoltError(
        `${(err as Error).message}; freeing the half-imported '${volid}' failed too: ${
          (freeErr as Error).message
        }`,
        { cause: err },
      );
    }
    throw err;
  }
}

/**
 * An imported qcow2/vmdk must stand alone (no backing or external data file: a stream cannot
 * carry them, and a crafted one could point anywhere), pass `qemu-img check`, and have the
 * virtual size its header announced.
 */
async function verifyImage(
  plugin: PathImportPlugin,
  storage: Storage,
  volname: string,
  path: string,
  format: string,
  size: number,
): Promise<void> {
  if (format === "qcow2") {
    const h = await readQcow2Header(path).catch((err) => {
      throw new SyntaxError(`imported data is not a valid qcow2 image: ${(err as Error).message}`);
    });
    if (h.backingFile !== undefined) {
      throw new VoltError(
        `imported qcow2 image has a backing file '${h.backingFile}': refusing it (a stream carries one self-contained image)`,
      );
    }
    if (h.dataFile !== undefined) {
      throw new VoltError(
        `imported qcow2 image uses an external data file '${h.dataFile}': refusing it`,
      );
    }
  } else {
    const parent = await vmdkParent(path).catch((err) => {
      throw new SyntaxError(`imported data: ${(err as Error).message}`);
    });
    if (parent !== undefined) {
      throw new VoltError(
        `imported vmdk image names a parent '${parent}': refusing it (a stream carries one self-contained image)`,
      );
    }
  }
  const { code, stdout, stderr } = await run(
    "qemu-img",
    ["check", "-q", "-f", format, path],
    { allowFailure: true },
  );
  // 0: clean; 3: leaked clusters only (harmless).
  if (code !== 0 && code !== 3) {
    const why = `${stderr}\n${stdout}`.split("\n").map((l) => l.trim()).filter((l) => l)[0] ??
      `exit code ${code}`;
    throw new SyntaxError(
      `imported ${format} image is damaged or truncated (qemu-img check: ${why})`,
    );
  }
  const info = await plugin.volumeSizeInfo(storage, volname);
  if (info.size !== size) {
    throw new SyntaxError(
      `imported ${format} image has a virtual size of ${info.size} bytes, its size header announced ${size}`,
    );
  }
}

/**
 * A file that is not a disk: written into an unnamed file in the target's directory, linked
 * into place when complete. Where the file system has no `O_TMPFILE`, a hidden temporary
 * name is used instead and removed on failure.
 */
/** errno values of `open(O_TMPFILE)` on a file system without it. */
const NO_TMPFILE: readonly number[] = [E.EOPNOTSUPP, E.EISDIR, E.EINVAL];

async function importFile(
  path: string,
  source: StreamSource,
  limits: { min: number; max: number },
  signal: AbortSignal | undefined,
): Promise<void> {
  const dir = path.slice(0, path.lastIndexOf("/"));
  await Deno.mkdir(dir, { recursive: true });
  let fd: number;
  let tmpPath: string | undefined;
  try {
    fd = openFd(dir, O.TMPFILE | O.RDWR, 0o644);
  } catch (err) {
    if (!(err instanceof OsCallError) || !NO_TMPFILE.includes(err.errno)) throw err;
    tmpPath = `${dir}/.volt-import-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}.tmp`;
    fd = openFd(tmpPath, O.RDWR | O.CREAT | O.EXCL, 0o644);
  }
  try {
    const got = await writeSparse(fd, source.chunks(), { maxBytes: limits.max, signal })
      .catch((err) => {
        throw writeError(err, path);
      });
    checkLength(got, limits);
    if (tmpPath === undefined) {
      const r = sys().linkat(
        AT.FDCWD,
        cString(`/proc/self/fd/${fd}`),
        AT.FDCWD,
        cString(path),
        AT.SYMLINK_FOLLOW,
      );
      linkResult(r, path);
    } else {
      try {
        await Deno.link(tmpPath, path);
      } catch (err) {
        if (err instanceof Deno.errors.AlreadyExists) {
          throw new VoltError(`file '${path}' already exists`);
        }
        throw err;
      }
    }
  } finally {
    closeFd(fd);
    if (tmpPath !== undefined) await Deno.remove(tmpPath).catch(() => {});
  }
}

function linkResult(r: number, path: string): void {
  try {
    check(r, `link '${path}'`);
  } catch (err) {
    if (err instanceof OsCallError && err.errno === E.EEXIST) {
      throw new VoltError(`file '${path}' already exists`);
    }
    throw err;
  }
}
