/**
 * The copy engine's reader Worker: owns the source handle(s), maps the export, and keeps up
 * to `depth` `nbd_aio_pread` requests in flight per connection into free slots of the shared
 * C buffer. A completed read is checked for zeros (`memcmp`) and queued for the sink; then
 * the reader waits in `poll` on its sockets and its doorbell. It starts reading as soon as
 * the map is read, while a writer thread may still be opening its sink.
 *
 * Loaded by {@link copyNbd}; not imported by anything else.
 *
 * @module
 */

import { libc } from "../../ffi/libc.ts";
import type { CPointer, NbdHandle } from "../../ffi/nbd_handle.ts";
import {
  CopyShared,
  CopyStopped,
  COUNTER,
  Doorbell,
  serveCopyWorker,
  type Setup,
  SLOT_DATA,
  SLOT_ZERO,
  slotPointers,
  trace,
} from "./copy_shared.ts";
import type { ReaderStart, WorkerScope } from "./copy_messages.ts";
import { BASE_ALLOCATION, dirtyBitmapContext, readExtents } from "./extents.ts";
import { type CopyRange, planRanges, splitRequests } from "./plan.ts";
import { HandlePollError, pollHandles } from "./poll.ts";
import { connectNbd, sourceUri } from "./source.ts";
import { errText, openSlotWriter, type SlotWriter } from "./sink_writers.ts";

/** Largest zero request: within NBD's 32-bit lengths, aligned. */
const ZERO_CHUNK = 2 ** 30;

const scope = self as unknown as WorkerScope;

interface Connection {
  h: NbdHandle;
  /** cookie → slot */
  inflight: Map<bigint, number>;
}

let start: ReaderStart;
let connections: Connection[] = [];
let inline: SlotWriter | undefined;
let ranges: CopyRange[] = [];
let size = 0;
let requestSize = 0;

serveCopyWorker<ReaderStart>(scope, "reader", (msg) => {
  start = msg;
  connect();
  copy();
}, () => closeAll());

function closeAll(failed = true): void {
  for (const c of connections) c.h.close();
  connections = [];
  inline?.close(failed);
  inline = undefined;
}

function connect(): void {
  const metaContexts = [BASE_ALLOCATION];
  if (start.bitmap !== undefined) metaContexts.push(dirtyBitmapContext(start.bitmap));
  const first = connectNbd(start.source, { metaContexts, name: "volt-source" });
  connections.push({ h: first, inflight: new Map() });
  size = first.size();
  const max = first.blockSize("maximum");
  requestSize = max > 0 ? Math.min(start.requestSize, max) : start.requestSize;
  const wanted = first.canMultiConn() ? start.connections : 1;
  for (let i = 1; i < wanted; i++) {
    connections.push({
      h: connectNbd(start.source, { name: `volt-source-${i}` }),
      inflight: new Map(),
    });
  }
  // The writer thread may open its sink now.
  const shared = new CopyShared(start.shared);
  shared.setCounter(COUNTER.size, size);
  shared.setConnected();
  trace("reader: connected");
  if (start.sink) inline = openSlotWriter(start.sink, size, start.stride);
  scope.postMessage({
    type: "connected",
    size,
    requestSize,
    connections: connections.length,
  });
  // The plan (merged extents → ranges to read or zero), while a writer thread opens its
  // sink. Kept as ranges, split into requests lazily. A failure names the offset.
  try {
    ranges = [
      ...planRanges(readExtents(connections[0].h, { bitmap: start.bitmap }), start.selection),
    ];
  } catch (err) {
    throw new Error(`reading the map of ${sourceUri(start.source)} failed: ${errText(err)}`);
  }
  trace(`reader: mapped, ${ranges.length} ranges`);
}

function copy(): void {
  const shared = new CopyShared(start.shared);
  const setup = shared.waitSetup(); // published by the main thread long before, normally
  if (!setup) throw new CopyStopped();
  let total = 0;
  let toRead = 0;
  for (const r of ranges) {
    total += r.length;
    if (r.read) toRead += r.length;
  }
  shared.setCounter(COUNTER.total, total);
  shared.setCounter(COUNTER.planRead, toRead);
  scope.postMessage({ type: "plan", total, read: toRead });

  const loop = new ReadLoop(shared, setup);
  try {
    loop.run();
    trace("reader: all read");
    inline?.finish();
    inline = undefined;
    shared.setReaderDone();
    loop.ringConsumer();
  } finally {
    loop.free();
  }
  for (const c of connections) {
    try {
      c.h.shutdown();
    } catch { /* the copy is complete; a failing disconnect changes nothing */ }
  }
  closeAll(false);
  scope.postMessage({ type: "done" });
  scope.close();
}

/**
 * The copy loop: issue reads (and zero ranges) while slots and depth allow, retire completed
 * reads (and an inline sink's writes), sleep in `poll` when nothing moved. Written as small
 * methods called from a short loop on purpose: V8 compiles a hot loop's whole function at
 * once (on-stack replacement), and one large `copy()` function took it ~30 ms of CPU to
 * optimize, paid by every copy, however small (measured with `--v8-flags=--trace-opt`).
 */
