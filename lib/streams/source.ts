/**
 * {@link FdSource}: an import stream read from a file descriptor (stdin or a file).
 *
 * From a pipe (enlarged to 1 MiB) it reads in chunks of 256 KiB, waiting for input in
 * slices short enough that signals still reach the importer. From a regular file it finds
 * holes with `SEEK_DATA`/`SEEK_HOLE` and hands them on as runs of zeros without reading them.
 * Headers are read with exact-length reads, so nothing is read ahead: the rest of stdin can be
 * handed to a child process (tar).
 *
 * @module
 */

import type { StreamChunk, StreamSource } from "../../plugins/api.ts";
import { VoltError } from "../errors.ts";
import {
  closeFd,
  currentOffset,
  enlargePipe,
  EventLoopYielder,
  type FdKind,
  fdKind,
  O,
  openFd,
  readSome,
} from "./fd.ts";
import { check, SEEK, sys } from "../../ffi/libc_fd.ts";
import { dataExtents } from "./extents.ts";

/**
 * Size of the chunks read from a pipe or file: 256 KiB stays in the CPU cache between the read
 * and the write, which measured faster than 64 KiB or 1 MiB.
 */
export const CHUNK_SIZE = 256 * 1024;

/** An import source: stdin (`-`) or a stream file. */
export class FdSource implements StreamSource {
  readonly fd?: number;
  /** What the descriptor is: a regular file is read by extents, anything else in chunks. */
  readonly kind: FdKind;
  #fd: number;
  #owned: boolean;
  #signal?: AbortSignal;
  #buffer?: Uint8Array;
  #yielder = new EventLoopYielder();

  private constructor(fd: number, owned: boolean, signal?: AbortSignal) {
    this.#fd = fd;
    this.#owned = owned;
    this.#signal = signal;
    this.kind = fdKind(fd);
    if (fd === 0) this.fd = 0;
    if (this.kind === "pipe") enlargePipe(fd);
  }

  /**
   * The process's stdin. Refuses a terminal. Reads stop with an error when `signal` fires.
   *
   * @example
   * ```ts ignore
   * import { FdSource } from "./source.ts";
   * const header = await FdSource.stdin().readExact(8);
   * ```
   */
  static stdin(signal?: AbortSignal): FdSource {
    if (Deno.stdin.isTerminal()) {
      throw new VoltError(
        "refusing to read a stream from a terminal: redirect stdin or give a file",
      );
    }
    return new FdSource(0, false, signal);
  }

  /** Opens the stream file at `path`. */
  static open(path: string, signal?: AbortSignal): FdSource {
    let fd: number;
    try {
      fd = openFd(path, O.RDONLY);
    } catch (err) {
      throw new VoltError(`cannot open '${path}': ${(err as Error).message}`, { cause: err });
    }
    return new FdSource(fd, true, signal);
  }

  /** Whether reading may block (anything but a regular file). */
  get #mayBlock(): boolean {
    return this.kind !== "file";
  }

  async readExact(length: number): Promise<Uint8Array> {
    const buf = new Uint8Array(length);
    let got = 0;
    while (got < length) {
      const n = await readSome(this.#fd, buf.subarray(got), this.#mayBlock, this.#signal);
      if (n === 0) break;
      got += n;
    }
    return buf.subarray(0, got);
  }

  chunks(): AsyncIterable<StreamChunk> {
    return this.kind === "file" ? this.#fileChunks() : this.#streamChunks();
  }

  async *#streamChunks(): AsyncGenerator<StreamChunk> {
    this.#buffer ??= new Uint8Array(CHUNK_SIZE);
    const buf = this.#buffer;
    for (;;) {
      let filled = 0;
      let eof = false;
      while (filled < buf.length) {
        const n = await readSome(this.#fd, buf.subarray(filled), true, this.#signal);
        if (n === 0) {
          eof = true;
          break;
        }
        filled += n;
      }
      if (filled > 0) yield { data: buf.subarray(0, filled) };
      if (eof) return;
      await this.#yielder.maybeYield(this.#signal);
    }
  }

  async *#fileChunks(): AsyncGenerator<StreamChunk> {
    this.#buffer ??= new Uint8Array(CHUNK_SIZE);
    const buf = this.#buffer;
    const libc = sys();
    const start = currentOffset(this.#fd);
    const end = Number(check(libc.lseek(this.#fd, 0n, SEEK.END), "lseek"));
    check(libc.lseek(this.#fd, BigInt(start), SEEK.SET), "lseek");
    for (const e of dataExtents(this.#fd, start, end)) {
      if (!e.data) {
        check(libc.lseek(this.#fd, BigInt(e.offset + e.length), SEEK.SET), "lseek");
        yield { zeros: e.length };
        continue;
      }
      check(libc.lseek(this.#fd, BigInt(e.offset), SEEK.SET), "lseek");
      for (let left = e.length; left > 0;) {
        const n = await readSome(this.#fd, buf.subarray(0, Math.min(left, buf.length)), false);
        if (n === 0) return; // The file shrank: the importer sees a short stream.
        left -= n;
        yield { data: buf.subarray(0, n) };
        await this.#yielder.maybeYield(this.#signal);
      }
    }
  }

  /** Closes a file opened by {@link FdSource.open}. */
  close(): void {
    if (this.#owned) {
      this.#owned = false;
      closeFd(this.#fd);
    }
  }
}
