/**
 * Reading an export's map: `base:allocation` (hole / zero) merged with
 * `qemu:dirty-bitmap:NAME` (dirty) into one ordered sequence of {@link Extent}s.
 *
 * Block status answers are taken as the protocol allows them, not as we would like them:
 * a server may answer fewer extents than asked (we continue where the shortest context ended),
 * the last extent may run past the request (it is clipped), extent lengths are 32-bit (requests
 * are at most 2 GiB, so disks past 4 GiB take several), and an export size that is not a
 * multiple of the bitmap granularity ends with a short extent.
 *
 * @module
 */

import type { NbdHandle } from "../../ffi/nbd_handle.ts";
import { LIBNBD_STATE, NbdError } from "../../ffi/libnbd.ts";
import { VoltError } from "../errors.ts";

/** The allocation meta context. */
export const BASE_ALLOCATION = "base:allocation";

/** Largest block-status request: lengths are 32-bit in NBD; 2 GiB keeps them aligned. */
export const MAX_BLOCK_STATUS_REQUEST = 2 ** 31;

/** One range of the export and what is known about it. */
export interface Extent {
  offset: number;
  length: number;
  /** Backed by storage (not a hole). */
  allocated: boolean;
  /** Reads as zeros. */
  zero: boolean;
  /** Marked in the dirty bitmap (always false without a bitmap). */
  dirty: boolean;
}

/**
 * The meta context name of a QEMU dirty bitmap.
 *
 * @example
 * ```ts
 * import { dirtyBitmapContext } from "./extents.ts";
 * console.assert(dirtyBitmapContext("b0") === "qemu:dirty-bitmap:b0");
 * ```
 */
export function dirtyBitmapContext(bitmap: string): string {
  return `qemu:dirty-bitmap:${bitmap}`;
}

/** Options for {@link readExtents}. */
export interface ReadExtentsOptions {
  /** Dirty bitmap to merge in (the handle must have negotiated its context). */
  bitmap?: string;
  /** Start of the range to map (default 0). */
  offset?: number;
  /** Length of the range (default: to the end of the export). */
  length?: number;
  /** Largest block-status request (default {@link MAX_BLOCK_STATUS_REQUEST}). */
  maxRequest?: number;
}

/**
 * Merges one block-status answer into extents covering `[offset, end)`, where `end` is
 * `limit` or where the shortest context's answer ended, whichever comes first. `alloc` and
 * `dirty` are `[length, flags]` pairs; `null` means the context is not used (everything
 * allocated data, or nothing dirty). Returns the extents and `end`.
 *
 * @example
 * ```ts
 * import { mergeBlockStatus } from "./extents.ts";
 * const r = mergeBlockStatus(0, 4096, new Uint32Array([1024, 0, 3072, 3]), new Uint32Array([2048, 1]));
 * console.assert(r.end === 2048 && r.extents.length === 2 && r.extents[1].zero);
 * ```
 */
export function mergeBlockStatus(
  offset: number,
  limit: number,
  alloc: Uint32Array | null,
  dirty: Uint32Array | null,
): { extents: Extent[]; end: number } {
  let end = limit;
  if (alloc) end = Math.min(end, offset + pairSum(alloc));
  if (dirty) end = Math.min(end, offset + pairSum(dirty));
  const extents: Extent[] = [];
  let pos = offset;
  let ai = 0, di = 0; // index of the current pair
  let aEnd = alloc ? offset + (alloc[0] ?? 0) : Infinity;
  let dEnd = dirty ? offset + (dirty[0] ?? 0) : Infinity;
  while (pos < end) {
    // Skip zero-length entries a server may send.
    while (alloc && aEnd <= pos && ai + 2 < alloc.length) aEnd += alloc[ai += 2];
    while (dirty && dEnd <= pos && di + 2 < dirty.length) dEnd += dirty[di += 2];
    const next = Math.min(end, aEnd, dEnd);
    if (next <= pos) break; // cannot happen with end computed from the sums
    const aFlags = alloc ? alloc[ai + 1] : 0;
    const dFlags = dirty ? dirty[di + 1] : 0;
    extents.push({
      offset: pos,
      length: next - pos,
      allocated: (aFlags & LIBNBD_STATE.HOLE) === 0,
      zero: (aFlags & LIBNBD_STATE.ZERO) !== 0,
      dirty: (dFlags & LIBNBD_STATE.DIRTY) !== 0,
    });
    pos = next;
  }
  return { extents, end };
}

