/**
 * What a copy does with each part of the export: read it, or write zeros there.
 *
 * A full copy (`"allocated"`) covers the whole export: what reads as zero becomes a zero
 * request (which a sink whose target already reads as zeros can skip), everything else is read.
 * An incremental copy (`"dirty"`) covers only the dirty ranges, and a dirty range that now
 * reads as zero or is a hole is still written as zeros: skipping it would leave the previous
 * backup's data there.
 *
 * @module
 */

import type { Extent } from "./extents.ts";

/** Which ranges a copy covers. */
export type RangeSelection = "allocated" | "dirty";

/** One piece of a copy plan. */
export interface CopyRange {
  offset: number;
  length: number;
  /** true: read the source and write the data; false: write zeros. */
  read: boolean;
}

/**
 * The ranges a copy covers, in order, adjacent ranges of the same kind joined.
 *
 * @example
 * ```ts
 * import { planRanges } from "./plan.ts";
 * const ranges = [...planRanges([
 *   { offset: 0, length: 4096, allocated: true, zero: false, dirty: true },
 *   { offset: 4096, length: 4096, allocated: false, zero: true, dirty: true },
 *   { offset: 8192, length: 4096, allocated: true, zero: false, dirty: false },
 * ], "dirty")];
 * console.assert(ranges.length === 2 && ranges[1].read === false);
 * ```
 */
export function* planRanges(
  extents: Iterable<Extent>,
  selection: RangeSelection,
): Generator<CopyRange> {
  let pending: CopyRange | undefined;
  for (const e of extents) {
    if (selection === "dirty" && !e.dirty) continue;
    // A hole without the zero flag has unknown contents: it must be read.
    const read = !e.zero;
    if (pending && pending.read === read && pending.offset + pending.length === e.offset) {
      pending.length += e.length;
      continue;
    }
    if (pending) yield pending;
    pending = { offset: e.offset, length: e.length, read };
  }
  if (pending) yield pending;
}

/**
 * Splits ranges into requests: reads at most `requestSize` bytes, zero ranges at most
 * `zeroSize`. A range longer than one request is cut at multiples of the request size, so its
 * requests are aligned; a range that fits in one request stays one request.
 *
 * @example
 * ```ts
 * import { splitRequests } from "./plan.ts";
 * const parts = [...splitRequests([{ offset: 1000, length: 3000, read: true }], 1024, 1 << 30)];
 * console.assert(parts.length === 4 && parts[0].length === 24 && parts[3].length === 928);
 * ```
 */
export function* splitRequests(
  ranges: Iterable<CopyRange>,
  requestSize: number,
  zeroSize: number,
): Generator<CopyRange> {
  for (const r of ranges) {
    const unit = r.read ? requestSize : zeroSize;
    let pos = r.offset;
    const end = r.offset + r.length;
    while (pos < end) {
      // The rest fits in one request: one request (an extent is not cut in two just because
      // it crosses a multiple of the unit). Otherwise stop at the next multiple, so that long
      // ranges are read in aligned requests.
      const next = end - pos <= unit ? end : Math.min(end, (Math.floor(pos / unit) + 1) * unit);
      yield { offset: pos, length: next - pos, read: r.read };
      pos = next;
    }
  }
}
