/**
 * A streaming writer of NEW qcow2 (version 3) images, for backups: data clusters are appended
 * to the file in the order they arrive (sequential I/O, any guest order), and the metadata
 * (L2 tables, L1 table, refcount blocks and table, header) is appended once at
 * {@link Qcow2Writer.finish}. It has the shape of a copy-engine sink (`writeData`,
 * `writeZeroes`, `finish`, `abort`, `initiallyZero`), with a synchronous twin of each call.
 *
 * File layout after `finish()`, in clusters: `[header] [data…] [L2 tables] [L1 table]
 * [refcount blocks] [refcount table]`, 16-bit refcounts, every cluster referenced once.
 *
 * Until `finish()` returns, the file is NOT a valid image: its first cluster is still zeros
 * (no qcow2 magic), so nothing mistakes a half-written backup for a disk. Write into a
 * temporary directory and rename on commit.
 *
 * I/O: positioned `pwrite`s through libc (`ImageFile`, so `--allow-ffi`), into the page cache;
 * with `sync` (the default) writeback is started every 16 MiB and `finish()` ends with
 * `fdatasync`. The `*Sync` twins block the calling thread (meant for a copy engine's writer
 * Worker); the promise-returning calls run the writes on Deno's blocking thread pool.
 *
 * Memory: the L2 tables of touched regions only (4 bytes per guest cluster of a touched
 * 512 MiB region with 64 KiB clusters, i.e. 32 KiB per region; regions made wholly of zero
 * clusters cost nothing), plus partly written clusters of an image with a backing file.
 *
 * @module
 */

import { VoltError } from "../errors.ts";
import { ClusterMap, MAX_HOST_CLUSTER, UNALLOCATED, ZERO } from "./cluster_map.ts";
import { encodeQcow2Header } from "./header.ts";
import { ImageFile } from "./image_file.ts";
import { ENTRY, type Qcow2Geometry, qcow2Geometry, refcountLayout } from "./layout.ts";
import { PartialCluster } from "./partial_cluster.ts";

/** Options of {@link Qcow2Writer.create}. */
export interface Qcow2WriterOptions {
  /** Virtual disk size in bytes (rounded up to a multiple of 512, as `qemu-img create` does). */
  size: number;
  /** Cluster size: a power of two from 512 bytes to 2 MiB (default 64 KiB). */
  clusterSize?: number;
  /**
   * Backing file name, stored verbatim (a relative name is resolved by qemu from the image's
   * directory). Unwritten clusters then read from it; {@link Qcow2Writer.writeZeroes} hides it.
   */
  backingFile?: string;
  /** Format of the backing file, recorded in the header (default "qcow2"). */
  backingFormat?: "qcow2" | "raw";
  /** `fdatasync` the file in `finish()` (default true). */
  sync?: boolean;
  /** Permission bits of the new file (default 0o644, less the umask). */
  mode?: number;
}

/** Counters for a backup's statistics. */
export interface Qcow2WriterStats {
  /** Guest bytes given to `writeData`. */
  dataBytes: number;
  /** Guest bytes given to `writeZeroes`. */
  zeroBytes: number;
  /** Host clusters holding guest data. */
  dataClusters: number;
  /** Bytes written to the file so far: data and, after `finish()`, metadata. */
  bytesWritten: number;
  /** Bytes of metadata (header, L1/L2 and refcount tables); known after `finish()`. */
  metadataBytes: number;
  /** Size of the file: after `finish()` the image's size, before it the end of the data. */
  fileSize: number;
  /** Bytes of memory held for tables and partly written clusters. */
  memoryBytes: number;
}

/** One write to the file: `data` at file offset `pos`. */
interface FileWrite {
  pos: number;
  data: Uint8Array;
}

/** Largest buffer `finish()` assembles metadata in before writing it. */
const METADATA_BATCH = 4 * 1024 * 1024;
/** With `sync`, writeback of written data is started every this many bytes. */
const WRITEBACK_CHUNK = 16 * 1024 * 1024;

