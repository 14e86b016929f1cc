/**
 * A cluster assembled from pieces smaller than a cluster (a copy whose extents are not
 * cluster-aligned), in an image with a backing file: until every byte of the cluster has been
 * given, the writer cannot tell whether the rest must come from the backing file, so it keeps
 * the pieces here and writes the cluster once it is complete.
 *
 * @module
 */

/**
 * The pieces given so far for one cluster.
 *
 * @example
 * ```ts
 * import { PartialCluster } from "./partial_cluster.ts";
 * const p = new PartialCluster(8);
 * p.add(0, new Uint8Array([1, 2, 3, 4]));
 * p.add(4, undefined); // 4 bytes of zeros
 * console.assert(p.complete && p.hasData && p.bytes[1] === 2 && p.bytes[5] === 0);
 * ```
 */
export class PartialCluster {
  /** The cluster's bytes so far (zeros where nothing was given). */
  readonly bytes: Uint8Array;
  /** Some piece held data (not only zeros). */
  hasData = false;
  /** Covered ranges `[start, end)`, sorted and disjoint. */
  #ranges: Array<[number, number]> = [];
  readonly #length: number;

  /** @param length bytes of the cluster that lie inside the disk */
  constructor(length: number) {
    this.#length = length;
    this.bytes = new Uint8Array(length);
  }

  /** Every byte of the cluster has been given. */
  get complete(): boolean {
    const r = this.#ranges;
    return r.length === 1 && r[0][0] === 0 && r[0][1] === this.#length;
  }

  /** The first byte range not yet given, for error messages. */
  firstGap(): [number, number] {
    let pos = 0;
    for (const [s, e] of this.#ranges) {
      if (s > pos) return [pos, s];
      pos = e;
    }
    return [pos, this.#length];
  }

  /** Adds a piece at `start` within the cluster: `data` (copied), or zeros when undefined. */
  add(start: number, data: Uint8Array | undefined, length = data?.length ?? 0): void {
    if (data) {
      this.bytes.set(data, start);
      this.hasData = true;
    } else {
      this.bytes.fill(0, start, start + length);
    }
    let s = start;
    let e = start + length;
    const kept: Array<[number, number]> = [];
    for (const [rs, re] of this.#ranges) {
      if (re < s || rs > e) kept.push([rs, re]);
      else {
        s = Math.min(s, rs);
        e = Math.max(e, re);
      }
    }
    kept.push([s, e]);
    kept.sort((a, b) => a[0] - b[0]);
    this.#ranges = kept;
  }
}
