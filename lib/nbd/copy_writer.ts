/**
 * The copy engine's writer Worker for the built-in sinks: waits until the reader has connected
 * (the export size is then known), opens the sink and says whether its target reads as zeros,
 * then takes full slots off the shared queue, writes them ({@link SlotWriter}), returns them to
 * the reader, and waits in `poll` on its doorbell (and the target's socket for an NBD sink).
 *
 * Loaded by {@link copyNbd}; not imported by anything else.
 *
 * @module
 */

import type { CPointer } from "../../ffi/nbd_handle.ts";
import {
  CopyShared,
  CopyStopped,
  COUNTER,
  Doorbell,
  endWorker,
  setTraceOrigin,
  type Setup,
  SLOT_DATA,
  trace,
} from "./copy_shared.ts";
import type { Stop, WorkerScope, WriterStart } from "./copy_messages.ts";
import { HandlePollError, pollHandles } from "./poll.ts";
import { openSlotWriter, type SlotWriter } from "./sink_writers.ts";

const scope = self as unknown as WorkerScope;

let start: WriterStart;
let writer: SlotWriter | undefined;

scope.onmessage = (event: MessageEvent) => {
  const msg = event.data as WriterStart | Stop;
  if (msg.type === "start") {
    start = msg;
    setTraceOrigin(msg.timeOrigin);
    trace("writer: started");
    guarded(() => {
      const shared = new CopyShared(msg.shared);
      if (!shared.waitConnected()) throw new CopyStopped();
      writer = openSlotWriter(msg.sink, shared.counter(COUNTER.size), msg.stride);
      const setup = shared.waitSetup();
      if (!setup) throw new CopyStopped();
      shared.setSinkOpen(writer.initiallyZero);
      new Doorbell(setup.readerBell).ring();
      trace("writer: sink open");
      drain(shared, setup);
    });
  } else if (msg.type === "stop") {
    writer?.close(true);
    writer = undefined;
    scope.postMessage({ type: "aborted" });
    scope.close();
  }
};

function guarded(fn: () => void): void {
  try {
    fn();
  } catch (err) {
    writer?.close(true);
    writer = undefined;
    endWorker(scope, start?.shared, err);
  }
}

function drain(shared: CopyShared, setup: Setup): void {
  const w = writer!;
  const bell = new Doorbell(setup.consumerBell);
  const reader = new Doorbell(setup.readerBell);
  const base = Deno.UnsafePointer.create(setup.buffer)!;
  const slotPtr: CPointer[] = [];
  for (let i = 0; i < shared.slots; i++) {
    slotPtr.push(i === 0 ? base : Deno.UnsafePointer.offset(base, i * start.stride)!);
  }
  const retired: number[] = [];
  const release = (slot: number) => {
    const length = shared.slotLength(slot);
    shared.count(shared.slotKind(slot) === SLOT_DATA ? COUNTER.written : COUNTER.zeroed, length);
    shared.freePush(slot);
    reader.ring();
  };

  for (;;) {
    if (shared.aborted()) throw new CopyStopped();
    let progressed = false;
    for (let slot = shared.fullPop(); slot >= 0; slot = shared.fullPop()) {
      progressed = true;
      const done = w.submit(
        slot,
        shared.slotKind(slot),
        shared.slotOffset(slot),
        shared.slotLength(slot),
        slotPtr[slot],
      );
      if (done) release(slot);
    }
    if (w.inFlight() > 0) {
      w.retire(retired);
      for (const slot of retired) release(slot);
      if (retired.length > 0) progressed = true;
      retired.length = 0;
    }
    if (shared.readerDone() && shared.fullEmpty() && w.inFlight() === 0) break;
    if (progressed) continue;
    try {
      pollHandles(w.handles, bell, -1);
    } catch (err) {
      if (err instanceof HandlePollError) throw w.pollFailed(err.cause);
      throw err;
    }
  }
  trace("writer: all written");
  w.finish();
  trace("writer: finished");
  writer = undefined;
  scope.postMessage({ type: "done" });
  scope.close();
}
