/**
 * The memory the copy engine's threads share: slot queues, slot descriptions, counters and
 * the abort flag, in one `SharedArrayBuffer`; and the eventfd {@link Doorbell}s that wake a
 * thread blocked in `poll`.
 *
 * The data itself lives in one C buffer of `slots × requestSize` bytes (allocated by the
 * main thread, freed only after every thread that could touch it has closed its handles):
 * libnbd reads into slot memory and the sink writes from the same memory, so no byte is
 * copied in JavaScript.
 *
 * A slot travels reader → sink on the `full` queue and back on the `free` queue; each queue
 * has exactly one producer and one consumer, so a head and a tail index are enough.
 *
 * @module
 */

import type { CPointer } from "../../ffi/nbd_handle.ts";
import { libc } from "../../ffi/libc.ts";
import type { Stop, WorkerScope } from "./copy_messages.ts";

/** What a full slot asks the sink to do. */
export const SLOT_DATA = 1;
/** Write zeros over the slot's range (no data in the slot). */
export const SLOT_ZERO = 2;

/** Why the copy was stopped (the abort flag's values). */
export const ABORT_CANCELLED = 1;
/** Stopped because a thread failed. */
export const ABORT_FAILED = 2;

/** Indexes of the shared byte counters. */
export const COUNTER = {
  /** Bytes read from the source (reader). */
  read: 0,
  /** Bytes read that turned out to be all zeros (reader). */
  zeroDetected: 1,
  /** Zero bytes not written because the target already reads as zeros (reader). */
  skipped: 2,
  /** Data bytes written to the sink (consumer). */
  written: 3,
  /** Bytes written as zero requests / holes (consumer). */
  zeroed: 4,
  /** Bytes the plan covers (reader, once known). */
  total: 5,
  /** Bytes of the plan to be read (reader, once known). */
  planRead: 6,
  /** Export size (reader). */
  size: 7,
} as const;
const COUNTERS = 8;

// Int32 control words.
const ABORT = 0;
const READER_DONE = 1;
const CONSUMER_BELL = 2;
const SLOTS = 3;
const FULL_HEAD = 4;
const FULL_TAIL = 5;
const FREE_HEAD = 6;
const FREE_TAIL = 7;
/** 0 until the reader has connected (and set {@link COUNTER.size}), 1 after, -1 on abort. */
const CONNECTED = 8;
/** The writer thread's sink: 0 not open yet, 1 open, 2 open and its target reads as zeros. */
const SINK_STATE = 9;
/** 0 until the main thread has published the data buffer and doorbells, 1 after, -1 on abort. */
const SETUP = 10;
const BUFFER_LOW = 11;
const BUFFER_HIGH = 12;
const READER_BELL = 13;
const CONSUMER_BELL_FD = 14;
const CONTROL = 15;

/** What the main thread publishes with {@link CopyShared.publishSetup}. */
export interface Setup {
  /** Address of the C data buffer. */
  buffer: bigint;
  /** The reader's eventfd doorbell. */
  readerBell: number;
  /** The consumer thread's eventfd doorbell, -1 when the consumer is the main thread. */
  consumerBell: number;
}

/**
 * A view of the shared copy state; every thread builds one over the same buffer.
 *
 * @example
 * ```ts
 * import { CopyShared, SLOT_DATA } from "./copy_shared.ts";
 * const s = CopyShared.create(2);
 * const slot = s.freePop();
 * s.setSlot(slot, SLOT_DATA, 4096, 512);
 * s.fullPush(slot);
 * console.assert(s.fullPop() === slot && s.slotOffset(slot) === 4096);
 * ```
 */
export class CopyShared {
  /** The buffer to send to the other threads. */
  readonly buffer: SharedArrayBuffer;
  /** Number of slots. */
  readonly slots: number;
  readonly #i32: Int32Array;
  readonly #f64: Float64Array;
  readonly #fullBase: number;
  readonly #freeBase: number;
  readonly #kindBase: number;
  readonly #offsetBase: number;
  readonly #lengthBase: number;
  readonly #counterBase: number;

  /** New state with `slots` slots, all of them on the free queue. */
  static create(slots: number): CopyShared {
    const ints = CONTROL + 3 * slots;
    const intBytes = Math.ceil((ints * 4) / 8) * 8;
    const sab = new SharedArrayBuffer(intBytes + (2 * slots + COUNTERS) * 8);
    new Int32Array(sab)[SLOTS] = slots;
    const s = new CopyShared(sab);
    for (let i = 0; i < slots; i++) s.freePush(i);
    return s;
  }

