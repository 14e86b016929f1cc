/**
 * The qcow2 header: reading it ourselves, so that volt can judge an image's backing file and
 * external data file BEFORE qemu opens anything (a crafted image could otherwise make qemu
 * read `/etc/passwd` or a `json:` pseudo-file). Layout: docs/formats.md and QEMU's
 * `docs/interop/qcow2.txt`; all fields big-endian. Field offsets live in `layout.ts`.
 * {@link encodeQcow2Header} is the writing side, used by the qcow2 writer.
 *
 * @module
 */

import {
  EXTENSION,
  HEADER,
  HEADER_V2_LENGTH,
  HEADER_V3_LENGTH,
  INCOMPATIBLE,
  MAX_BACKING_NAME,
  MAX_CLUSTER_BITS,
  MIN_CLUSTER_BITS,
  QCOW2_MAGIC,
  REFCOUNT_ORDER,
} from "./layout.ts";

/** The facts of a qcow2 header that matter for safety and sizing. */
export interface Qcow2Header {
  version: number;
  /** Virtual size in bytes. */
  size: number;
  clusterBits: number;
  /** Backing file name exactly as recorded, if any. */
  backingFile?: string;
  /** Backing format from the header extension, if recorded. */
  backingFormat?: string;
  /** External data file name, if the image uses one. */
  dataFile?: string;
  /** Incompatible feature bits (bit 2: external data file, bit 4: extended L2). */
  incompatibleFeatures: bigint;
  /** Number of internal snapshots. */
  snapshots: number;
  /** Encryption method (0: none). */
  cryptMethod: number;
}

const HEADER_READ = 65536;

/** Does the file start with the qcow2 magic? Missing or short files are not qcow2. */
export async function isQcow2(path: string): Promise<boolean> {
  const buf = await readAt(path, 0, 4).catch(() => new Uint8Array(0));
  return buf.length === 4 && new DataView(buf.buffer).getUint32(HEADER.magic) === QCOW2_MAGIC;
}

/**
 * Parses the header of the qcow2 file at `path`. Throws `SyntaxError` naming the file when it
 * is not qcow2 or its header is inconsistent.
 *
 * @example
 * ```ts ignore
 * import { readQcow2Header } from "./header.ts";
 * const h = await readQcow2Header("disk.qcow2");
 * if (h.backingFile) console.log("backed by", h.backingFile);
 * ```
 */
export async function readQcow2Header(path: string): Promise<Qcow2Header> {
  const buf = await readAt(path, 0, HEADER_READ);
  return parseQcow2Header(buf, path, (off, len) => readAt(path, off, len));
}

/** Parses a header from its first bytes; `readMore` fetches a backing name beyond them. */
export async function parseQcow2Header(
  buf: Uint8Array,
  name: string,
  readMore: (offset: number, length: number) => Promise<Uint8Array>,
): Promise<Qcow2Header> {
  const bad = (why: string) => new SyntaxError(`${name}: not a valid qcow2 image: ${why}`);
  if (buf.length < HEADER_V2_LENGTH) throw bad("file shorter than a qcow2 header");
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (v.getUint32(HEADER.magic) !== QCOW2_MAGIC) throw bad("no qcow2 magic");
  const version = v.getUint32(HEADER.version);
  if (version !== 2 && version !== 3) throw bad(`unsupported version ${version}`);
  const backingOffset = Number(v.getBigUint64(HEADER.backingFileOffset));
  const backingSize = v.getUint32(HEADER.backingFileSize);
  const clusterBits = v.getUint32(HEADER.clusterBits);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw bad(`cluster bits ${clusterBits} out of range`);
  }
  const size = Number(v.getBigUint64(HEADER.size));
  const cryptMethod = v.getUint32(HEADER.cryptMethod);
  const snapshots = v.getUint32(HEADER.nbSnapshots);
  let incompatibleFeatures = 0n;
  let headerLength = HEADER_V2_LENGTH;
  if (version === 3) {
    if (buf.length < HEADER_V3_LENGTH) throw bad("version 3 header truncated");
    incompatibleFeatures = v.getBigUint64(HEADER.incompatibleFeatures);
    headerLength = v.getUint32(HEADER.headerLength);
    if (headerLength < HEADER_V3_LENGTH || headerLength > buf.length) {
      throw bad(`header length ${headerLength}`);
    }
  }
  const dec = new TextDecoder("utf-8", { fatal: true });
  const text = (bytes: Uint8Array) => {
    try {
      return dec.decode(bytes);
    } catch {
      throw bad("a file name in the header is not UTF-8");
    }
  };

  let backingFile: string | undefined;
  if (backingOffset !== 0 && backingSize > 0) {
    if (backingSize > MAX_BACKING_NAME) throw bad(`backing file name of ${backingSize} bytes`);
    const bytes = backingOffset + backingSize <= buf.length
      ? buf.subarray(backingOffset, backingOffset + backingSize)
      : await readMore(backingOffset, backingSize);
    if (bytes.length !== backingSize) throw bad("backing file name past end of file");
    backingFile = text(bytes);
  }

  let backingFormat: string | undefined;
  let dataFile: string | undefined;
  // Header extensions: {u32 type, u32 length, data padded to 8 bytes} until type 0.
  for (let off = headerLength; off + 8 <= buf.length;) {
    const type = v.getUint32(off);
    const len = v.getUint32(off + 4);
    if (type === EXTENSION.end) break;
    const start = off + 8;
    if (start + len > buf.length) throw bad("header extension past the first 64 KiB");
    if (type === EXTENSION.backingFormat) backingFormat = text(buf.subarray(start, start + len));
    if (type === EXTENSION.dataFile) dataFile = text(buf.subarray(start, start + len));
    off = start + Math.ceil(len / 8) * 8;
  }
  if ((incompatibleFeatures & INCOMPATIBLE.dataFile) !== 0n && dataFile === undefined) {
    // The data file bit without a name still means "data lives elsewhere".
    dataFile = "";
  }
  return {
    version,
    size,
    clusterBits,
    backingFile,
    backingFormat,
    dataFile,
    incompatibleFeatures,
    snapshots,
    cryptMethod,
  };
}

