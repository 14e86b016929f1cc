/**
 * {@link StreamChannel}: an export connected to an import inside one process (`volt migrate`),
 * without a pipe. The exporter's sink queues chunks (copies of file ranges, and runs of zeros
 * that the importer skips without scanning), the importer's source takes them. Bounded
 * (backpressure at `highWaterMark` bytes), optionally rate-limited, and failure on either side
 * stops the other.
 *
 * @module
 */

import type { StreamChunk, StreamSink, StreamSource } from "../../plugins/api.ts";
import { VoltError } from "../errors.ts";
import { preadFull } from "./fd.ts";

/** Options of {@link StreamChannel}. */
export interface ChannelOptions {
  /** Bytes of data queued before the writer waits (default 4 MiB). */
  highWaterMark?: number;
  /** Limit the stream to this many bytes per second (zeros count too, as in a pipe). */
  bwlimit?: number;
  /** Called after each chunk with the stream bytes passed so far. */
  onProgress?: (bytes: number) => void;
}

/** Size of the buffers file ranges are read into (recycled once the reader is done). */
const PIECE = 256 * 1024;

/**
 * A bounded in-process stream: write into {@link StreamChannel.sink}, read from
 * {@link StreamChannel.source}; {@link StreamChannel.close} ends it, {@link StreamChannel.fail}
 * makes the reader throw.
 *
 * @example
 * ```ts
 * import { StreamChannel } from "./channel.ts";
 * const ch = new StreamChannel();
 * const reading = ch.source.readExact(3);
 * await ch.sink.write(new Uint8Array([1, 2, 3]));
 * ch.close();
 * console.assert((await reading).length === 3);
 * ```
 */
export class StreamChannel {
  /** The exporter's end. */
  readonly sink: StreamSink;
  /** The importer's end. */
  readonly source: StreamSource;
  #queue: StreamChunk[] = [];
  #queued = 0;
  #highWaterMark: number;
  #bwlimit?: number;
  #onProgress?: (bytes: number) => void;
  #closed = false;
  #failure?: unknown;
  #cancelled?: unknown;
  #wakeReader?: () => void;
  #wakeWriter?: () => void;
  #start = performance.now();
  #bytes = 0;
  // Buffers of file ranges, reused once the reader has moved past them: without this, memory
  // grows with garbage the collector has not got to yet.
  #pool: ArrayBuffer[] = [];
  #pooled = new WeakSet<ArrayBuffer>();

  /** An empty, open channel. */
  constructor(options: ChannelOptions = {}) {
    this.#highWaterMark = options.highWaterMark ?? 4 << 20;
    this.#bwlimit = options.bwlimit;
    this.#onProgress = options.onProgress;
    this.sink = {
      write: (bytes) => this.#push({ data: bytes.slice() }),
      writeZeros: (length) => this.#push({ zeros: length }),
      writeRange: (fd, offset, length) => this.#pushRange(fd, offset, length),
    };
    this.source = {
      readExact: (length) => this.#readExact(length),
      chunks: () => this.#chunks(),
    };
  }

  /** Stream bytes that have passed so far. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Ends the stream: the reader sees end of stream after the queued chunks. */
  close(): void {
    this.#closed = true;
    this.#wake();
  }

  /** Makes the reader fail with `err` (the exporter failed). */
  fail(err: unknown): void {
    this.#failure ??= err;
    this.#closed = true;
    this.#wake();
  }

  /** Makes the writer fail with `err` (the importer stopped). */
  cancel(err: unknown): void {
    this.#cancelled ??= err;
    this.#queue = [];
    this.#queued = 0;
    this.#wake();
  }

  #wake(): void {
    this.#wakeReader?.();
    this.#wakeWriter?.();
  }

  async #push(chunk: StreamChunk): Promise<void> {
    const size = "data" in chunk ? chunk.data.length : 0;
    const length = "data" in chunk ? chunk.data.length : chunk.zeros;
    if (length === 0) return;
    while (
      this.#cancelled === undefined && this.#queued > 0 && this.#queued + size > this.#highWaterMark
    ) {
      await new Promise<void>((resolve) => (this.#wakeWriter = resolve));
      this.#wakeWriter = undefined;
    }
    if (this.#cancelled !== undefined) throw this.#cancelled;
    if (this.#closed) throw new VoltError("stream channel: write after close");
    await this.#throttle(length);
    const last = this.#queue.at(-1);
    if (!("data" in chunk) && last && "zeros" in last) last.zeros += chunk.zeros;
    else this.#queue.push(chunk);
    this.#queued += size;
    this.#bytes += length;
    this.#onProgress?.(this.#bytes);
    this.#wakeReader?.();
  }

  async #pushRange(fd: number, offset: number, length: number): Promise<void> {
    for (let pos = offset; pos < offset + length;) {
      const n = Math.min(PIECE, offset + length - pos);
      let ab = this.#pool.pop();
      if (!ab) {
        ab = new ArrayBuffer(PIECE);
        this.#pooled.add(ab);
      }
      const buf = new Uint8Array(ab, 0, n);
      const got = preadFull(fd, buf, pos);
      if (got < buf.length) {
        throw new VoltError(
          `the volume's file ended ${
            offset + length - pos - got
          } bytes early (changed during the export?)`,
        );
      }
      await this.#push({ data: buf });
      pos += got;
    }
  }

  async #throttle(length: number): Promise<void> {
    if (!this.#bwlimit) return;
    const due = ((this.#bytes + length) / this.#bwlimit) * 1000;
    const wait = due - (performance.now() - this.#start);
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
  }

  async #take(): Promise<StreamChunk | undefined> {
    for (;;) {
      if (this.#cancelled !== undefined) throw this.#cancelled;
      const chunk = this.#queue.shift();
      if (chunk) {
        if ("data" in chunk) this.#queued -= chunk.data.length;
        this.#wakeWriter?.();
        return chunk;
      }
      if (this.#failure !== undefined) throw this.#failure;
      if (this.#closed) return undefined;
      await new Promise<void>((resolve) => (this.#wakeReader = resolve));
      this.#wakeReader = undefined;
    }
  }

  #unshift(chunk: StreamChunk): void {
    this.#queue.unshift(chunk);
    if ("data" in chunk) this.#queued += chunk.data.length;
  }

  async #readExact(length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    let got = 0;
    while (got < length) {
      const chunk = await this.#take();
      if (!chunk) break;
      const avail = "data" in chunk ? chunk.data.length : chunk.zeros;
      const n = Math.min(avail, length - got);
      if ("data" in chunk) {
        out.set(chunk.data.subarray(0, n), got);
        if (n < avail) this.#unshift({ data: chunk.data.subarray(n) });
      } else if (n < avail) {
        this.#unshift({ zeros: avail - n });
      }
      got += n;
    }
    return out.subarray(0, got);
  }

  async *#chunks(): AsyncGenerator<StreamChunk> {
    let done = false;
    try {
      for (;;) {
        const chunk = await this.#take();
        if (!chunk) {
          done = true;
          return;
        }
        yield chunk;
        // The reader asked for the next chunk: this one's buffer may be reused.
        if ("data" in chunk && this.#pooled.has(chunk.data.buffer as ArrayBuffer)) {
          this.#pool.push(chunk.data.buffer as ArrayBuffer);
        }
      }
    } finally {
      if (!done) this.cancel(new VoltError("the importer stopped reading the stream"));
    }
  }
}
