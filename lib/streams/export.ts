/**
 * The generic export of a path-based storage (what Proxmox's `PVE::Storage::Plugin` does by
 * default for storages with a `path`): any plugin whose volumes are local files or
 * directories can use {@link exportPathVolume} and {@link exportFormatsForPath} as its
 * `volumeExport` and `volumeExportFormats`.
 *
 * Payloads: a raw file, and a qcow2/vmdk file with `--with-snapshots`, go out byte for byte
 * with holes read as zeros without touching the disk; a qcow2/vmdk exported as raw is
 * converted by copying the ranges `qemu-img map` reports (through `qemu-nbd` and `nbdcopy`
 * when the image is compressed or encrypted); a subvolume goes out as GNU tar.
 * Byte layouts: `docs/formats.md`.
 *
 * @module
 */

import type {
  Storage,
  StoragePlugin,
  StreamSink,
  VolumeExportOptions,
  VolumeName,
} from "../../plugins/api.ts";
import { VoltError } from "../errors.ts";
import { readQcow2Header } from "../qcow2/header.ts";
import { closeFd, EventLoopYielder, O, openFd } from "./fd.ts";
import { dataExtents, imageChain, readImageMap } from "./extents.ts";
import {
  dataFormatOf,
  exportFormatsFor,
  KNOWN_FORMATS,
  parseStreamFormat,
  type StreamFormat,
} from "./formats.ts";
import { encodeMetaHeader } from "./meta_header.ts";
import { encodeSizeHeader } from "./size_header.ts";
import { childIntoSink, tarCreate } from "./tar.ts";
import { vmdkParent } from "../storage/vmdk_parent.ts";

/** The plugin members the generic export uses. */
export type PathPlugin = Pick<
  StoragePlugin,
  "parseVolname" | "path" | "volumeSizeInfo"
>;

/** Rounds up to a multiple of 512, as `qemu-img info` reports a raw file's size. */
export function roundUp512(n: number): number {
  return Math.ceil(n / 512) * 512;
}

/**
 * Formats {@link exportPathVolume} can write for a volume (seed 000's order). With snapshots,
 * a qcow2 that is the top of a volume chain (it has a backing file) offers none: its
 * snapshots are separate files a stream cannot carry.
 */
export async function exportFormatsForPath(
  plugin: PathPlugin,
  storage: Storage,
  volname: string,
  options: VolumeExportOptions = {},
): Promise<string[]> {
  const v = plugin.parseVolname(volname);
  const list = exportFormatsFor(v.vtype, v.format, options.withSnapshots === true);
  if (options.withSnapshots && v.format === "qcow2" && list.length > 0) {
    const info = await plugin.volumeSizeInfo(storage, volname);
    if (info.backing !== undefined) return [];
  }
  return list;
}

/** Parses a format name, refusing unknown ones with the list of known ones. */
export function knownFormat(format: string): StreamFormat {
  const f = parseStreamFormat(format);
  if (!f) {
    throw new VoltError(
      `unknown stream format '${format}' (known: ${KNOWN_FORMATS.join(", ")})`,
    );
  }
  return f;
}

/**
 * Writes volume `volname` to `sink` as a stream of `format`. Refuses, before writing
 * anything, a format that does not fit the volume (the error lists those that do), and with
 * snapshots the top of a volume chain.
 */
export async function exportPathVolume(
  plugin: PathPlugin,
  storage: Storage,
  volname: string,
  format: string,
  sink: StreamSink,
  options: VolumeExportOptions = {},
): Promise<void> {
  const v = plugin.parseVolname(volname);
  const volid = `${storage.id}:${volname}`;
  const f = knownFormat(format);
  const withSnapshots = options.withSnapshots === true;
  if (f.kind === "meta") {
    if (f.vtype !== v.vtype) {
      throw new VoltError(
        `volume type does not match export format: '${volid}' is of type ${v.vtype}`,
      );
    }
    if (v.vtype === "images") {
      if (!withSnapshots && (v.format === "qcow2" || v.format === "vmdk")) {
        throw new VoltError(
          `format ${v.format} cannot be exported without snapshots (use --with-snapshots, or raw+size to convert)`,
        );
      }
      if (withSnapshots && v.format === "raw") {
        throw new VoltError("format raw cannot be exported with snapshots");
      }
    }
  }
  const available = exportFormatsFor(v.vtype, v.format, withSnapshots);
  if (!available.includes(format)) {
    const which = withSnapshots ? "with snapshots" : "without snapshots";
    throw new VoltError(
      `volume export format ${format} not available for '${volid}' ${which} (${
        available.length > 0 ? `available: ${available.join(", ")}` : "it offers none"
      })`,
    );
  }
  const path = plugin.path(storage, volname);
  const data = f.kind === "meta" ? dataFormatOf(v.format) : (f as { data: string }).data;
  const isImage = v.vtype === "images";

  // Everything that can fail without writing comes first.
  let size = 0;
  if (isImage) {
    const info = await plugin.volumeSizeInfo(storage, volname);
    if (withSnapshots && info.backing !== undefined) {
      throw new VoltError(
        `cannot export '${volid}' with snapshots: it is the top of a volume chain (backing file '${info.backing}'), whose snapshots are separate files; export it without --with-snapshots to send its current state as raw`,
      );
    }
    if (v.format === "vmdk") {
      const parent = await vmdkParent(path);
      if (parent !== undefined) {
        throw new VoltError(
          `volume '${volid}' names a parent image '${parent}': refusing to read it (not a self-contained vmdk)`,
        );
      }
    }
    size = info.size;
  } else if (data !== "tar") {
    size = roundUp512(await fileSize(path, volid));
  } else {
    await assertDirectory(path, volid);
  }

  if (f.kind === "meta") await sink.write(encodeMetaHeader({ vtype: v.vtype, format: data }));
  await sink.write(encodeSizeHeader(size));
  if (data === "tar") return tarCreate(path, sink, options.signal);
  if (isImage && data === "raw" && v.format !== "raw") {
    return convertToRaw(path, v, root(storage), sink, options.signal);
  }
  return copyFile(path, sink, options.signal);
}

