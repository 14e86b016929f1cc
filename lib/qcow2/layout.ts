/**
 * The qcow2 on-disk layout shared by the header reader and the writer: magic, header field
 * offsets, extension types, table entry bits, qemu's implementation limits, and the geometry
 * arithmetic (how many L1 entries a disk needs, how many refcount blocks cover a file).
 * Facts from QEMU's `docs/interop/qcow2.txt`; every number is big-endian on disk.
 *
 * @module
 */

/** "QFI\xfb", the first four bytes of every qcow2 file. */
export const QCOW2_MAGIC = 0x514649fb;

/** Byte offsets of the header fields (version 3; version 2 ends at `incompatibleFeatures`). */
export const HEADER = {
  magic: 0,
  version: 4,
  backingFileOffset: 8,
  backingFileSize: 16,
  clusterBits: 20,
  size: 24,
  cryptMethod: 32,
  l1Size: 36,
  l1TableOffset: 40,
  refcountTableOffset: 48,
  refcountTableClusters: 56,
  nbSnapshots: 60,
  snapshotsOffset: 64,
  incompatibleFeatures: 72,
  compatibleFeatures: 80,
  autoclearFeatures: 88,
  refcountOrder: 96,
  headerLength: 100,
} as const;

/** Length of a version 2 header. */
export const HEADER_V2_LENGTH = 72;
/** Minimum length of a version 3 header (through `header_length`). */
export const HEADER_V3_LENGTH = 104;

/** Header extension types: `{u32 type, u32 length, data padded to 8 bytes}` until type 0. */
export const EXTENSION = {
  end: 0,
  backingFormat: 0xe2792aca,
  featureNameTable: 0x6803f857,
  bitmaps: 0x23852875,
  dataFile: 0x44415441,
} as const;

/** Incompatible feature bits. */
export const INCOMPATIBLE = {
  dirty: 1n,
  corrupt: 2n,
  dataFile: 4n,
  compressionType: 8n,
  extendedL2: 16n,
} as const;

/** Longest backing file name the format allows, in bytes. */
export const MAX_BACKING_NAME = 1023;
/** Cluster bits qemu accepts: 512 bytes to 2 MiB. */
export const MIN_CLUSTER_BITS = 9;
/** Largest cluster (2 MiB) qemu can open. */
export const MAX_CLUSTER_BITS = 21;
/** qemu's limit on the L1 table (bytes). */
export const MAX_L1_BYTES = 32 * 1024 * 1024;
/** qemu's limit on the refcount table (bytes). */
export const MAX_REFTABLE_BYTES = 8 * 1024 * 1024;
/** Refcount width volt writes: 16 bits (`refcount_order` 4, qemu's default). */
export const REFCOUNT_ORDER = 4;

/**
 * Bits of L1/L2/refcount table entries. The upper 32 bits of an entry are given as numbers
 * (so a writer can fill tables with `setUint32` instead of BigInt arithmetic).
 */
export const ENTRY = {
  /** L1/L2 bit 63: refcount is exactly one (a plain, unshared cluster). */
  copiedHigh: 0x80000000,
  /** L2 bit 62: compressed cluster. */
  compressedHigh: 0x40000000,
  /** L2 bit 0 (v3 standard descriptor): the cluster reads as zeros. */
  zero: 1,
  /** Host offset bits 9–55 of an L1/L2 entry. */
  offsetMask: 0x00ff_ffff_ffff_fe00n,
} as const;

/** The sizes that follow from a virtual size and a cluster size. */
export interface Qcow2Geometry {
  clusterBits: number;
  clusterSize: number;
  /** Virtual size in bytes. */
  size: number;
  /** Guest clusters covering `size` (the last one may be partial). */
  clusters: number;
  /** Entries of one L2 table (`clusterSize / 8`). */
  l2Entries: number;
  /** Guest bytes one L2 table maps. */
  l2Span: number;
  /** Entries of the L1 table. */
  l1Size: number;
  /** Clusters the L1 table occupies. */
  l1Clusters: number;
}

/**
 * The table sizes for a disk of `size` bytes with clusters of `1 << clusterBits` bytes.
 * Throws `RangeError` beyond qemu's L1 limit.
 *
 * @example
 * ```ts
 * import { qcow2Geometry } from "./layout.ts";
 * const g = qcow2Geometry(2 ** 40, 16); // 1 TiB, 64 KiB clusters
 * console.assert(g.l2Span === 512 * 2 ** 20 && g.l1Size === 2048 && g.l1Clusters === 1);
 * ```
 */
export function qcow2Geometry(size: number, clusterBits: number): Qcow2Geometry {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`invalid disk size ${size}`);
  if (
    !Number.isInteger(clusterBits) || clusterBits < MIN_CLUSTER_BITS ||
    clusterBits > MAX_CLUSTER_BITS
  ) {
    throw new RangeError(`cluster bits ${clusterBits} out of range 9..21 (512 B to 2 MiB)`);
  }
  const clusterSize = 2 ** clusterBits;
  const l2Entries = clusterSize / 8;
  const l2Span = l2Entries * clusterSize;
  const clusters = Math.ceil(size / clusterSize);
  const l1Size = Math.ceil(clusters / l2Entries);
  if (l1Size * 8 > MAX_L1_BYTES) {
    throw new RangeError(
      `a ${size}-byte disk needs an L1 table larger than qemu's 32 MiB limit with ` +
        `${clusterSize}-byte clusters: use larger clusters`,
    );
  }
  const l1Clusters = Math.ceil((l1Size * 8) / clusterSize);
  return { clusterBits, clusterSize, size, clusters, l2Entries, l2Span, l1Size, l1Clusters };
}

/** Where the refcount structures go when they are appended after `usedClusters` clusters. */
export interface RefcountLayout {
  /** Refcount entries in one block. */
  blockEntries: number;
  /** Refcount blocks needed (they also count themselves and the table). */
  blocks: number;
  /** Clusters of the refcount table. */
  tableClusters: number;
  /** Clusters of the whole file: `usedClusters + blocks + tableClusters`. */
  totalClusters: number;
}

/**
 * How many refcount blocks and table clusters describe a file whose first `usedClusters`
 * clusters are taken, when the blocks and then the table are appended right after them (the
 * refcount structures must count themselves: the smallest fixed point).
 *
 * @example
 * ```ts
 * import { refcountLayout } from "./layout.ts";
 * const r = refcountLayout(16_400, 65536); // ~1 GiB of 64 KiB clusters
 * console.assert(r.blocks === 1 && r.tableClusters === 1 && r.totalClusters === 16_402);
 * ```
 */
export function refcountLayout(usedClusters: number, clusterSize: number): RefcountLayout {
  const blockEntries = (clusterSize * 8) / 2 ** REFCOUNT_ORDER;
  const tableEntries = clusterSize / 8;
  let blocks = 0;
  let tableClusters = 0;
  for (;;) {
    const total = usedClusters + blocks + tableClusters;
    const needBlocks = Math.ceil(total / blockEntries);
    const needTable = Math.max(1, Math.ceil(needBlocks / tableEntries));
    if (needBlocks === blocks && needTable === tableClusters) break;
    blocks = Math.max(blocks, needBlocks);
    tableClusters = Math.max(tableClusters, needTable);
  }
  if (tableClusters * clusterSize > MAX_REFTABLE_BYTES) {
    throw new RangeError(
      `an image of ${usedClusters} clusters needs a refcount table larger than qemu's 8 MiB ` +
        `limit: use larger clusters`,
    );
  }
  return {
    blockEntries,
    blocks,
    tableClusters,
    totalClusters: usedClusters + blocks + tableClusters,
  };
}