/**
 * Writes a new qcow2 v3 image. Each guest cluster should be written at most once (a second
 * write still works: data is rewritten in place, or the old cluster is left unreferenced).
 *
 * Writes should be whole clusters at cluster-aligned offsets (the last cluster of the disk may
 * be short). Smaller pieces are accepted too: without a backing file they are written in place
 * (the rest of the cluster reads as zeros); with a backing file a cluster is held in memory
 * until all its bytes have been given, and `finish()` refuses a cluster left incomplete (its
 * remainder would have to be copied from the backing file).
 *
 * Calls are serialized: the promise of a call settles after its bytes were handed to the
 * kernel, so the caller may reuse `data` then. Do not mix a `*Sync` call with an unsettled
 * asynchronous one.
 *
 * @example
 * ```ts
 * import { Qcow2Writer } from "./writer.ts";
 * const path = Deno.makeTempDirSync() + "/disk.qcow2";
 * const w = await Qcow2Writer.create(path, { size: 1 << 20 });
 * await w.writeData(65536, new Uint8Array(65536).fill(7));
 * await w.writeZeroes(0, 65536);
 * await w.finish();
 * console.assert(w.stats().dataClusters === 1);
 * ```
 */
export class Qcow2Writer {
  /** Path of the image. */
  readonly path: string;
  /** Virtual size in bytes (a multiple of 512). */
  readonly size: number;
  /** Cluster size in bytes. */
  readonly clusterSize: number;
  /** Backing file name as recorded, if any. */
  readonly backingFile: string | undefined;
  /** Backing format as recorded, if any. */
  readonly backingFormat: string | undefined;

  readonly #geometry: Qcow2Geometry;
  readonly #sync: boolean;
  #file: ImageFile | undefined;
  #written = 0; // file offset up to which data was written (high-water mark)
  #writebackFrom = 0; // file offset from which writeback has not been started
  #state: "open" | "finished" | "aborted" | "failed" = "open";
  #failure: unknown;
  #tail: Promise<void> = Promise.resolve();
  #pending = 0;
  readonly #map: ClusterMap;
  readonly #orphans = new Set<number>();
  readonly #partials = new Map<number, PartialCluster>();
  #nextHost = 1; // cluster 0 is the header
  #dataClusters = 0;
  #dataBytes = 0;
  #zeroBytes = 0;
  #bytesWritten = 0;
  #metadataBytes = 0;
  #fileSize = 0;
  #zeros: Uint8Array | undefined;

