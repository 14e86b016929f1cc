/**
 * {@link copyNbd}: copy an NBD export (all of it, or the ranges a dirty bitmap marks) into a
 * sink, fast, with the main thread left free for progress, signals and your sink.
 *
 * Design: a reader Worker owns the source connection(s) and keeps `depth` asynchronous reads
 * in flight on each, into slots of one shared C buffer; a writer Worker (built-in sinks) or
 * the main thread ({@link CallbackSink}) writes each slot from the same memory and hands it
 * back. Slots travel on two lock-free queues in a `SharedArrayBuffer`; a thread with nothing
 * to do sleeps in `poll` on its sockets and an eventfd doorbell. See `docs/nbd.md`.
 *
 * @module
 */

import { libc } from "../../ffi/libc.ts";
import { preloadLibnbd } from "../../ffi/libnbd.ts";
import { VoltError } from "../errors.ts";
import {
  ABORT_CANCELLED,
  ABORT_FAILED,
  CopyShared,
  COUNTER,
  createEventFd,
  Doorbell,
  SLOT_DATA,
  trace,
} from "./copy_shared.ts";
import type { ReaderConnected, ReaderStart, WorkerMessage, WriterStart } from "./copy_messages.ts";
import type { RangeSelection } from "./plan.ts";
import { type CallbackSink, type CopySink, isCallbackSink } from "./sink.ts";
import type { NbdSource } from "./source.ts";

/** Default request size: 1 MiB measured best here (4 MiB was slower, 256 KiB needs depth). */
export const DEFAULT_REQUEST_SIZE = 2 ** 20;
/**
 * Default requests in flight per connection: 4 to 8 measured fastest against qemu-nbd here
 * (deeper queues only added contention); raise it for storage with high latency.
 */
export const DEFAULT_DEPTH = 4;

/** What {@link copyNbd} copies, where, and how. */
export interface CopyOptions {
  /** The export to read. */
  source: NbdSource;
  /** Dirty bitmap to read (`qemu:dirty-bitmap:NAME`); required for `ranges: "dirty"`. */
  bitmap?: string;
  /**
   * `"allocated"`: the whole export (holes as zeros); `"dirty"`: only the bitmap's dirty
   * ranges, zero ones written as zeros. Default: `"dirty"` when a bitmap is given.
   */
  ranges?: RangeSelection;
  /** Where to write. */
  sink: CopySink;
  /** Read requests in flight per connection (default 4). */
  depth?: number;
  /** Source connections, when the server allows multi-conn (default 1). */
  connections?: number;
  /** Largest read request in bytes (default 1 MiB, capped by the server's limit). */
  requestSize?: number;
  /** Read bandwidth limit in KiB/s (0 or absent: none). */
  bwlimitKiB?: number;
  /** Turn all-zero data blocks into zero writes / holes (default true). */
  detectZeroes?: boolean;
  /** Called about every `progressInterval` ms and once at the end. */
  onProgress?: (progress: CopyProgress) => void;
  /**
   * Write a built-in sink from a second Worker (true) or from the reader's own loop (false).
   * Default: true for raw files (pwrite blocks, and overlapping it with reading was
   * measured faster), false for NBD and null sinks (their writes are asynchronous).
   */
  writerThread?: boolean;
  /** Milliseconds between progress calls (default 500). */
  progressInterval?: number;
  /** Aborting stops the copy: it rejects with {@link CopyCancelledError}. */
  signal?: AbortSignal;
}

/** Progress of a running copy. */
export interface CopyProgress {
  /** Bytes of the plan handled (written, zeroed or skipped). */
  bytesDone: number;
  /** Bytes the plan covers (0 until the map is read). */
  bytesTotal: number;
  bytesRead: number;
  bytesWritten: number;
  /** Seconds since the copy started. */
  seconds: number;
  /** Bytes handled per second so far. */
  rate: number;
}