function root(storage: Storage): string {
  return String(storage.options.path ?? "/");
}

async function fileSize(path: string, volid: string): Promise<number> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new VoltError(`volume '${volid}' does not exist`);
    }
    throw err;
  }
  if (!st.isFile) throw new VoltError(`volume '${volid}': '${path}' is not a regular file`);
  return st.size;
}

async function assertDirectory(path: string, volid: string): Promise<void> {
  const st = await Deno.stat(path).catch(() => undefined);
  if (!st) throw new VoltError(`volume '${volid}' does not exist`);
  if (!st.isDirectory) throw new VoltError(`volume '${volid}': '${path}' is not a directory`);
}

/** Slices of a long extent, so that a signal is noticed between them. */
const SLICE = 64 << 20;

/** `length` bytes of `fd` from `offset` into the sink, or zeros when `fd` is -1. */
async function emit(
  sink: StreamSink,
  fd: number,
  offset: number,
  length: number,
  yielder: EventLoopYielder,
  signal?: AbortSignal,
): Promise<void> {
  for (let done = 0; done < length;) {
    const n = Math.min(SLICE, length - done);
    if (fd < 0) await sink.writeZeros(n);
    else await sink.writeRange(fd, offset + done, n);
    done += n;
    await yielder.maybeYield(signal);
  }
}

/** The file at `path`, byte for byte; holes go out as zeros without being read. */
export async function copyFile(
  path: string,
  sink: StreamSink,
  signal?: AbortSignal,
): Promise<void> {
  const fd = openFd(path, O.RDONLY);
  try {
    const end = Number((await Deno.stat(path)).size);
    const yielder = new EventLoopYielder();
    for (const e of dataExtents(fd, 0, end)) {
      await emit(sink, e.data ? fd : -1, e.offset, e.length, yielder, signal);
    }
  } finally {
    closeFd(fd);
  }
}

/**
 * A qcow2 or vmdk image as raw data. Ranges that `qemu-img map` places at an offset of one of
 * the chain's files are copied from there (zero-copy into a pipe); zeros are written as
 * zeros. A compressed or encrypted image goes through `qemu-nbd` and `nbdcopy`, which write
 * into a pipe in order (`qemu-img convert` cannot).
 */
async function convertToRaw(
  path: string,
  v: VolumeName,
  storageRoot: string,
  sink: StreamSink,
  signal?: AbortSignal,
): Promise<void> {
  const chain = await imageChain(path, v.format, storageRoot);
  let encrypted = false;
  if (v.format === "qcow2") encrypted = (await readQcow2Header(path)).cryptMethod !== 0;
  const map = encrypted ? undefined : await readImageMap(path, v.format);
  if (!map || map.opaque || map.maxDepth >= chain.length) {
    return childIntoSink(
      "nbdcopy",
      ["--", "[", "qemu-nbd", "-r", "-f", v.format, path, "]", "-"],
      sink,
      signal,
    );
  }
  const fds: number[] = [];
  try {
    for (let d = 0; d <= map.maxDepth; d++) fds.push(openFd(chain[d], O.RDONLY));
    const yielder = new EventLoopYielder();
    for (const e of map.extents()) {
      await emit(sink, e.data ? fds[e.depth] : -1, e.fileOffset, e.length, yielder, signal);
    }
  } finally {
    for (const fd of fds) closeFd(fd);
  }
}