  private constructor(
    path: string,
    file: ImageFile,
    geometry: Qcow2Geometry,
    options: Qcow2WriterOptions,
  ) {
    this.path = path;
    this.#file = file;
    this.#geometry = geometry;
    this.size = geometry.size;
    this.clusterSize = geometry.clusterSize;
    this.backingFile = options.backingFile;
    this.backingFormat = options.backingFile === undefined
      ? undefined
      : options.backingFormat ?? "qcow2";
    this.#sync = options.sync ?? true;
    this.#map = new ClusterMap(geometry.l2Entries, geometry.clusters, (host) => {
      this.#orphans.add(host);
      this.#dataClusters--;
    });
    this.#fileSize = this.clusterSize;
  }

  /**
   * Creates the file (it must not exist) and returns a writer for it. Throws `RangeError` for
   * an invalid size, cluster size or backing name, `VoltError` when the file cannot be created.
   */
  static create(path: string, options: Qcow2WriterOptions): Promise<Qcow2Writer> {
    try {
      return Promise.resolve(Qcow2Writer.createSync(path, options));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** {@link Qcow2Writer.create}, synchronously. */
  static createSync(path: string, options: Qcow2WriterOptions): Qcow2Writer {
    const geometry = prepare(options);
    const file = ImageFile.create(path, options.mode ?? 0o644);
    return new Qcow2Writer(path, file, geometry, options);
  }

  /**
   * True without a backing file: the image reads as zeros before anything is written, so a
   * copy engine need not send zero ranges (it may; they cost nothing).
   */
  get initiallyZero(): boolean {
    return this.backingFile === undefined;
  }

  /** Bytes written to the file so far (data, and metadata after `finish()`). */
  get bytesWritten(): number {
    return this.#bytesWritten;
  }

  /** The writer's counters. */
  stats(): Qcow2WriterStats {
    let partialBytes = 0;
    for (const p of this.#partials.values()) partialBytes += p.bytes.byteLength;
    return {
      dataBytes: this.#dataBytes,
      zeroBytes: this.#zeroBytes,
      dataClusters: this.#dataClusters,
      bytesWritten: this.#bytesWritten,
      metadataBytes: this.#metadataBytes,
      fileSize: this.#state === "finished"
        ? this.#fileSize
        : Math.max(this.#fileSize, this.#nextHost * this.clusterSize),
      memoryBytes: this.#map.memoryBytes + partialBytes,
    };
  }

  /**
   * Writes guest bytes `data` at guest `offset`. Whole clusters are appended to the file;
   * see the class documentation for smaller pieces. Bytes past the virtual size within its
   * last cluster (padding) are ignored.
   */
  writeData(offset: number, data: Uint8Array): Promise<void> {
    return this.#enqueue(() => this.#planData(offset, data));
  }

  /** {@link Qcow2Writer.writeData}, synchronously. */
  writeDataSync(offset: number, data: Uint8Array): void {
    this.#runSync(this.#planData(offset, data));
  }

  /**
   * Makes guest range `[offset, offset + length)` read as zeros: zero clusters (zero flag, no
   * data) with a backing file, so the backing file's data is hidden; unallocated clusters
   * without one. Costs no table memory for ranges covering whole L2 regions.
   */
  writeZeroes(offset: number, length: number): Promise<void> {
    return this.#enqueue(() => this.#planZeroes(offset, length));
  }

  /** {@link Qcow2Writer.writeZeroes}, synchronously. */
  writeZeroesSync(offset: number, length: number): void {
    this.#runSync(this.#planZeroes(offset, length));
  }

  /**
   * Appends the L2 tables, L1 table and refcount structures, writes the header (with the
   * backing file name and its format extension), `fdatasync`s (unless `sync: false`) and
   * closes the file. Afterwards `qemu-img check` finds no errors and no leaks.
   */
  finish(): Promise<void> {
    return this.#enqueue(() => this.#planFinish(), () => this.#closeAsync());
  }

  /** {@link Qcow2Writer.finish}, synchronously. */
  finishSync(): void {
    this.#runSync(this.#planFinish());
    try {
      this.#closeSync();
    } catch (err) {
      throw this.#fail(err);
    }
  }

  /**
   * Gives up: waits for a write in flight, closes and removes the file. Safe to call in any
   * state and more than once; after `finish()` it does nothing (the image stays).
   */
  async abort(_reason?: unknown): Promise<void> {
    await this.#tail.catch(() => {});
    this.abortSync();
  }

  /**
   * {@link Qcow2Writer.abort}, synchronously. The file is removed at once; with an
   * asynchronous write in flight, its descriptor is closed when that write returns.
   */
  abortSync(_reason?: unknown): void {
    if (this.#state === "finished" || this.#state === "aborted") return;
    this.#state = "aborted";
    this.#partials.clear();
    try {
      Deno.removeSync(this.path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    } finally {
      if (this.#pending === 0) this.#closeFile();
    }
  }

  /** Aborts unless finished, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.abort();
  }

  // ---- planning: each yields the file writes of one call, updating the map as it goes ----

  *#planData(offset: number, data: Uint8Array): Generator<FileWrite> {
    this.#checkOpen();
    let end = offset + data.length;
    const lastClusterEnd = this.#geometry.clusters * this.clusterSize;
    if (end > this.size && end <= lastClusterEnd && offset < this.size) end = this.size;
    this.#checkRange(offset, end - offset, "writeData");
    if (end <= offset) return;
    this.#dataBytes += end - offset;
    const cs = this.clusterSize;
    // A run of whole clusters that land in consecutive host clusters: one write.
    let runPos = -1;
    let runStart = 0; // offset in data
    let runEnd = 0;
    for (let c = Math.floor(offset / cs); c * cs < end; c++) {
      const cStart = c * cs;
      const cEnd = Math.min(cStart + cs, this.size);
      const pStart = Math.max(offset, cStart);
      const pEnd = Math.min(end, cEnd);
      const piece = data.subarray(pStart - offset, pEnd - offset);
      if (pStart === cStart && pEnd === cEnd) {
        this.#partials.delete(c);
        const host = this.#hostFor(c);
        if (runPos >= 0 && host * cs === runPos + (runEnd - runStart)) {
          runEnd += piece.length;
          continue;
        }
        if (runPos >= 0) yield { pos: runPos, data: data.subarray(runStart, runEnd) };
        runPos = host * cs;
        runStart = pStart - offset;
        runEnd = runStart + piece.length;
        continue;
      }
      if (runPos >= 0) yield { pos: runPos, data: data.subarray(runStart, runEnd) };
      runPos = -1;
      yield* this.#planPiece(c, pStart - cStart, piece, piece.length);
    }
    if (runPos >= 0) yield { pos: runPos, data: data.subarray(runStart, runEnd) };
  }

  *#planZeroes(offset: number, length: number): Generator<FileWrite> {
    this.#checkOpen();
    let end = offset + length;
    if (end > this.size && end <= this.#geometry.clusters * this.clusterSize) end = this.size;
    this.#checkRange(offset, end - offset, "writeZeroes");
    if (end <= offset) return;
    this.#zeroBytes += end - offset;
    const cs = this.clusterSize;
    const first = Math.ceil(offset / cs);
    const last = end === this.size ? this.#geometry.clusters : Math.floor(end / cs);
    if (first >= last) {
      // Within one cluster, or spanning two partial ones.
      for (let c = Math.floor(offset / cs); c * cs < end; c++) {
        const s = Math.max(offset, c * cs);
        const e = Math.min(end, c * cs + cs, this.size);
        yield* this.#planPiece(c, s - c * cs, undefined, e - s);
      }
      return;
    }
    if (offset < first * cs) {
      const c = first - 1;
      yield* this.#planPiece(c, offset - c * cs, undefined, first * cs - offset);
    }
    for (const c of [...this.#partials.keys()]) {
      if (c >= first && c < last) this.#partials.delete(c);
    }
    this.#map.setRange(first, last - first, this.backingFile === undefined ? UNALLOCATED : ZERO);
    if (end > last * cs) yield* this.#planPiece(last, 0, undefined, end - last * cs);
  }

  /** A piece of cluster `c` at `start` within it: `data`, or `length` zeros. */
  *#planPiece(
    c: number,
    start: number,
    data: Uint8Array | undefined,
    length: number,
  ): Generator<FileWrite> {
    const cs = this.clusterSize;
    const entry = this.#map.get(c);
    if (entry !== UNALLOCATED && entry !== ZERO) {
      // The cluster holds data already: change it in place.
      yield { pos: entry * cs + start, data: data ?? this.#zeroBuffer(length) };
      return;
    }
    if (entry === ZERO || this.backingFile === undefined) {
      // The rest of the cluster reads as zeros: a fresh cluster (a hole in the file) is right.
      if (data === undefined) return;
      yield { pos: this.#hostFor(c) * cs + start, data };
      return;
    }
    // Unallocated over a backing file: keep the pieces until the cluster is complete.
    let p = this.#partials.get(c);
    if (p === undefined) {
      p = new PartialCluster(Math.min(cs, this.size - c * cs));
      this.#partials.set(c, p);
    }
    p.add(start, data, length);
    if (!p.complete) return;
    this.#partials.delete(c);
    if (p.hasData) yield { pos: this.#hostFor(c) * cs, data: p.bytes };
    else this.#map.set(c, ZERO);
  }

  *#planFinish(): Generator<FileWrite> {
    this.#checkOpen();
    for (const [c, p] of this.#partials) {
      const [gs, ge] = p.firstGap();
      const base = c * this.clusterSize;
      throw new RangeError(
        `${this.path}: guest bytes ${base + gs}..${base + ge} of the cluster at ${base} were ` +
          `never written; over a backing file the rest of a partly written cluster would have ` +
          `to come from it: write whole ${this.clusterSize}-byte clusters`,
      );
    }
    const cs = this.clusterSize;
    const g = this.#geometry;
    const tables = this.#map.tableIndices();
    const l2Host = this.#nextHost;
    const l1Host = l2Host + tables.length;
    const used = l1Host + g.l1Clusters;
    const rc = refcountLayout(used, cs);
    const blocksHost = used;
    const tableHost = used + rc.blocks;
    if (rc.totalClusters - 1 > MAX_HOST_CLUSTER) {
      throw new RangeError(`${this.path}: image larger than ${MAX_HOST_CLUSTER} clusters`);
    }
    const batch = new Batch(cs, Math.max(cs, Math.min(METADATA_BATCH, tables.length * cs)));

    // L2 tables, in L1 order.
    for (let i = 0; i < tables.length; i++) {
      this.#map.encode(tables[i], cs, batch.next());
      if (batch.full) yield batch.take((l2Host + i + 1) * cs);
    }
    if (!batch.empty) yield batch.take(l1Host * cs);

    // L1 table.
    if (g.l1Clusters > 0) {
      const l1 = new Uint8Array(g.l1Clusters * cs);
      const v = new DataView(l1.buffer);
      for (let i = 0; i < tables.length; i++) {
        const offset = (l2Host + i) * cs;
        v.setUint32(tables[i] * 8, ENTRY.copiedHigh | Math.floor(offset / 2 ** 32));
        v.setUint32(tables[i] * 8 + 4, offset % 2 ** 32);
      }
      yield { pos: l1Host * cs, data: l1 };
    }

    // Refcount blocks: 1 for every cluster of the file except data clusters no longer used.
    const orphansByBlock = new Map<number, number[]>();
    for (const host of this.#orphans) {
      const b = Math.floor(host / rc.blockEntries);
      orphansByBlock.set(b, [...(orphansByBlock.get(b) ?? []), host]);
    }
    let ones: Uint8Array | undefined;
    const rbBatch = new Batch(cs, Math.max(cs, Math.min(METADATA_BATCH, rc.blocks * cs)));
    for (let b = 0; b < rc.blocks; b++) {
      const first = b * rc.blockEntries;
      const count = Math.min(rc.blockEntries, rc.totalClusters - first);
      const orphans = orphansByBlock.get(b);
      const out = rbBatch.next();
      if (count === rc.blockEntries && orphans === undefined) {
        ones ??= refcountOnes(cs);
        out.set(ones);
      } else {
        out.fill(0);
        const v = new DataView(out.buffer, out.byteOffset, out.byteLength);
        for (let i = 0; i < count; i++) v.setUint16(i * 2, 1);
        for (const host of orphans ?? []) v.setUint16((host - first) * 2, 0);
      }
      if (rbBatch.full) yield rbBatch.take((blocksHost + b + 1) * cs);
    }
    if (!rbBatch.empty) yield rbBatch.take(tableHost * cs);

    // Refcount table.
    const table = new Uint8Array(rc.tableClusters * cs);
    const tv = new DataView(table.buffer);
    for (let b = 0; b < rc.blocks; b++) tv.setBigUint64(b * 8, BigInt((blocksHost + b) * cs));
    yield { pos: tableHost * cs, data: table };

    // Header last: from here on the file is an image.
    const header = encodeQcow2Header({
      size: this.size,
      clusterBits: g.clusterBits,
      l1Size: g.l1Size,
      l1TableOffset: l1Host * cs,
      refcountTableOffset: tableHost * cs,
      refcountTableClusters: rc.tableClusters,
      backingFile: this.backingFile,
      backingFormat: this.backingFormat,
    });
    yield { pos: 0, data: header };
    this.#metadataBytes = (rc.totalClusters - (l2Host - 1)) * cs;
    this.#fileSize = rc.totalClusters * cs;
  }

  // ---- helpers ----

  /** The host cluster of guest cluster `c` for new data: its own if it has one, else a new. */
  #hostFor(c: number): number {
    const entry = this.#map.get(c);
    if (entry !== UNALLOCATED && entry !== ZERO) return entry;
    if (this.#nextHost > MAX_HOST_CLUSTER) {
      throw new RangeError(`${this.path}: more than ${MAX_HOST_CLUSTER} data clusters`);
    }
    const host = this.#nextHost++;
    this.#map.set(c, host);
    this.#dataClusters++;
    return host;
  }

  #zeroBuffer(length: number): Uint8Array {
    if (this.#zeros === undefined || this.#zeros.length < length) {
      this.#zeros = new Uint8Array(this.clusterSize);
    }
    return this.#zeros.subarray(0, length);
  }

  #checkOpen(): void {
    if (this.#state === "open") return;
    if (this.#state === "failed") {
      throw new VoltError(`${this.path}: the qcow2 writer failed earlier`, {
        cause: this.#failure,
      });
    }
    throw new Error(`${this.path}: the qcow2 writer is ${this.#state}`);
  }

  #checkRange(offset: number, length: number, what: string): void {
    if (
      !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 ||
      length < 0 || offset + length > this.size
    ) {
      throw new RangeError(
        `${what}(${offset}, ${length}) is outside the ${this.size}-byte disk of ${this.path}`,
      );
    }
  }

  #runSync(writes: Iterator<FileWrite>): void {
    if (this.#pending > 0) {
      throw new Error(`${this.path}: a *Sync call while an asynchronous one is in flight`);
    }
    try {
      for (let w = writes.next(); !w.done; w = writes.next()) this.#writeAtSync(w.value);
    } catch (err) {
      throw this.#fail(err);
    }
  }

  #enqueue(plan: () => Iterator<FileWrite>, after?: () => Promise<void>): Promise<void> {
    this.#pending++;
    const run = async () => {
      try {
        const writes = plan();
        for (let w = writes.next(); !w.done; w = writes.next()) await this.#writeAt(w.value);
        await after?.();
      } catch (err) {
        throw this.#fail(err);
      } finally {
        if (--this.#pending === 0 && this.#state === "aborted") this.#closeFile();
      }
    };
    const p = this.#tail.then(run);
    this.#tail = p.catch(() => {});
    return p;
  }

  /** Marks the writer failed on an I/O error; usage errors leave it usable. */
  #fail(err: unknown): unknown {
    if (err instanceof RangeError || this.#state !== "open") return err;
    this.#state = "failed";
    this.#failure = err;
    if (err instanceof VoltError) return err;
    const msg = err instanceof Error ? err.message : String(err);
    return new VoltError(`writing qcow2 image ${this.path} failed: ${msg}`, { cause: err });
  }

  #writeAtSync(w: FileWrite): void {
    this.#file!.writeSync(w.data, w.pos);
    this.#wrote(w);
  }

  async #writeAt(w: FileWrite): Promise<void> {
    await this.#file!.write(w.data, w.pos);
    this.#wrote(w);
  }

  /** Counts a write; with `sync`, starts writeback of each new stretch of the file. */
  #wrote(w: FileWrite): void {
    this.#bytesWritten += w.data.length;
    this.#written = Math.max(this.#written, w.pos + w.data.length);
    if (this.#sync && this.#written - this.#writebackFrom >= WRITEBACK_CHUNK) {
      this.#file!.startWriteback(this.#writebackFrom, this.#written - this.#writebackFrom);
      this.#writebackFrom = this.#written;
    }
  }

  #closeSync(): void {
    if (this.#sync) this.#file!.syncSync();
    this.#finished();
  }

  async #closeAsync(): Promise<void> {
    if (this.#sync) await this.#file!.sync();
    this.#finished();
  }

  #finished(): void {
    this.#checkOpen(); // aborted meanwhile: the file is gone, finish() fails
    this.#file!.close();
    this.#file = undefined;
    this.#state = "finished";
  }

  #closeFile(): void {
    try {
      this.#file?.close();
    } catch { /* closing after a failure: nothing more to do */ }
    this.#file = undefined;
  }
}