  /** A view over state made by {@link CopyShared.create} (possibly in another thread). */
  constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.#i32 = new Int32Array(buffer);
    this.slots = this.#i32[SLOTS];
    const n = this.slots;
    this.#fullBase = CONTROL;
    this.#freeBase = CONTROL + n;
    this.#kindBase = CONTROL + 2 * n;
    const intBytes = Math.ceil(((CONTROL + 3 * n) * 4) / 8) * 8;
    this.#f64 = new Float64Array(buffer, intBytes);
    this.#offsetBase = 0;
    this.#lengthBase = n;
    this.#counterBase = 2 * n;
  }

  /** Sets the abort flag (the first reason wins) and wakes a thread in {@link waitConnected}. */
  abort(reason: number): void {
    Atomics.compareExchange(this.#i32, ABORT, 0, reason);
    Atomics.compareExchange(this.#i32, CONNECTED, 0, -1);
    Atomics.notify(this.#i32, CONNECTED);
    Atomics.compareExchange(this.#i32, SETUP, 0, -1);
    Atomics.notify(this.#i32, SETUP);
  }

  /**
   * The main thread's part of the set-up, published after the reader has started: the data
   * buffer's address and the eventfd doorbells (-1: none).
   */
  publishSetup(buffer: bigint, readerBell: number, consumerBell: number): void {
    this.#i32[BUFFER_LOW] = Number(buffer & 0xffffffffn) | 0;
    this.#i32[BUFFER_HIGH] = Number(buffer >> 32n) | 0;
    this.#i32[READER_BELL] = readerBell;
    this.#i32[CONSUMER_BELL_FD] = consumerBell;
    Atomics.compareExchange(this.#i32, SETUP, 0, 1);
    Atomics.notify(this.#i32, SETUP);
  }

  /**
   * Blocks (in a Worker) until {@link publishSetup} has run, and returns what it published;
   * undefined when the copy was aborted first.
   */
  waitSetup(): Setup | undefined {
    for (;;) {
      const state = Atomics.load(this.#i32, SETUP);
      if (state === -1) return undefined;
      if (state === 1) break;
      Atomics.wait(this.#i32, SETUP, 0);
    }
    const low = BigInt(this.#i32[BUFFER_LOW] >>> 0);
    const high = BigInt(this.#i32[BUFFER_HIGH] >>> 0);
    return {
      buffer: (high << 32n) | low,
      readerBell: this.#i32[READER_BELL],
      consumerBell: this.#i32[CONSUMER_BELL_FD],
    };
  }

  /** The abort reason, 0 while the copy should go on. */
  aborted(): number {
    return Atomics.load(this.#i32, ABORT);
  }

  /** The reader has connected: {@link COUNTER.size} holds the export size. */
  setConnected(): void {
    Atomics.compareExchange(this.#i32, CONNECTED, 0, 1);
    Atomics.notify(this.#i32, CONNECTED);
  }

  /**
   * Blocks (in a Worker) until the reader has connected: true, or the copy was aborted first:
   * false.
   */
  waitConnected(): boolean {
    for (;;) {
      const state = Atomics.load(this.#i32, CONNECTED);
      if (state !== 0) return state === 1;
      Atomics.wait(this.#i32, CONNECTED, 0);
    }
  }

  /**
   * Resolves, without blocking the thread (the main thread's writer), once the reader has
   * connected: true; or once the copy was aborted first: false.
   */
  async connected(): Promise<boolean> {
    for (;;) {
      const state = Atomics.load(this.#i32, CONNECTED);
      if (state !== 0) return state === 1;
      const r = Atomics.waitAsync(this.#i32, CONNECTED, 0);
      if (r.async) await r.value;
    }
  }

  /** The writer thread has opened its sink; `zero`: the target reads as zeros already. */
  setSinkOpen(zero: boolean): void {
    Atomics.store(this.#i32, SINK_STATE, zero ? 2 : 1);
  }

  /** Whether the writer thread's target reads as zeros; undefined until its sink is open. */
  sinkZero(): boolean | undefined {
    const state = Atomics.load(this.#i32, SINK_STATE);
    return state === 0 ? undefined : state === 2;
  }

  /** Marks that the reader has queued its last slot. */
  setReaderDone(): void {
    Atomics.store(this.#i32, READER_DONE, 1);
  }

  /** Whether the reader has queued its last slot. */
  readerDone(): boolean {
    return Atomics.load(this.#i32, READER_DONE) === 1;
  }

  /** Wakes a consumer waiting in {@link waitConsumerBell} (the main thread). */
  ringConsumerBell(): void {
    Atomics.add(this.#i32, CONSUMER_BELL, 1);
    Atomics.notify(this.#i32, CONSUMER_BELL);
  }

  /** The consumer bell's current value, to wait for a change from. */
  consumerBell(): number {
    return Atomics.load(this.#i32, CONSUMER_BELL);
  }

  /** Resolves when the consumer bell differs from `seen` (without blocking the thread). */
  async waitConsumerBell(seen: number): Promise<void> {
    const r = Atomics.waitAsync(this.#i32, CONSUMER_BELL, seen);
    if (r.async) await r.value;
  }

  /** Puts a slot on the full queue (reader only). */
  fullPush(slot: number): void {
    this.#push(FULL_HEAD, FULL_TAIL, this.#fullBase, slot);
  }

  /** Takes a slot from the full queue, -1 when empty (consumer only). */
  fullPop(): number {
    return this.#pop(FULL_HEAD, FULL_TAIL, this.#fullBase);
  }

  /** Whether the full queue is empty. */
  fullEmpty(): boolean {
    return Atomics.load(this.#i32, FULL_HEAD) === Atomics.load(this.#i32, FULL_TAIL);
  }

  /** A slot its sink has written: counted as written or zeroed, and made free again. */
  releaseWritten(slot: number): void {
    const counter = this.slotKind(slot) === SLOT_DATA ? COUNTER.written : COUNTER.zeroed;
    this.count(counter, this.slotLength(slot));
    this.freePush(slot);
  }

  /** Returns a slot on the free queue (consumer, or the reader for slots it drops). */
  freePush(slot: number): void {
    this.#push(FREE_HEAD, FREE_TAIL, this.#freeBase, slot);
  }

  /** Takes a free slot, -1 when none (reader only). */
  freePop(): number {
    return this.#pop(FREE_HEAD, FREE_TAIL, this.#freeBase);
  }

  /** Describes a slot before it is queued. */
  setSlot(slot: number, kind: number, offset: number, length: number): void {
    this.#i32[this.#kindBase + slot] = kind;
    this.#f64[this.#offsetBase + slot] = offset;
    this.#f64[this.#lengthBase + slot] = length;
  }

  /** {@link SLOT_DATA} or {@link SLOT_ZERO}. */
  slotKind(slot: number): number {
    return this.#i32[this.#kindBase + slot];
  }

  /** The slot's offset in the export. */
  slotOffset(slot: number): number {
    return this.#f64[this.#offsetBase + slot];
  }

  /** The slot's length in bytes. */
  slotLength(slot: number): number {
    return this.#f64[this.#lengthBase + slot];
  }

  /** Reads a counter ({@link COUNTER}). */
  counter(index: number): number {
    return this.#f64[this.#counterBase + index];
  }

  /** Adds to a counter; each counter has a single writer thread. */
  count(index: number, bytes: number): void {
    this.#f64[this.#counterBase + index] += bytes;
  }

  /** Sets a counter. */
  setCounter(index: number, value: number): void {
    this.#f64[this.#counterBase + index] = value;
  }

  #push(_head: number, tail: number, base: number, value: number): void {
    const t = Atomics.load(this.#i32, tail);
    this.#i32[base + (t % this.slots)] = value;
    Atomics.store(this.#i32, tail, t + 1);
  }

  #pop(head: number, tail: number, base: number): number {
    const h = Atomics.load(this.#i32, head);
    if (h === Atomics.load(this.#i32, tail)) return -1;
    const v = this.#i32[base + (h % this.slots)];
    Atomics.store(this.#i32, head, h + 1);
    return v;
  }
}

/**
 * An eventfd that wakes a thread blocked in `poll`: {@link ring} from any thread, the owner
 * polls {@link fd} and calls {@link drain}.
 */
export class Doorbell {
  /** The eventfd (non-blocking). */
  readonly fd: number;
  readonly #one = new BigUint64Array([1n]);
  readonly #sink = new BigUint64Array(1);
  readonly #onePtr = Deno.UnsafePointer.of(this.#one);
  readonly #sinkPtr = Deno.UnsafePointer.of(this.#sink);

  /** Wraps an eventfd made with {@link createEventFd}. */
  constructor(fd: number) {
    this.fd = fd;
  }

  /** Wakes the owner (harmless when it is awake). */
  ring(): void {
    if (this.fd >= 0) libc().write(this.fd, this.#onePtr, 8n);
  }

  /** Resets the counter after waking up. */
  drain(): void {
    if (this.fd >= 0) libc().read(this.fd, this.#sinkPtr, 8n);
  }
}

/** A non-blocking, close-on-exec eventfd; throws when the system refuses one. */
export function createEventFd(): number {
  const fd = libc().eventfd(0, 0o4000 | 0o2000000);
  if (fd < 0) throw new Error("eventfd failed");
  return fd;
}

/** Thrown inside a copy worker when the copy was aborted (by the user or by the other thread). */
export class CopyStopped extends Error {}

/**
 * How a copy worker ends after `err`: `aborted` when it was stopped, otherwise it marks the
 * copy failed (so the other thread stops too) and reports the error. Then the worker closes.
 */
function endWorker(
  scope: WorkerScope,
  shared: SharedArrayBuffer | undefined,
  err: unknown,
): void {
  if (err instanceof CopyStopped) {
    scope.postMessage({ type: "aborted" });
  } else {
    if (shared) new CopyShared(shared).abort(ABORT_FAILED);
    scope.postMessage({
      type: "error",
      message: err instanceof Error ? err.message : String(err),
      name: err instanceof Error ? err.name : "Error",
    });
  }
  scope.close();
}

/**
 * Runs a copy worker's side of the protocol. On "start": counts trace times from the main
 * thread's origin, traces `<name>: started` and calls `run`, which sends "done" itself. When
 * `run` throws, or "stop" arrives (the main thread gave up waiting), `cleanup` releases what
 * the worker holds, the last message (aborted or error, see {@link endWorker}) goes out and
 * the worker closes.
 */
export function serveCopyWorker<
  S extends { type: "start"; shared: SharedArrayBuffer; timeOrigin: number },
>(scope: WorkerScope, name: string, run: (start: S) => void, cleanup: () => void): void {
  let shared: SharedArrayBuffer | undefined;
  scope.onmessage = (event: MessageEvent) => {
    const msg = event.data as S | Stop;
    if (msg.type === "start") {
      shared = msg.shared;
      setTraceOrigin(msg.timeOrigin);
      trace(`${name}: started`);
      try {
        run(msg);
      } catch (err) {
        cleanup();
        endWorker(scope, shared, err);
      }
    } else if (msg.type === "stop") {
      cleanup();
      scope.postMessage({ type: "aborted" });
      scope.close();
    }
  };
}

let traceOrigin = performance.timeOrigin;
let tracing: boolean | undefined;

/** Makes {@link trace} count from `origin` (a Worker: the main thread's `timeOrigin`). */
function setTraceOrigin(origin: number): void {
  traceOrigin = origin;
}

/** Where each slot starts in the data buffer: slot `i` at `buffer + i × stride`. */
export function slotPointers(buffer: CPointer, slots: number, stride: number): CPointer[] {
  const pointers: CPointer[] = [];
  for (let i = 0; i < slots; i++) {
    pointers.push(i === 0 ? buffer : Deno.UnsafePointer.offset(buffer, i * stride)!);
  }
  return pointers;
}

/**
 * With `VOLT_NBD_TRACE=1`, prints `nbd-trace <ms> <event>` on stderr: milliseconds since the
 * main thread's runtime started (about the process start), to see where a copy's time goes.
 * Free otherwise.
 */
export function trace(event: string): void {
  if (tracing === undefined) {
    try {
      tracing = Deno.env.get("VOLT_NBD_TRACE") === "1";
    } catch {
      tracing = false; // no permission to read the environment
    }
  }
  if (!tracing) return;
  const ms = performance.timeOrigin + performance.now() - traceOrigin;
  console.error(`nbd-trace ${ms.toFixed(1)} ${event}`);
}