/** What a finished copy did. */
export interface CopyStats {
  /** Export size. */
  size: number;
  /** Bytes the plan covered (the export for a full copy, the dirty ranges otherwise). */
  bytesTotal: number;
  /** Bytes read from the source. */
  bytesRead: number;
  /** Data bytes written to the sink. */
  bytesWritten: number;
  /** Bytes written as zeros (zero requests or holes). */
  bytesZeroed: number;
  /** Zero bytes not written because the target already read as zeros. */
  bytesSkipped: number;
  /** Of the bytes read, those that turned out to be all zeros. */
  bytesZeroDetected: number;
  /** Wall-clock seconds. */
  seconds: number;
  /** Connections used to read. */
  connections: number;
  /** Read requests in flight per connection. */
  depth: number;
  /** Read request size in bytes. */
  requestSize: number;
}

/**
 * The copy was stopped through its `signal`; `stats` tells how far it got.
 *
 * @example
 * ```ts
 * import { CopyCancelledError } from "./copy.ts";
 * console.assert(new CopyCancelledError(1, 2).message.includes("cancelled"));
 * ```
 */
export class CopyCancelledError extends VoltError {
  /** Bytes of the plan handled before the stop. */
  readonly bytesDone: number;
  /** Bytes of the plan. */
  readonly bytesTotal: number;
  constructor(bytesDone: number, bytesTotal: number) {
    super(`copy cancelled after ${bytesDone} of ${bytesTotal} bytes`);
    this.name = "CopyCancelledError";
    this.bytesDone = bytesDone;
    this.bytesTotal = bytesTotal;
  }
}

/** A Worker whose messages are read in order with {@link next}. */
class WorkerLink {
  readonly worker: Worker;
  #queue: WorkerMessage[] = [];
  #wake: (() => void) | undefined;
  #ended = false;