class ReadLoop {
  readonly #shared: CopyShared;
  readonly #bell: Doorbell;
  readonly #consumer: Doorbell;
  readonly #uri = sourceUri(start.source);
  readonly #slotPtr: CPointer[];
  /** A block of zeros to compare reads with (null: no zero detection, or not yet). */
  #zeros: CPointer | null = null;
  readonly #handles: NbdHandle[];
  readonly #retired: number[] = [];
  /** Read slots that came back all zeros before the target was known. */
  readonly #undecided: number[] = [];
  /**
   * Whether the target reads as zeros (zero ranges and zero blocks need not be written):
   * known at once for a callback or inline sink; a writer thread says so once its sink is
   * open. Until then zero decisions wait (reads go on).
   */
  #initiallyZero: boolean | undefined;
  readonly #requests: Generator<CopyRange>;
  #next: CopyRange | undefined;
  readonly #bwlimit = start.bwlimit;
  readonly #t0 = performance.now();
  #issued = 0;
  #firstRead = false;
  /** How long `poll` may sleep (-1: until something happens); set by {@link issue}. */
  #waitMs = -1;

  constructor(shared: CopyShared, setup: Setup) {
    this.#shared = shared;
    this.#bell = new Doorbell(setup.readerBell);
    this.#consumer = new Doorbell(setup.consumerBell);
    this.#slotPtr = slotPointers(
      Deno.UnsafePointer.create(setup.buffer)!,
      shared.slots,
      start.stride,
    );
    this.#handles = [...connections.map((c) => c.h), ...(inline?.handles ?? [])];
    this.#initiallyZero = start.initiallyZero ?? inline?.initiallyZero;
    this.#requests = splitRequests(ranges, requestSize, ZERO_CHUNK);
    this.#next = this.#requests.next().value ?? undefined;
  }

  /** Copies until every request is read and delivered; throws on failure or abort. */
  run(): void {
    // The first reads go out before libc is bound (~2 ms here) and the zero block made:
    // that happens while the server works on them.
    this.#issue();
    if (start.detectZeroes) this.#zeros = libc().calloc(1n, BigInt(requestSize));
    for (;;) {
      if (this.#shared.aborted()) throw new CopyStopped();
      this.#waitMs = -1;
      let progressed = this.#decideUndecided();
      if (this.#issue()) progressed = true;
      if (this.#retireReads()) progressed = true;
      if (this.#retireWrites()) progressed = true;
      if (this.#finished()) return;
      if (!progressed) this.#poll();
    }
  }

  /** Releases the zero block. */
  free(): void {
    if (this.#zeros) libc().free(this.#zeros);
    this.#zeros = null;
  }

  /** Wakes the consumer thread. */
  ringConsumer(): void {
    this.#shared.ringConsumerBell();
    this.#consumer.ring();
  }

  #targetIsZero(): boolean | undefined {
    return (this.#initiallyZero ??= this.#shared.sinkZero());
  }

  #decideUndecided(): boolean {
    if (this.#undecided.length === 0 || this.#targetIsZero() === undefined) return false;
    for (const slot of this.#undecided) this.#zeroRead(slot, this.#initiallyZero!);
    this.#undecided.length = 0;
    return true;
  }

  /** Issues reads (and queues zero ranges) while slots and depth allow. */
  #issue(): boolean {
    const shared = this.#shared;
    let progressed = false;
    for (let next = this.#next; next; next = this.#advance()) {
      if (!next.read) {
        const zero = this.#targetIsZero();
        if (zero === undefined) break; // the writer has not opened its sink yet
        if (zero) {
          shared.count(COUNTER.skipped, next.length);
        } else {
          const slot = shared.freePop();
          if (slot < 0) break;
          shared.setSlot(slot, SLOT_ZERO, next.offset, next.length);
          this.#deliver(slot);
        }
        progressed = true;
        continue;
      }
      if (this.#bwlimit > 0 && this.#overLimit(next.length)) break;
      const conn = this.#leastBusy();
      if (!conn) break;
      const slot = shared.freePop();
      if (slot < 0) break;
      shared.setSlot(slot, SLOT_DATA, next.offset, next.length);
      let cookie: bigint;
      try {
        cookie = conn.h.aioPread(this.#slotPtr[slot], next.length, next.offset);
      } catch (err) {
        throw this.#readFailed(next.offset, next.length, errText(err));
      }
      conn.inflight.set(cookie, slot);
      this.#issued += next.length;
      progressed = true;
    }
    return progressed;
  }

  #advance(): CopyRange | undefined {
    return (this.#next = this.#requests.next().value ?? undefined);
  }

  /** Whether reading `length` more bytes now would exceed the bandwidth limit. */
  #overLimit(length: number): boolean {
    const bwlimit = this.#bwlimit;
    const allowed = (bwlimit * (performance.now() - this.#t0)) / 1000 + requestSize;
    if (this.#issued + length <= allowed) return false;
    this.#waitMs = Math.max(1, Math.ceil(((this.#issued + length - allowed) / bwlimit) * 1000));
    return true;
  }

  /** The connection with the fewest reads in flight, if one has room. */
  #leastBusy(): Connection | undefined {
    let conn: Connection | undefined;
    for (const c of connections) {
      if (c.inflight.size < start.depth && (!conn || c.inflight.size < conn.inflight.size)) {
        conn = c;
      }
    }
    return conn;
  }

  /** Retires completed reads on every connection. */
  #retireReads(): boolean {
    let progressed = false;
    for (const c of connections) {
      while (c.inflight.size > 0 && this.#retireOne(c)) progressed = true;
    }
    return progressed;
  }

  /** Retires one completed read of `c`: false when none has completed. */
  #retireOne(c: Connection): boolean {
    const shared = this.#shared;
    let cookie: bigint;
    try {
      cookie = c.h.aioPeekCommandCompleted();
    } catch (err) {
      throw this.#connectionFailed(c, err);
    }
    if (cookie === 0n) return false;
    const slot = c.inflight.get(cookie);
    const offset = slot === undefined ? 0 : shared.slotOffset(slot);
    const length = slot === undefined ? 0 : shared.slotLength(slot);
    try {
      c.h.aioCommandCompleted(cookie);
    } catch (err) {
      throw this.#readFailed(offset, length, errText(err));
    }
    if (slot === undefined) return true;
    c.inflight.delete(cookie);
    shared.count(COUNTER.read, length);
    if (!this.#firstRead) {
      this.#firstRead = true;
      trace("reader: first read done");
    }
    const zeros = this.#zeros;
    if (zeros && libc().memcmp(this.#slotPtr[slot], zeros, BigInt(length)) === 0) {
      shared.count(COUNTER.zeroDetected, length);
      const zero = this.#targetIsZero();
      if (zero === undefined) this.#undecided.push(slot);
      else this.#zeroRead(slot, zero);
    } else {
      this.#deliver(slot);
    }
    return true;
  }

  /** Retires completed writes of an inline sink. */
  #retireWrites(): boolean {
    if (!inline || inline.inFlight() === 0) return false;
    const retired = this.#retired;
    inline.retire(retired);
    for (const slot of retired) this.#shared.releaseWritten(slot);
    const progressed = retired.length > 0;
    retired.length = 0;
    return progressed;
  }

  #finished(): boolean {
    if (this.#next || this.#undecided.length > 0) return false;
    for (const c of connections) if (c.inflight.size > 0) return false;
    return (inline?.inFlight() ?? 0) === 0;
  }

  /** Sleeps until a socket or the doorbell has something, or `#waitMs` pass. */
  #poll(): void {
    try {
      pollHandles(this.#handles, this.#bell, this.#waitMs);
    } catch (err) {
      if (!(err instanceof HandlePollError)) throw err;
      if (err.index < connections.length) {
        throw this.#connectionFailed(connections[err.index], err.cause);
      }
      throw inline!.pollFailed(err.cause);
    }
  }

  /** A full slot goes to the inline sink, or to the consumer thread. */
  #deliver(slot: number): void {
    const shared = this.#shared;
    if (inline) {
      const kind = shared.slotKind(slot);
      const offset = shared.slotOffset(slot);
      const length = shared.slotLength(slot);
      if (inline.submit(slot, kind, offset, length, this.#slotPtr[slot])) {
        this.#shared.releaseWritten(slot);
      }
    } else {
      shared.fullPush(slot);
      this.ringConsumer();
    }
  }

  /**
   * A read slot that came back all zeros: dropped when the target reads as zeros, else
   * written as zeros.
   */
  #zeroRead(slot: number, zero: boolean): void {
    const shared = this.#shared;
    if (zero) {
      shared.count(COUNTER.skipped, shared.slotLength(slot));
      shared.freePush(slot);
    } else {
      shared.setSlot(slot, SLOT_ZERO, shared.slotOffset(slot), shared.slotLength(slot));
      this.#deliver(slot);
    }
  }

  #readFailed(offset: number, length: number, detail: string): Error {
    return new Error(
      `reading ${length} bytes at offset ${offset} from ${this.#uri} failed: ${detail}`,
    );
  }

  /** A connection failed: the error names the lowest offset it was reading. */
  #connectionFailed(c: Connection, err: unknown): Error {
    const shared = this.#shared;
    let slot = -1;
    for (const s of c.inflight.values()) {
      if (slot < 0 || shared.slotOffset(s) < shared.slotOffset(slot)) slot = s;
    }
    if (slot < 0) return new Error(`reading from ${this.#uri} failed: ${errText(err)}`);
    return this.#readFailed(shared.slotOffset(slot), shared.slotLength(slot), errText(err));
  }
}
