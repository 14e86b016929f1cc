/**
 * Copying one VM disk into a backup image: a new qcow2 written by volt's streaming writer
 * (`lib/qcow2/writer.ts`), either everything (full) or only the dirty ranges on top of the
 * previous backup's image (incremental: the new image's backing file). Two ways in, as the
 * host offers them: an NBD export read by the copy engine, or an open file and its regions.
 *
 * Only what was copied is written: zero ranges become zero clusters (over a backing file) or
 * stay unallocated (full image); the bandwidth limit applies to bytes read.
 *
 * @module
 */

import type { DeviceBackupStats, VmVolume } from "../backup_api.ts";
import { VoltError } from "../../lib/errors.ts";
import { copyNbd } from "../../lib/nbd/copy.ts";
import { BASE_ALLOCATION, dirtyBitmapContext, readExtents } from "../../lib/nbd/extents.ts";
import { connectNbd } from "../../lib/nbd/source.ts";
import { isZero, Qcow2Writer } from "../../lib/qcow2/writer.ts";
import { RateLimiter } from "../../lib/backup/throttle.ts";
import type { FileDigest } from "../../lib/backup/checksum.ts";
import { DigestingSink } from "../../lib/backup/digest_sink.ts";

/** Default (and largest) cluster size of backup images: the dirty bitmaps' granularity. */
export const BACKUP_CLUSTER_SIZE = 64 * 1024;

