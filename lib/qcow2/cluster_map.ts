/**
 * The guest-to-host cluster map of an image being written: the L2 tables, kept in memory only
 * for the regions that were touched. One entry is a `u32`: {@link UNALLOCATED}, {@link ZERO},
 * or the index of the host cluster holding the data. A region made entirely of zero clusters
 * costs no memory at all (one shared marker instead of a table).
 *
 * @module
 */

import { ENTRY } from "./layout.ts";

/** The guest cluster is not in the image: it reads from the backing file (or as zeros). */
export const UNALLOCATED = 0;
/** The guest cluster reads as zeros (zero flag, no data). */
export const ZERO = 0xffff_ffff;
/** Largest host cluster index an entry can hold. */
export const MAX_HOST_CLUSTER = ZERO - 1;

/** A whole L2 region of zero clusters. */
const ALL_ZERO = "all-zero" as const;
type Table = Uint32Array | typeof ALL_ZERO;

/**
 * Sparse L2 tables of one image. Setting an entry that held data hands the old host cluster
 * to `onOrphan` (it is no longer referenced and gets refcount 0).
 *
 * @example
 * ```ts
 * import { ClusterMap, ZERO } from "./cluster_map.ts";
 * const map = new ClusterMap(8192, 16384, () => {});
 * map.set(10_000, 5);
 * map.setRange(0, 8192, ZERO); // a whole L2 region: no table allocated
 * console.assert(map.get(10_000) === 5 && map.get(1) === ZERO && map.tableCount === 2);
 * ```
 */
export class ClusterMap {
  readonly #l2Entries: number;
  readonly #clusters: number;
  readonly #onOrphan: (host: number) => void;
  #tables = new Map<number, Table>();
  #memory = 0;

  /**
   * @param l2Entries entries per L2 table
   * @param clusters guest clusters of the disk
   * @param onOrphan called with each host cluster that an update stops referencing
   */
  constructor(l2Entries: number, clusters: number, onOrphan: (host: number) => void) {
    this.#l2Entries = l2Entries;
    this.#clusters = clusters;
    this.#onOrphan = onOrphan;
  }

  /** L2 tables the image will hold. */
  get tableCount(): number {
    return this.#tables.size;
  }

  /** Bytes of table memory held. */
  get memoryBytes(): number {
    return this.#memory;
  }

  /** The entry of guest cluster `cluster`. */
  get(cluster: number): number {
    const t = this.#tables.get(Math.floor(cluster / this.#l2Entries));
    if (t === undefined) return UNALLOCATED;
    if (t === ALL_ZERO) return ZERO;
    return t[cluster % this.#l2Entries];
  }

  /** Sets the entry of guest cluster `cluster`. */
  set(cluster: number, entry: number): void {
    const index = Math.floor(cluster / this.#l2Entries);
    let t = this.#tables.get(index);
    if (t === undefined || t === ALL_ZERO) {
      if (t === undefined && entry === UNALLOCATED) return;
      if (t === ALL_ZERO && entry === ZERO) return;
      t = this.#materialize(index, t === ALL_ZERO ? ZERO : UNALLOCATED);
    }
    const i = cluster % this.#l2Entries;
    const old = t[i];
    if (old !== UNALLOCATED && old !== ZERO && old !== entry) this.#onOrphan(old);
    t[i] = entry;
  }

  /**
   * Sets `count` entries from guest cluster `first` to {@link ZERO} or {@link UNALLOCATED}.
   * Costs time only for the regions already touched, and no memory for whole regions.
   */
  setRange(first: number, count: number, entry: typeof ZERO | typeof UNALLOCATED): void {
    const end = first + count;
    for (let c = first; c < end;) {
      const index = Math.floor(c / this.#l2Entries);
      const regionStart = index * this.#l2Entries;
      const regionEnd = Math.min(regionStart + this.#l2Entries, this.#clusters);
      const stop = Math.min(end, regionEnd);
      const t = this.#tables.get(index);
      if (c === regionStart && stop === regionEnd) {
        // The whole region: drop or replace its table.
        if (t instanceof Uint32Array) this.#orphanAll(t);
        this.#drop(index);
        if (entry === ZERO) this.#tables.set(index, ALL_ZERO);
      } else if (t === undefined && entry === UNALLOCATED) {
        // Nothing to clear.
      } else if (t === ALL_ZERO && entry === ZERO) {
        // Already zero.
      } else {
        const table = t instanceof Uint32Array
          ? t
          : this.#materialize(index, t === ALL_ZERO ? ZERO : UNALLOCATED);
        for (let i = c - regionStart; i < stop - regionStart; i++) {
          const old = table[i];
          if (old !== UNALLOCATED && old !== ZERO) this.#onOrphan(old);
          table[i] = entry;
        }
      }
      c = stop;
    }
  }

  /** The L1 indices that have a table, ascending. */
  tableIndices(): number[] {
    return [...this.#tables.keys()].sort((a, b) => a - b);
  }

  /**
   * Writes L2 table `index` in its on-disk form into `out` (one cluster, big-endian entries):
   * data entries with the "copied" bit (refcount 1), zero entries with the zero flag.
   */
  encode(index: number, clusterSize: number, out: Uint8Array): void {
    const t = this.#tables.get(index);
    const v = new DataView(out.buffer, out.byteOffset, out.byteLength);
    out.fill(0);
    if (t === undefined) return;
    const valid = Math.min(this.#l2Entries, this.#clusters - index * this.#l2Entries);
    if (t === ALL_ZERO) {
      for (let i = 0; i < valid; i++) v.setUint32(i * 8 + 4, ENTRY.zero);
      return;
    }
    for (let i = 0; i < valid; i++) {
      const e = t[i];
      if (e === UNALLOCATED) continue;
      if (e === ZERO) {
        v.setUint32(i * 8 + 4, ENTRY.zero);
        continue;
      }
      const offset = e * clusterSize;
      v.setUint32(i * 8, ENTRY.copiedHigh | Math.floor(offset / 2 ** 32));
      v.setUint32(i * 8 + 4, offset % 2 ** 32);
    }
  }

  #materialize(index: number, fill: number): Uint32Array {
    const t = new Uint32Array(this.#l2Entries);
    if (fill !== 0) t.fill(fill);
    this.#tables.set(index, t);
    this.#memory += t.byteLength;
    return t;
  }

  #drop(index: number): void {
    const t = this.#tables.get(index);
    if (t instanceof Uint32Array) this.#memory -= t.byteLength;
    this.#tables.delete(index);
  }

  #orphanAll(t: Uint32Array): void {
    for (const e of t) if (e !== UNALLOCATED && e !== ZERO) this.#onOrphan(e);
  }
}