  constructor(url: string, name: string) {
    this.worker = new Worker(url, { type: "module", name });
    this.worker.onmessage = (e: MessageEvent) => this.#push(e.data as WorkerMessage);
    this.worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#push({ type: "error", message: e.message || "worker failed", name: "Error" });
    };
  }

  #push(msg: WorkerMessage): void {
    if (msg.type === "done" || msg.type === "aborted" || msg.type === "error") {
      if (this.#ended) return;
      this.#ended = true;
    }
    this.#queue.push(msg);
    this.#wake?.();
  }

  /** Whether the worker has sent its last message. */
  get ended(): boolean {
    return this.#ended;
  }

  /** The next message. */
  async next(): Promise<WorkerMessage> {
    while (this.#queue.length === 0) {
      await new Promise<void>((resolve) => (this.#wake = resolve));
      this.#wake = undefined;
    }
    return this.#queue.shift()!;
  }

  /** The worker's last message (done, aborted or error), skipping others. */
  async final(onOther?: (msg: WorkerMessage) => void): Promise<WorkerMessage> {
    for (;;) {
      const msg = await this.next();
      if (msg.type === "done" || msg.type === "aborted" || msg.type === "error") return msg;
      onOther?.(msg);
    }
  }

  post(msg: unknown): void {
    this.worker.postMessage(msg);
  }
}

/** The error a worker reported, as thrown to the caller. */
function workerError(msg: WorkerMessage): Error {
  if (msg.type === "error") return new VoltError(msg.message);
  return new VoltError(`unexpected message '${msg.type}' from the copy engine`);
}

/**
 * Copies an NBD export into a sink and resolves to what was done. Rejects with one-line
 * errors: a read failure or the server going away names the offset; cancellation through
 * `signal` rejects with {@link CopyCancelledError}. A raw file the copy created is removed
 * when it fails.
 *
 * @example
 * ```ts ignore
 * import { copyNbd } from "./copy.ts";
 * import { rawSink } from "./sink.ts";
 * const stats = await copyNbd({
 *   source: { uri: "nbd+unix:///?socket=/tmp/s" },
 *   sink: rawSink("/tmp/full.raw"),
 * });
 * console.log(stats.bytesRead);
 * ```
 */
export async function copyNbd(options: CopyOptions): Promise<CopyStats> {
  const selection = options.ranges ?? (options.bitmap !== undefined ? "dirty" : "allocated");
  if (selection === "dirty" && options.bitmap === undefined) {
    throw new VoltError("an incremental copy needs a dirty bitmap: give its name");
  }
  const depth = positive("depth", options.depth ?? DEFAULT_DEPTH);
  const connections = positive("connections", options.connections ?? 1);
  const requestSize = positive("requestSize", options.requestSize ?? DEFAULT_REQUEST_SIZE);
  if (options.signal?.aborted) throw new CopyCancelledError(0, 0);

  const callbackSink = isCallbackSink(options.sink) ? options.sink : undefined;
  const builtinSink = isCallbackSink(options.sink) ? undefined : options.sink;
  const writerThread = builtinSink !== undefined &&
    (options.writerThread ?? builtinSink.type === "raw");
  const inlineSink = builtinSink && !writerThread ? builtinSink : undefined;
  // Slots: the reads in flight, plus a queue for the sink. 8 queued slots (8 MiB) let the
  // reader run on while the writer Worker is still booting (it is ready ~5 ms after the
  // first data) and while the sink waits for writeback.
  const slots = depth * connections + Math.max(8, depth);
  const shared = CopyShared.create(slots);
  const bells: number[] = [];
  const links: WorkerLink[] = [];
  let buffer: Deno.PointerValue = null;
  let leakBuffer = false;
  let timer: ReturnType<typeof setInterval> | undefined;
  let failure: Error | undefined;
  const t0 = performance.now();

  const ringAll = () => {
    shared.ringConsumerBell();
    for (const fd of bells) new Doorbell(fd).ring();
  };
  const fail = (err: Error, reason = ABORT_FAILED) => {
    failure ??= err;
    shared.abort(reason);
    ringAll();
  };
  const progress = (): CopyProgress => {
    const done = shared.counter(COUNTER.written) + shared.counter(COUNTER.zeroed) +
      shared.counter(COUNTER.skipped);
    const seconds = (performance.now() - t0) / 1000;
    return {
      bytesDone: done,
      bytesTotal: shared.counter(COUNTER.total),
      bytesRead: shared.counter(COUNTER.read),
      bytesWritten: shared.counter(COUNTER.written),
      seconds,
      rate: seconds > 0 ? done / seconds : 0,
    };
  };
  const onAbort = () => {
    const p = progress();
    fail(new CopyCancelledError(p.bytesDone, p.bytesTotal), ABORT_CANCELLED);
  };
  options.signal?.addEventListener("abort", onAbort);

  try {
    // The reader first and told at once, before anything else here: creating a Worker
    // blocks this thread for the new isolate's boot (~10 ms), and the reader's start-up
    // (libnbd, connect, map) is what the copy waits for. libnbd's code is mapped meanwhile
    // on a background thread (the reader then only binds its symbols); nothing is bound on
    // this thread, and the reader reports a missing library.
    preloadLibnbd();
    trace("main: starting the reader");
    const reader = new WorkerLink(
      new URL("./copy_reader.ts", import.meta.url).href,
      "volt-nbd-reader",
    );
    links.push(reader);
    reader.post(
      {
        type: "start",
        shared: shared.buffer,
        source: options.source,
        bitmap: options.bitmap,
        selection,
        connections,
        depth,
        requestSize,
        bwlimit: Math.round((options.bwlimitKiB ?? 0) * 1024),
        detectZeroes: options.detectZeroes ?? true,
        stride: requestSize,
        initiallyZero: callbackSink ? callbackSink.initiallyZero ?? false : undefined,
        timeOrigin: performance.timeOrigin,
        sink: inlineSink,
      } satisfies ReaderStart,
    );
    // The data buffer, sized for the largest request asked for (the server may allow less:
    // requests are then smaller, slots stay where they are), and the doorbells, published
    // in shared memory where the reader picks them up once it has mapped the export; then
    // the writer, which needs the export size (the reader's connection) before it can open
    // its sink anyway.
    const lib = libc();
    buffer = lib.aligned_alloc(4096n, BigInt(slots * requestSize));
    if (buffer === null) throw new VoltError("out of memory for the copy buffer");
    const readerBell = createEventFd();
    bells.push(readerBell);
    const consumerBell = writerThread ? createEventFd() : -1;
    if (consumerBell >= 0) bells.push(consumerBell);
    shared.publishSetup(BigInt(Deno.UnsafePointer.value(buffer)), readerBell, consumerBell);
    trace("main: set up");
    const writer = !writerThread ? undefined : new WorkerLink(
      new URL("./copy_writer.ts", import.meta.url).href,
      "volt-nbd-writer",
    );
    if (writer) {
      links.push(writer);
      writer.post(
        {
          type: "start",
          shared: shared.buffer,
          sink: builtinSink!,
          stride: requestSize,
          timeOrigin: performance.timeOrigin,
        } satisfies WriterStart,
      );
    }
    if (options.onProgress) {
      const report = options.onProgress;
      timer = setInterval(() => report(progress()), options.progressInterval ?? 500);
    }

    let connected: ReaderConnected | undefined;
    const watch = (link: WorkerLink) =>
      link.final((msg) => {
        if (msg.type === "connected") connected = msg;
      }).then((msg) => {
        if (msg.type === "error") fail(workerError(msg));
        return msg;
      });
    const finals = [watch(reader), ...(writer ? [watch(writer)] : [])];
    if (callbackSink) {
      await consume(callbackSink, shared, buffer, requestSize, readerBell)
        .catch((err) => fail(err instanceof Error ? err : new Error(String(err))));
    }
    const ends = await Promise.all(finals);
    if (failure) throw failure;
    if (!connected || ends.some((msg) => msg.type !== "done")) {
      throw workerError(ends.find((msg) => msg.type !== "done") ?? ends[0]);
    }
    if (callbackSink) await callbackSink.finish();
    trace("main: done");

    const p = progress();
    options.onProgress?.(p);
    return {
      size: connected.size,
      bytesTotal: shared.counter(COUNTER.total),
      bytesRead: shared.counter(COUNTER.read),
      bytesWritten: shared.counter(COUNTER.written),
      bytesZeroed: shared.counter(COUNTER.zeroed),
      bytesSkipped: shared.counter(COUNTER.skipped),
      bytesZeroDetected: shared.counter(COUNTER.zeroDetected),
      seconds: p.seconds,
      connections: connected.connections,
      depth,
      requestSize: connected.requestSize,
    };
  } catch (err) {
    fail(err instanceof Error ? err : new Error(String(err)));
    if (callbackSink?.abort) await Promise.resolve(callbackSink.abort(failure)).catch(() => {});
    throw failure;
  } finally {
    if (timer !== undefined) clearInterval(timer);
    options.signal?.removeEventListener("abort", onAbort);
    // A worker frees the buffer's users (its libnbd handles) before its last message; wait
    // for that before freeing. A worker that does not answer keeps the buffer (leaked).
    for (const link of links) {
      if (!link.ended) {
        link.post({ type: "stop" }); // seen by a worker still waiting for "go"
        let timeout: ReturnType<typeof setTimeout> | undefined;
        const ended = await Promise.race([
          link.final().then(() => true),
          new Promise<false>((r) => (timeout = setTimeout(() => r(false), 10_000))),
        ]);
        clearTimeout(timeout);
        if (!ended) leakBuffer = true;
      }
      link.worker.terminate();
    }
    if (buffer !== null && !leakBuffer) libc().free(buffer);
    for (const fd of bells) libc().close(fd);
  }
}

/** The main-thread consumer for a {@link CallbackSink}. */
async function consume(
  sink: CallbackSink,
  shared: CopyShared,
  buffer: Deno.PointerValue,
  requestSize: number,
  readerBell: number,
): Promise<void> {
  const memory = new Uint8Array(
    Deno.UnsafePointerView.getArrayBuffer(buffer!, shared.slots * requestSize),
  );
  const reader = new Doorbell(readerBell);
  for (;;) {
    if (shared.aborted()) return;
    const seen = shared.consumerBell();
    const slot = shared.fullPop();
    if (slot >= 0) {
      const offset = shared.slotOffset(slot);
      const length = shared.slotLength(slot);
      if (shared.slotKind(slot) === SLOT_DATA) {
        const start = slot * requestSize;
        await sink.writeData(offset, memory.subarray(start, start + length));
        shared.count(COUNTER.written, length);
      } else {
        await sink.writeZeroes(offset, length);
        shared.count(COUNTER.zeroed, length);
      }
      shared.freePush(slot);
      reader.ring();
      continue;
    }
    if (shared.readerDone() && shared.fullEmpty()) return;
    await shared.waitConsumerBell(seen);
  }
}

function positive(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new VoltError(`${name} must be a positive integer, not ${value}`);
  }
  return value;
}
