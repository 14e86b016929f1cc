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
  endWorker,
  setTraceOrigin,
  SLOT_DATA,
  SLOT_ZERO,
  trace,
} from "./copy_shared.ts";
import type { ReaderStart, Stop, WorkerScope } from "./copy_messages.ts";
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

scope.onmessage = (event: MessageEvent) => {
  const msg = event.data as ReaderStart | Stop;
  if (msg.type === "start") {
    start = msg;
    setTraceOrigin(msg.timeOrigin);
    trace("reader: started");
    guarded(() => {
      connect();
      copy();
    });
  } else if (msg.type === "stop") {
    closeAll();
    scope.postMessage({ type: "aborted" });
    scope.close();
  }
};

function guarded(fn: () => void): void {
  try {
    fn();
  } catch (err) {
    closeAll();
    endWorker(scope, start?.shared, err);
  }
}

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
  // sink. Kept as ranges, split into requests lazily.
  ranges = [
    ...planRanges(readExtents(connections[0].h, { bitmap: start.bitmap }), start.selection),
  ];
  trace(`reader: mapped, ${ranges.length} ranges`);
}

function copy(): void {
  const shared = new CopyShared(start.shared);
  const setup = shared.waitSetup(); // published by the main thread long before, normally
  if (!setup) throw new CopyStopped();
  const bell = new Doorbell(setup.readerBell);
  const consumer = new Doorbell(setup.consumerBell);
  const lib = libc();
  const uri = sourceUri(start.source);
  const base = Deno.UnsafePointer.create(setup.buffer)!;
  const slotPtr: CPointer[] = [];
  for (let i = 0; i < shared.slots; i++) {
    slotPtr.push(i === 0 ? base : Deno.UnsafePointer.offset(base, i * start.stride)!);
  }
  // Whether the target reads as zeros (zero ranges and zero blocks need not be written):
  // known at once for a callback or inline sink; a writer thread says so once its sink is
  // open. Until then zero decisions wait (reads go on).
  let initiallyZero = start.initiallyZero ?? inline?.initiallyZero;
  const targetIsZero = () => (initiallyZero ??= shared.sinkZero());
  /** Read slots that came back all zeros before the target was known. */
  const undecided: number[] = [];
  const zeros = start.detectZeroes ? lib.calloc(1n, BigInt(requestSize)) : null;

  let total = 0;
  let toRead = 0;
  for (const r of ranges) {
    total += r.length;
    if (r.read) toRead += r.length;
  }
  shared.setCounter(COUNTER.total, total);
  shared.setCounter(COUNTER.planRead, toRead);
  scope.postMessage({ type: "plan", total, read: toRead });

  const requests = splitRequests(ranges, requestSize, ZERO_CHUNK);
  let next: CopyRange | undefined = requests.next().value ?? undefined;
  const ringConsumer = () => {
    shared.ringConsumerBell();
    consumer.ring();
  };
  // A slot written (inline sink): count it and make it free again.
  const release = (slot: number) => {
    const counter = shared.slotKind(slot) === SLOT_DATA ? COUNTER.written : COUNTER.zeroed;
    shared.count(counter, shared.slotLength(slot));
    shared.freePush(slot);
  };
  // A full slot goes to the inline sink, or to the consumer thread.
  const deliver = (slot: number) => {
    if (inline) {
      const kind = shared.slotKind(slot);
      const offset = shared.slotOffset(slot);
      const done = inline.submit(slot, kind, offset, shared.slotLength(slot), slotPtr[slot]);
      if (done) release(slot);
    } else {
      shared.fullPush(slot);
      ringConsumer();
    }
  };
  // A read slot that came back all zeros: dropped when the target reads as zeros, else
  // written as zeros.
  const zeroRead = (slot: number, zero: boolean) => {
    if (zero) {
      shared.count(COUNTER.skipped, shared.slotLength(slot));
      shared.freePush(slot);
    } else {
      shared.setSlot(slot, SLOT_ZERO, shared.slotOffset(slot), shared.slotLength(slot));
      deliver(slot);
    }
  };
  const retired: number[] = [];
  const handles = [...connections.map((c) => c.h), ...(inline?.handles ?? [])];

  const readFailed = (offset: number, length: number, detail: string) =>
    new Error(`reading ${length} bytes at offset ${offset} from ${uri} failed: ${detail}`);
  const firstInflight = (c: Connection): number => {
    let slot = -1;
    for (const s of c.inflight.values()) {
      if (slot < 0 || shared.slotOffset(s) < shared.slotOffset(slot)) slot = s;
    }
    return slot;
  };
  const connectionFailed = (c: Connection, err: unknown): Error => {
    const slot = firstInflight(c);
    if (slot < 0) return new Error(`reading from ${uri} failed: ${errText(err)}`);
    return readFailed(shared.slotOffset(slot), shared.slotLength(slot), errText(err));
  };

  const bwlimit = start.bwlimit;
  const t0 = performance.now();
  let issued = 0;
  let firstRead = false;

  try {
    for (;;) {
      if (shared.aborted()) throw new CopyStopped();
      let progressed = false;
      let waitMs = -1;

      if (undecided.length > 0 && targetIsZero() !== undefined) {
        for (const slot of undecided) zeroRead(slot, initiallyZero!);
        undecided.length = 0;
        progressed = true;
      }

      // Issue reads (and queue zero ranges) while slots and depth allow.
      while (next) {
        if (!next.read) {
          const zero = targetIsZero();
          if (zero === undefined) break; // the writer has not opened its sink yet
          if (zero) {
            shared.count(COUNTER.skipped, next.length);
          } else {
            const slot = shared.freePop();
            if (slot < 0) break;
            shared.setSlot(slot, SLOT_ZERO, next.offset, next.length);
            deliver(slot);
          }
          next = requests.next().value ?? undefined;
          progressed = true;
          continue;
        }
        if (bwlimit > 0) {
          const allowed = (bwlimit * (performance.now() - t0)) / 1000 + requestSize;
          if (issued + next.length > allowed) {
            waitMs = Math.max(1, Math.ceil(((issued + next.length - allowed) / bwlimit) * 1000));
            break;
          }
        }
        let conn: Connection | undefined;
        for (const c of connections) {
          if (c.inflight.size < start.depth && (!conn || c.inflight.size < conn.inflight.size)) {
            conn = c;
          }
        }
        if (!conn) break;
        const slot = shared.freePop();
        if (slot < 0) break;
        shared.setSlot(slot, SLOT_DATA, next.offset, next.length);
        let cookie: bigint;
        try {
          cookie = conn.h.aioPread(slotPtr[slot], next.length, next.offset);
        } catch (err) {
          throw readFailed(next.offset, next.length, errText(err));
        }
        conn.inflight.set(cookie, slot);
        issued += next.length;
        next = requests.next().value ?? undefined;
        progressed = true;
      }

      // Retire completed reads.
      let inflight = 0;
      for (const c of connections) {
        if (c.inflight.size > 0) {
          for (;;) {
            let cookie: bigint;
            try {
              cookie = c.h.aioPeekCommandCompleted();
            } catch (err) {
              throw connectionFailed(c, err);
            }
            if (cookie === 0n) break;
            const slot = c.inflight.get(cookie);
            const offset = slot === undefined ? 0 : shared.slotOffset(slot);
            const length = slot === undefined ? 0 : shared.slotLength(slot);
            try {
              c.h.aioCommandCompleted(cookie);
            } catch (err) {
              throw readFailed(offset, length, errText(err));
            }
            if (slot === undefined) continue;
            c.inflight.delete(cookie);
            shared.count(COUNTER.read, length);
            if (!firstRead) {
              firstRead = true;
              trace("reader: first read done");
            }
            progressed = true;
            if (zeros && lib.memcmp(slotPtr[slot], zeros, BigInt(length)) === 0) {
              shared.count(COUNTER.zeroDetected, length);
              const zero = targetIsZero();
              if (zero === undefined) undecided.push(slot);
              else zeroRead(slot, zero);
            } else {
              deliver(slot);
            }
          }
        }
        inflight += c.inflight.size;
      }

      // Retire completed writes of an inline sink.
      if (inline && inline.inFlight() > 0) {
        inline.retire(retired);
        for (const slot of retired) release(slot);
        if (retired.length > 0) progressed = true;
        retired.length = 0;
      }

      if (!next && inflight === 0 && undecided.length === 0 && (inline?.inFlight() ?? 0) === 0) {
        break;
      }
      if (progressed) continue;
      try {
        pollHandles(handles, bell, waitMs);
      } catch (err) {
        if (!(err instanceof HandlePollError)) throw err;
        if (err.index < connections.length) {
          throw connectionFailed(connections[err.index], err.cause);
        }
        throw inline!.pollFailed(err.cause);
      }
    }
    trace("reader: all read");
    inline?.finish();
    inline = undefined;
    shared.setReaderDone();
    ringConsumer();
  } finally {
    if (zeros) lib.free(zeros);
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
