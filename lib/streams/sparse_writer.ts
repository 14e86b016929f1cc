/**
 * Writing an import stream into a file sparsely, as `dd conv=sparse` does but per 4 KiB
 * block: blocks that are all zeros are skipped (they stay holes), runs of non-zero blocks are
 * written with one `pwrite`, and runs of zeros a source already knows about (holes of a stream
 * file, zero runs of the migrate channel) are never even looked at.
 *
 * @module
 */

import type { StreamChunk } from "../../plugins/api.ts";
import { interrupted, pwriteAll, truncateFd } from "./fd.ts";
import { OsCallError, sys, ZEROS } from "../../ffi/libc_fd.ts";
import { StreamingWriteback } from "../writeback.ts";

/** Granularity of hole detection: one file-system block. */
export const SPARSE_BLOCK = 4096;

/** Options of {@link writeSparse}. */
export interface SparseWriteOptions {
  /**
   * Fail as soon as more than this many bytes arrive (a raw payload longer than its size
   * header). The error is a `RangeError`.
   */
  maxBytes?: number;
  /** Stop with an error when it fires. */
  signal?: AbortSignal;
}

/** Is `buf` all zeros? (`memcmp` against the shared zero buffer.) */
export function isZero(buf: Uint8Array): boolean {
  const libc = sys();
  for (let off = 0; off < buf.length; off += ZEROS.length) {
    const piece = buf.subarray(off, Math.min(buf.length, off + ZEROS.length));
    if (libc.memcmp(piece, ZEROS, BigInt(piece.length)) !== 0) return false;
  }
  return true;
}

const BLOCK_BIG = BigInt(SPARSE_BLOCK);

/**
 * Writes `chunks` into the open file `fd` from offset 0, leaving zero blocks as holes, and
 * sets the file's length to the number of bytes written, which it returns. Where nothing is
 * written the file must already read as zeros: a new file, a new raw image, or one cleared
 * with `clearFile` (not truncated to 0 first: see there). The data goes to disk as it is
 * written and leaves the page cache behind it (`StreamingWriteback`): an import of a large
 * volume does not fill memory with dirty pages.
 *
 * @example
 * ```ts
 * import { writeSparse } from "./sparse_writer.ts";
 * import { closeFd, O, openFd } from "./fd.ts";
 * const path = Deno.makeTempFileSync();
 * const fd = openFd(path, O.RDWR);
 * async function* chunks() {
 *   yield { data: new Uint8Array(8192) };
 *   yield { data: new Uint8Array([1, 2, 3]) };
 * }
 * console.assert(await writeSparse(fd, chunks()) === 8195);
 * closeFd(fd);
 * ```
 */
export async function writeSparse(
  fd: number,
  chunks: AsyncIterable<StreamChunk>,
  options: SparseWriteOptions = {},
): Promise<number> {
  const { maxBytes, signal } = options;
  const libc = sys();
  const writeback = new StreamingWriteback(
    fd,
    (offset, length, code) =>
      new OsCallError(`writing back ${length} bytes at offset ${offset}`, code),
  );
  const write = (bytes: Uint8Array, offset: number) => {
    pwriteAll(fd, bytes, offset);
    writeback.written(offset, bytes.length);
  };
  let pos = 0;
  for await (const chunk of chunks) {
    if (signal?.aborted) throw interrupted(signal);
    const length = "data" in chunk ? chunk.data.length : chunk.zeros;
    if (maxBytes !== undefined && pos + length > maxBytes) {
      throw new RangeError(
        `stream is longer than its size header says (more than ${maxBytes} bytes of data)`,
      );
    }
    if (!("data" in chunk)) {
      pos += length;
      continue;
    }
    const buf = chunk.data;
    if (isZero(buf)) {
      pos += length;
      continue;
    }
    let run = -1;
    let i = 0;
    while (i < length) {
      const into = (pos + i) % SPARSE_BLOCK;
      const end = Math.min(length, i + SPARSE_BLOCK - into);
      const n = end - i;
      const zero = libc.memcmp(
        buf.subarray(i, end),
        ZEROS,
        n === SPARSE_BLOCK ? BLOCK_BIG : BigInt(n),
      ) === 0;
      if (!zero && run < 0) run = i;
      if (zero && run >= 0) {
        write(buf.subarray(run, i), pos + run);
        run = -1;
      }
      i = end;
    }
    if (run >= 0) write(buf.subarray(run, length), pos + run);
    pos += length;
  }
  writeback.settleAll();
  truncateFd(fd, pos);
  return pos;
}