function pairSum(pairs: Uint32Array): number {
  let sum = 0;
  for (let i = 0; i < pairs.length; i += 2) sum += pairs[i];
  return sum;
}

/**
 * Whether two extents can be joined: contiguous with the same flags.
 */
export function sameKind(a: Extent, b: Extent): boolean {
  return a.offset + a.length === b.offset && a.allocated === b.allocated && a.zero === b.zero &&
    a.dirty === b.dirty;
}

/**
 * Reads the merged map of a connected handle, in order, adjacent extents with equal flags
 * joined. Without `base:allocation` negotiated everything is reported as allocated data.
 * Throws {@link VoltError} when the bitmap's context was not negotiated, and when the server
 * answers a request with nothing.
 *
 * @example
 * ```ts ignore
 * import { connectNbd } from "./source.ts";
 * import { BASE_ALLOCATION, readExtents } from "./extents.ts";
 * using h = connectNbd({ socket: "/tmp/s" }, { metaContexts: [BASE_ALLOCATION] });
 * for (const e of readExtents(h)) console.log(e);
 * ```
 */
export function* readExtents(h: NbdHandle, options: ReadExtentsOptions = {}): Generator<Extent> {
  const size = h.size();
  const start = options.offset ?? 0;
  const stop = Math.min(size, start + (options.length ?? size));
  const maxRequest = options.maxRequest ?? MAX_BLOCK_STATUS_REQUEST;
  const useAlloc = h.canMetaContext(BASE_ALLOCATION);
  const dirtyCtx = options.bitmap === undefined ? undefined : dirtyBitmapContext(options.bitmap);
  if (dirtyCtx && !h.canMetaContext(dirtyCtx)) {
    throw new VoltError(
      `the NBD export has no dirty bitmap '${options.bitmap}': ` +
        `export it (qemu-nbd -B ${options.bitmap}, or bitmaps=[...] in the NBD export)`,
    );
  }
  let pending: Extent | undefined;
  let pos = start;
  while (pos < stop) {
    const count = Math.min(stop - pos, maxRequest);
    let extents: Extent[];
    let end: number;
    if (!useAlloc && !dirtyCtx) {
      extents = [{ offset: pos, length: count, allocated: true, zero: false, dirty: false }];
      end = pos + count;
    } else {
      let alloc: Uint32Array | null = useAlloc ? new Uint32Array(0) : null;
      let dirty: Uint32Array | null = dirtyCtx ? new Uint32Array(0) : null;
      try {
        h.blockStatus(count, pos, (ctx, off, entries) => {
          if (off !== pos) return; // an answer for another request: not ours
          if (ctx === BASE_ALLOCATION && useAlloc) alloc = entries;
          else if (ctx === dirtyCtx) dirty = entries;
        });
      } catch (err) {
        if (!(err instanceof NbdError)) throw err;
        throw new VoltError(`block status at offset ${pos}: ${err.message}`, { cause: err });
      }
      ({ extents, end } = mergeBlockStatus(pos, pos + count, alloc, dirty));
      if (end <= pos) {
        throw new VoltError(
          `the NBD server answered block status at offset ${pos} with no extents`,
        );
      }
    }
    for (const e of extents) {
      if (pending && sameKind(pending, e)) {
        pending.length += e.length;
      } else {
        if (pending) yield pending;
        pending = e;
      }
    }
    pos = end;
  }
  if (pending) yield pending;
}
