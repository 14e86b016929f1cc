/**
 * Reading a qcow2 header ourselves, so that volt can judge an image's backing file and
 * external data file BEFORE qemu opens anything (a crafted image could otherwise make qemu
 * read `/etc/passwd` or a `json:` pseudo-file). Layout: docs/formats.md and QEMU's
 * `docs/interop/qcow2.txt`; all fields big-endian.
 *
 * @module
 */

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

const MAGIC = 0x514649fb; // "QFI\xfb"
const EXT_BACKING_FORMAT = 0xe2792aca;
const EXT_DATA_FILE = 0x44415441;
const HEADER_READ = 65536;

/** Does the file start with the qcow2 magic? Missing or short files are not qcow2. */
export async function isQcow2(path: string): Promise<boolean> {
  const buf = await readAt(path, 0, 4).catch(() => new Uint8Array(0));
  return buf.length === 4 && new DataView(buf.buffer).getUint32(0) === MAGIC;
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
  if (buf.length < 72) throw bad("file shorter than a qcow2 header");
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (v.getUint32(0) !== MAGIC) throw bad("no qcow2 magic");
  const version = v.getUint32(4);
  if (version !== 2 && version !== 3) throw bad(`unsupported version ${version}`);
  const backingOffset = Number(v.getBigUint64(8));
  const backingSize = v.getUint32(16);
  const clusterBits = v.getUint32(20);
  if (clusterBits < 9 || clusterBits > 21) throw bad(`cluster bits ${clusterBits} out of range`);
  const size = Number(v.getBigUint64(24));
  const cryptMethod = v.getUint32(32);
  const snapshots = v.getUint32(60);
  let incompatibleFeatures = 0n;
  let headerLength = 72;
  if (version === 3) {
    if (buf.length < 104) throw bad("version 3 header truncated");
    incompatibleFeatures = v.getBigUint64(72);
    headerLength = v.getUint32(100);
    if (headerLength < 104 || headerLength > buf.length) throw bad(`header length ${headerLength}`);
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
    if (backingSize > 1023) throw bad(`backing file name of ${backingSize} bytes`);
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
    if (type === 0) break;
    const start = off + 8;
    if (start + len > buf.length) throw bad("header extension past the first 64 KiB");
    if (type === EXT_BACKING_FORMAT) backingFormat = text(buf.subarray(start, start + len));
    if (type === EXT_DATA_FILE) dataFile = text(buf.subarray(start, start + len));
    off = start + Math.ceil(len / 8) * 8;
  }
  if ((incompatibleFeatures & 4n) !== 0n && dataFile === undefined) {
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