/**
 * Whether every byte of `bytes` is zero: the test a caller runs to send a block as
 * `writeZeroes` instead of `writeData`.
 *
 * @example
 * ```ts
 * import { isZero } from "./writer.ts";
 * console.assert(isZero(new Uint8Array(4096)) && !isZero(new Uint8Array([0, 0, 1])));
 * ```
 */
export function isZero(bytes: Uint8Array): boolean {
  const n = bytes.length;
  let i = 0;
  // Bytes until a 4-byte boundary, then 32-bit words, then the tail.
  while (i < n && (bytes.byteOffset + i) % 4 !== 0) if (bytes[i++] !== 0) return false;
  const words = Math.floor((n - i) / 4);
  if (words > 0) {
    const u32 = new Uint32Array(bytes.buffer, bytes.byteOffset + i, words);
    // OR a stretch together before testing: fewer branches on the common all-zero path.
    for (let w = 0; w < words;) {
      const stop = Math.min(words, w + 256);
      let acc = 0;
      for (; w < stop; w++) acc |= u32[w];
      if (acc !== 0) return false;
    }
    i += words * 4;
  }
  while (i < n) if (bytes[i++] !== 0) return false;
  return true;
}

/** Validates the options (encoding a header proves the backing name fits). */
function prepare(options: Qcow2WriterOptions): Qcow2Geometry {
  const clusterSize = options.clusterSize ?? 65536;
  const clusterBits = Math.log2(clusterSize);
  if (!Number.isInteger(clusterBits)) {
    throw new RangeError(`cluster size ${clusterSize} is not a power of two (512 B to 2 MiB)`);
  }
  if (!Number.isSafeInteger(options.size) || options.size < 0) {
    throw new RangeError(`invalid disk size ${options.size}`);
  }
  const size = Math.ceil(options.size / 512) * 512;
  const geometry = qcow2Geometry(size, clusterBits);
  const backingFormat = options.backingFile === undefined
    ? undefined
    : options.backingFormat ?? "qcow2";
  if (backingFormat !== undefined && backingFormat !== "qcow2" && backingFormat !== "raw") {
    throw new RangeError(`backing format ${backingFormat} is not qcow2 or raw`);
  }
  if (options.backingFile?.includes("\0")) {
    throw new RangeError("backing file name contains a NUL byte");
  }
  encodeQcow2Header({
    size,
    clusterBits,
    l1Size: geometry.l1Size,
    l1TableOffset: 0,
    refcountTableOffset: 0,
    refcountTableClusters: 0,
    backingFile: options.backingFile,
    backingFormat,
  });
  return geometry;
}

/** One refcount block with every entry 1 (16-bit big-endian). */
function refcountOnes(clusterSize: number): Uint8Array {
  const b = new Uint8Array(clusterSize);
  for (let i = 1; i < clusterSize; i += 2) b[i] = 1;
  return b;
}

/** Clusters of metadata assembled in one buffer and written together. */
class Batch {
  readonly #buf: Uint8Array;
  readonly #cs: number;
  #used = 0;

  constructor(clusterSize: number, bytes: number) {
    this.#cs = clusterSize;
    this.#buf = new Uint8Array(Math.floor(bytes / clusterSize) * clusterSize);
  }

  get full(): boolean {
    return this.#used === this.#buf.length;
  }

  get empty(): boolean {
    return this.#used === 0;
  }

  /** The next cluster of the batch, to fill. */
  next(): Uint8Array {
    const out = this.#buf.subarray(this.#used, this.#used + this.#cs);
    this.#used += this.#cs;
    return out;
  }

  /** The filled clusters as one write that ends at file offset `end`. */
  take(end: number): FileWrite {
    const data = this.#buf.subarray(0, this.#used);
    this.#used = 0;
    return { pos: end - data.length, data };
  }
}