/** What {@link encodeQcow2Header} writes: a version 3 header with 16-bit refcounts. */
export interface Qcow2HeaderFields {
  /** Virtual size in bytes. */
  size: number;
  clusterBits: number;
  /** Entries of the L1 table. */
  l1Size: number;
  /** File offset of the L1 table (cluster-aligned). */
  l1TableOffset: number;
  /** File offset of the refcount table (cluster-aligned). */
  refcountTableOffset: number;
  refcountTableClusters: number;
  /** Backing file name, stored verbatim (qemu resolves a relative one from the image's dir). */
  backingFile?: string;
  /** Backing format recorded in the backing-format header extension. */
  backingFormat?: string;
}

/**
 * Encodes a version 3 header: the 104-byte header, the backing-format extension (when there
 * is a backing file), the end-of-extensions marker, then the backing file name, all within the
 * first cluster as the format requires. Throws `RangeError` when the name does not fit.
 *
 * @example
 * ```ts
 * import { encodeQcow2Header, parseQcow2Header } from "./header.ts";
 * const bytes = encodeQcow2Header({
 *   size: 1 << 20, clusterBits: 16, l1Size: 1, l1TableOffset: 65536,
 *   refcountTableOffset: 131072, refcountTableClusters: 1,
 *   backingFile: "base.qcow2", backingFormat: "qcow2",
 * });
 * const h = await parseQcow2Header(bytes, "x", () => Promise.resolve(new Uint8Array()));
 * console.assert(h.backingFile === "base.qcow2" && h.backingFormat === "qcow2");
 * ```
 */
export function encodeQcow2Header(fields: Qcow2HeaderFields): Uint8Array {
  const enc = new TextEncoder();
  const name = fields.backingFile === undefined ? undefined : enc.encode(fields.backingFile);
  const format = name === undefined || fields.backingFormat === undefined
    ? undefined
    : enc.encode(fields.backingFormat);
  if (name !== undefined && (name.length === 0 || name.length > MAX_BACKING_NAME)) {
    throw new RangeError(`backing file name of ${name.length} bytes (1 to 1023 allowed)`);
  }
  const pad8 = (n: number) => Math.ceil(n / 8) * 8;
  const extEnd = HEADER_V3_LENGTH + (format ? 8 + pad8(format.length) : 0) + 8;
  const length = extEnd + (name?.length ?? 0);
  const clusterSize = 2 ** fields.clusterBits;
  if (length > clusterSize) {
    throw new RangeError(
      `the qcow2 header and backing file name take ${length} bytes, more than one ` +
        `${clusterSize}-byte cluster: use a shorter name or larger clusters`,
    );
  }
  const buf = new Uint8Array(length);
  const v = new DataView(buf.buffer);
  const u64 = (at: number, value: number) => v.setBigUint64(at, BigInt(value));
  v.setUint32(HEADER.magic, QCOW2_MAGIC);
  v.setUint32(HEADER.version, 3);
  if (name) {
    u64(HEADER.backingFileOffset, extEnd);
    v.setUint32(HEADER.backingFileSize, name.length);
    buf.set(name, extEnd);
  }
  v.setUint32(HEADER.clusterBits, fields.clusterBits);
  u64(HEADER.size, fields.size);
  v.setUint32(HEADER.l1Size, fields.l1Size);
  u64(HEADER.l1TableOffset, fields.l1TableOffset);
  u64(HEADER.refcountTableOffset, fields.refcountTableOffset);
  v.setUint32(HEADER.refcountTableClusters, fields.refcountTableClusters);
  v.setUint32(HEADER.refcountOrder, REFCOUNT_ORDER);
  v.setUint32(HEADER.headerLength, HEADER_V3_LENGTH);
  if (format) {
    v.setUint32(HEADER_V3_LENGTH, EXTENSION.backingFormat);
    v.setUint32(HEADER_V3_LENGTH + 4, format.length);
    buf.set(format, HEADER_V3_LENGTH + 8);
  }
  // The end marker (type 0, length 0) is already zero.
  return buf;
}

async function readAt(path: string, offset: number, length: number): Promise<Uint8Array> {
  using f = await Deno.open(path, { read: true });
  await f.seek(offset, Deno.SeekMode.Start);
  const buf = new Uint8Array(length);
  let got = 0;
  while (got < length) {
    const n = await f.read(buf.subarray(got));
    if (n === null) break;
    got += n;
  }
  return buf.subarray(0, got);
}