/** What {@link copyVolume} needs besides the volume. */
export interface CopyVolumeOptions {
  /** The new image (must not exist). */
  target: string;
  /** Backing file name relative to the image's directory, for an incremental. */
  backingFile?: string;
  /** Read bandwidth limit in KiB/s. */
  bandwidthLimit?: number;
  /** Bytes done and total of this device. */
  progress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

/** What was copied, the image's cluster size, and its digest (computed during the copy). */
export interface CopyVolumeResult extends DeviceBackupStats {
  clusterSize: number;
  /** Resolves to the image's size and digest; the tail is still being hashed on return. */
  digest: Promise<FileDigest>;
}

/**
 * Copies one volume into `options.target`. Incremental when `options.backingFile` is given
 * (the volume's bitmap mode must then be `reuse`). On failure the image is removed.
 */
export function copyVolume(vol: VmVolume, options: CopyVolumeOptions): Promise<CopyVolumeResult> {
  if (options.backingFile !== undefined && vol.bitmapMode !== "reuse") {
    throw new VoltError(`internal error: incremental copy of ${vol.device} without a bitmap`);
  }
  if (vol.nbd) return copyFromNbd(vol, options);
  if (vol.fileHandle) return copyFromFile(vol, options);
  throw new VoltError(`device ${vol.device}: the host gave neither an NBD export nor a file`);
}

async function copyFromNbd(vol: VmVolume, o: CopyVolumeOptions): Promise<CopyVolumeResult> {
  const nbd = vol.nbd!;
  const incremental = o.backingFile !== undefined;
  if (incremental && nbd.bitmapName === undefined) {
    throw new VoltError(`device ${vol.device}: bitmap mode 'reuse' but no bitmap name`);
  }
  const clusterSize = incremental
    ? dirtyAlignment(nbd.uri, nbd.bitmapName!, vol.device)
    : BACKUP_CLUSTER_SIZE;
  const writer = await Qcow2Writer.create(o.target, {
    size: vol.size,
    clusterSize,
    backingFile: o.backingFile,
    mode: 0o600,
  });
  const sink = new DigestingSink(writer);
  const stats = await copyNbd({
    source: { uri: nbd.uri },
    bitmap: incremental ? nbd.bitmapName : undefined,
    ranges: incremental ? "dirty" : "allocated",
    sink,
    bwlimitKiB: o.bandwidthLimit,
    onProgress: o.progress ? (p) => o.progress!(p.bytesDone, p.bytesTotal) : undefined,
    progressInterval: 250,
    signal: o.signal,
  });
  return {
    kind: incremental ? "incremental" : "full",
    size: vol.size,
    bytesRead: stats.bytesRead,
    bytesWritten: stats.bytesWritten,
    bytesZeroed: stats.bytesZeroed + stats.bytesSkipped,
    fileSize: writer.stats().fileSize,
    seconds: stats.seconds,
    clusterSize,
    digest: sink.digest(),
  };
}

/**
 * The cluster size for an incremental image: the largest power of two up to 64 KiB that
 * every start and end of a dirty run is a multiple of (the end of the disk excepted). A
 * cluster is then always copied whole, never half from the source and half from the backing
 * file. QEMU bitmaps have a granularity of 64 KiB by default, so this is normally 64 KiB.
 */
export function dirtyAlignment(uri: string, bitmap: string, device: string): number {
  using h = connectNbd({ uri }, {
    metaContexts: [BASE_ALLOCATION, dirtyBitmapContext(bitmap)],
    name: `volt-${device}-map`,
  });
  const size = h.size();
  let align = BACKUP_CLUSTER_SIZE;
  const fit = (boundary: number) => {
    if (boundary >= size) return;
    while (align > 512 && boundary % align !== 0) align /= 2;
  };
  let runStart = -1;
  let runEnd = -1;
  for (const e of readExtents(h, { bitmap })) {
    if (!e.dirty) continue;
    if (e.offset === runEnd) {
      runEnd += e.length;
      continue;
    }
    if (runStart >= 0) {
      fit(runStart);
      fit(runEnd);
    }
    runStart = e.offset;
    runEnd = e.offset + e.length;
  }
  if (runStart >= 0) {
    fit(runStart);
    fit(runEnd);
  }
  return align;
}

/** Read size of the file-handle loop. */
const READ_CHUNK = 1024 * 1024;

async function copyFromFile(vol: VmVolume, o: CopyVolumeOptions): Promise<CopyVolumeResult> {
  const fh = vol.fileHandle!;
  const t0 = performance.now();
  const writer = new DigestingSink(
    await Qcow2Writer.create(o.target, {
      size: vol.size,
      clusterSize: BACKUP_CLUSTER_SIZE,
      backingFile: o.backingFile,
      mode: 0o600,
    }),
  );
  const limiter = o.bandwidthLimit ? new RateLimiter(o.bandwidthLimit * 1024) : undefined;
  const buf = new Uint8Array(READ_CHUNK);
  let bytesRead = 0;
  let bytesWritten = 0;
  let bytesZeroed = 0;
  let lastProgress = 0;
  try {
    for (;;) {
      const region = await fh.nextDirtyRegion();
      if (region === null) break;
      const end = Math.min(region.offset + region.length, vol.size);
      for (let pos = region.offset; pos < end;) {
        o.signal?.throwIfAborted();
        const n = Math.min(READ_CHUNK, end - pos);
        await limiter?.take(n, o.signal);
        const chunk = buf.subarray(0, n);
        await readAt(fh.file, chunk, pos, fh.path);
        bytesRead += n;
        if (isZero(chunk)) {
          await writer.writeZeroes(pos, n);
          bytesZeroed += n;
        } else {
          await writer.writeData(pos, chunk);
          bytesWritten += n;
        }
        pos += n;
        const now = performance.now();
        if (o.progress && now - lastProgress > 250) {
          lastProgress = now;
          o.progress(pos, vol.size);
        }
      }
    }
    await writer.finish();
  } catch (err) {
    await writer.abort(err);
    if (o.signal?.aborted) throw new VoltError(`copy of ${vol.device} cancelled`);
    throw err;
  }
  o.progress?.(vol.size, vol.size);
  return {
    kind: o.backingFile !== undefined ? "incremental" : "full",
    size: vol.size,
    bytesRead,
    bytesWritten,
    bytesZeroed: bytesZeroed + (vol.size - bytesRead),
    fileSize: writer.writer.stats().fileSize,
    seconds: (performance.now() - t0) / 1000,
    clusterSize: BACKUP_CLUSTER_SIZE,
    digest: writer.digest(),
  };
}

/** Fills `buf` from `file` at `offset`; a short file reads as an error naming it. */
async function readAt(file: Deno.FsFile, buf: Uint8Array, offset: number, path: string) {
  await file.seek(offset, Deno.SeekMode.Start);
  let n = 0;
  while (n < buf.length) {
    const r = await file.read(buf.subarray(n));
    if (r === null) {
      throw new VoltError(`'${path}' ended at ${offset + n}, before its size: it shrank`);
    }
    n += r;
  }
}
