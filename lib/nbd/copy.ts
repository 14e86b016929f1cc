/**
 * {@link copyNbd}: copy an NBD export (all of it, or the ranges a dirty bitmap marks) into a
 * sink, fast, with the main thread left free for progress, signals and your sink.
 *
 * Design: a reader Worker owns the source connection(s) and keeps `depth` asynchronous reads
 * in flight on each, into slots of one shared C buffer; the main thread (raw files, a
 * {@link CallbackSink}), the reader's own loop (NBD targets) or a writer Worker writes each
 * slot from the same memory and hands it back. Slots travel on two lock-free queues in a
 * `SharedArrayBuffer`; the reader, with nothing to do, sleeps in `poll` on its sockets and
 * an eventfd doorbell, the main thread in `Atomics.waitAsync`. See `docs/nbd.md`.
 *
 * @module
 */

import { libc, MADV } from "../../ffi/libc.ts";
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
  slotPointers,
  trace,
} from "./copy_shared.ts";
import type { ReaderConnected, ReaderStart, WorkerMessage, WriterStart } from "./copy_messages.ts";
import type { RangeSelection } from "./plan.ts";
import type { CPointer } from "../../ffi/nbd_handle.ts";
import { type BuiltinSink, type CallbackSink, type CopySink, isCallbackSink } from "./sink.ts";
import { openAnnouncedWriter } from "./sink_writers.ts";
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
   * Which thread writes a built-in sink: `"main"` (this thread, between its waits: raw and
   * null sinks), `"reader"` (the reader's own loop) or `"worker"` (a second Worker). Default:
   * `"main"` for raw files (pwrite blocks; overlapping it with reading was measured faster
   * than the reader writing, and this thread is idle otherwise, so no second Worker has to
   * boot), `"reader"` for NBD and null sinks (their writes are asynchronous, one `poll`
   * serves both sockets).
   */
  writer?: SinkThread;
  /** Milliseconds between progress calls (default 500). */
  progressInterval?: number;
  /** Aborting stops the copy: it rejects with {@link CopyCancelledError}. */
  signal?: AbortSignal;
}

/** Where a built-in sink is written: see {@link CopyOptions.writer}. */
export type SinkThread = "main" | "reader" | "worker";

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
  const sinkThread = builtinSink && sinkThreadFor(builtinSink, options.writer);
  const writerThread = sinkThread === "worker";
  // Slots: the reads in flight, plus a queue for the sink. 8 queued slots (8 MiB) let the
  // reader run on while the sink is being opened and while it waits for writeback.
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
        sink: sinkThread === "reader" ? builtinSink : undefined,
      } satisfies ReaderStart,
    );
    // The data buffer, sized for the largest request asked for (the server may allow less:
    // requests are then smaller, slots stay where they are), and the doorbells, published
    // in shared memory where the reader picks them up once it has mapped the export; then
    // the writer, which needs the export size (the reader's connection) before it can open
    // its sink anyway.
    buffer = allocateSlots(slots * requestSize);
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
    const consumer = callbackSink
      ? consume(shared, readerBell, callbackWrites(callbackSink, shared, buffer, requestSize))
      : sinkThread === "main"
      ? writeOnMain(builtinSink!, shared, buffer, requestSize, readerBell)
      : undefined;
    await consumer?.catch((err) => fail(err instanceof Error ? err : new Error(String(err))));
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

/**
 * The slots' C memory, faulted in here, while the reader boots, rather than page by page by
 * the first reads (~5 ms of page faults for 12 MiB, measured, on the reader's path). Huge
 * pages where the kernel allows them (fewer faults and TLB misses); advice the kernel does
 * not know is ignored.
 */
function allocateSlots(bytes: number): CPointer {
  const lib = libc();
  const HUGE = 2 ** 21;
  const buffer = lib.aligned_alloc(BigInt(bytes >= HUGE ? HUGE : 4096), BigInt(bytes));
  if (buffer === null) throw new VoltError("out of memory for the copy buffer");
  lib.madvise(buffer, BigInt(bytes), MADV.HUGEPAGE);
  lib.madvise(buffer, BigInt(bytes), MADV.POPULATE_WRITE);
  return buffer;
}

/** Writes one full slot on the main thread (awaited when it returns a promise). */
type SlotWrite = (slot: number, kind: number, offset: number, length: number) =>
  | void
  | Promise<void>;

/**
 * The main-thread consumer: takes full slots off the queue, writes each with `write`, counts
 * it, hands it back to the reader; waits on the consumer bell (`Atomics.waitAsync`, the
 * thread stays free) when the queue is empty, until the reader is done or the copy aborted.
 */
async function consume(shared: CopyShared, readerBell: number, write: SlotWrite): Promise<void> {
  const reader = new Doorbell(readerBell);
  for (;;) {
    if (shared.aborted()) return;
    const seen = shared.consumerBell();
    const slot = shared.fullPop();
    if (slot >= 0) {
      const pending = write(
        slot,
        shared.slotKind(slot),
        shared.slotOffset(slot),
        shared.slotLength(slot),
      );
      if (pending) await pending;
      shared.releaseWritten(slot);
      reader.ring();
      continue;
    }
    if (shared.readerDone() && shared.fullEmpty()) return;
    await shared.waitConsumerBell(seen);
  }
}

/** A {@link CallbackSink}'s writes: data as a view of the slot's memory. */
function callbackWrites(
  sink: CallbackSink,
  shared: CopyShared,
  buffer: Deno.PointerValue,
  requestSize: number,
): SlotWrite {
  const memory = new Uint8Array(
    Deno.UnsafePointerView.getArrayBuffer(buffer!, shared.slots * requestSize),
  );
  return (slot, kind, offset, length) => {
    if (kind !== SLOT_DATA) return sink.writeZeroes(offset, length);
    const start = slot * requestSize;
    return sink.writeData(offset, memory.subarray(start, start + length));
  };
}

/**
 * A built-in sink written on the main thread (a raw file: `pwrite` into the page cache is
 * short, so the thread stays responsive between slots). Opens the sink once the reader knows
 * the export size, tells the reader whether the target reads as zeros, writes every slot,
 * then makes it durable as the sink promises. A file it created is removed on failure or
 * cancellation.
 */
async function writeOnMain(
  sink: BuiltinSink,
  shared: CopyShared,
  buffer: Deno.PointerValue,
  requestSize: number,
  readerBell: number,
): Promise<void> {
  if (!(await shared.connected())) return;
  const writer = openAnnouncedWriter(sink, shared, requestSize, readerBell);
  let written = false;
  try {
    trace("main: sink open");
    const slotPtr = slotPointers(buffer!, shared.slots, requestSize);
    await consume(shared, readerBell, (slot, kind, offset, length) => {
      writer.submit(slot, kind, offset, length, slotPtr[slot]);
    });
    if (shared.aborted()) return;
    trace("main: all written");
    writer.finish();
    written = true;
    trace("main: finished");
  } finally {
    if (!written) writer.close(true);
  }
}

/** The thread that writes a built-in sink: the one asked for, or the measured best. */
function sinkThreadFor(sink: BuiltinSink, asked: SinkThread | undefined): SinkThread {
  const thread = asked ?? (sink.type === "raw" ? "main" : "reader");
  if (thread === "main" && sink.type === "nbd") {
    // Its asynchronous writes need a thread that can block in poll on the target's socket.
    throw new VoltError("an NBD target is written by the reader or a writer Worker, not main");
  }
  return thread;
}

function positive(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new VoltError(`${name} must be a positive integer, not ${value}`);
  }
  return value;
}
