/**
 * A backup image writer that hashes its file while it is written: a {@link CallbackSink} in
 * front of a {@link Qcow2Writer} that tells a {@link GrowingDigest} how far the file is final.
 *
 * The writer appends each data cluster once, in arrival order, after the header cluster; the
 * header, tables and refcounts come at `finish()`. So every byte below the end of the data is
 * final once its write returned, unless a cluster is written twice or in pieces (the writer
 * then writes into a cluster it placed earlier): this sink notices that from the guest offsets
 * and falls back to hashing the whole file at the end.
 *
 * @module
 */

import type { CallbackSink } from "../nbd/sink.ts";
import type { Qcow2Writer } from "../qcow2/writer.ts";
import { type FileDigest, GrowingDigest } from "./checksum.ts";

/** Largest disk (in clusters) whose written clusters are tracked: 16 MiB of bits. */
const MAX_TRACKED_CLUSTERS = 2 ** 27;

/**
 * Forwards to `writer` and hashes its file as it grows; {@link DigestingSink.digest} resolves
 * after `finish()`.
 *
 * @example
 * ```ts
 * import { Qcow2Writer } from "../qcow2/writer.ts";
 * import { DigestingSink } from "./digest_sink.ts";
 * const path = Deno.makeTempDirSync() + "/d.qcow2";
 * const sink = new DigestingSink(await Qcow2Writer.create(path, { size: 1 << 20 }));
 * await sink.writeData(0, new Uint8Array(65536).fill(1));
 * await sink.finish();
 * console.assert((await sink.digest()).digest.startsWith("sha256-64m:"));
 * ```
 */
export class DigestingSink implements CallbackSink {
  readonly writer: Qcow2Writer;
  readonly #digest: GrowingDigest;
  readonly #seen: Uint8Array | undefined;
  readonly #cluster: number;
  #result: Promise<FileDigest> | undefined;

  constructor(writer: Qcow2Writer) {
    this.writer = writer;
    this.#digest = new GrowingDigest(writer.path);
    this.#cluster = writer.clusterSize;
    const clusters = Math.ceil(writer.size / this.#cluster);
    if (clusters <= MAX_TRACKED_CLUSTERS) this.#seen = new Uint8Array(Math.ceil(clusters / 8));
    else this.#digest.invalidate();
  }

  get initiallyZero(): boolean {
    return this.writer.initiallyZero;
  }

  /** Marks the clusters of a write; anything but whole, first-time clusters invalidates. */
  #track(offset: number, length: number): void {
    if (!this.#seen || length === 0) return;
    const cs = this.#cluster;
    const end = offset + length;
    if (offset % cs !== 0 || (end % cs !== 0 && end < this.writer.size)) {
      return;
    }
    for (let c = offset / cs; c * cs < end; c++) {
      const bit = 1 << (c & 7);
      if (this.#seen[c >> 3] & bit) {
        return;
      }
      this.#seen[c >> 3] |= bit;
    }
  }

  async writeData(offset: number, data: Uint8Array): Promise<void> {
    this.#track(offset, data.length);
    await this.writer.writeData(offset, data);
    this.#digest.advance(this.writer.stats().fileSize);
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    this.#track(offset, length);
    return this.writer.writeZeroes(offset, length);
  }

  async finish(): Promise<void> {
    await this.writer.finish();
    this.#result = this.#digest.finish();
    this.#result.catch(() => {}); // awaited through digest()
  }

  async abort(reason?: unknown): Promise<void> {
    await this.#digest.abort();
    await this.writer.abort(reason);
  }

  /** The image's size and digest (after `finish()`). */
  digest(): Promise<FileDigest> {
    if (!this.#result) return Promise.reject(new Error("the image is not finished"));
    return this.#result;
  }
}
