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
  Doorbell,
  serveCopyWorker,
  type Setup,
  slotPointers,
  trace,
} from "./copy_shared.ts";
import type { WorkerScope, WriterStart } from "./copy_messages.ts";
import { HandlePollError, pollHandles } from "./poll.ts";
import { openAnnouncedWriter, type SlotWriter } from "./sink_writers.ts";

const scope = self as unknown as WorkerScope;

let start: WriterStart;
let writer: SlotWriter | undefined;

serveCopyWorker<WriterStart>(scope, "writer", (msg) => {
  start = msg;
  const shared = new CopyShared(msg.shared);
  if (!shared.waitConnected()) throw new CopyStopped();
  const setup = shared.waitSetup();
  if (!setup) throw new CopyStopped();
  writer = openAnnouncedWriter(msg.sink, shared, msg.stride, setup.readerBell);
  trace("writer: sink open");
  drain(shared, setup);
}, () => {
  writer?.close(true);
  writer = undefined;
});

function drain(shared: CopyShared, setup: Setup): void {
  new WriteLoop(writer!, shared, setup).run();
  trace("writer: all written");
  writer!.finish();
  trace("writer: finished");
  writer = undefined;
  scope.postMessage({ type: "done" });
  scope.close();
}

/**
 * The write loop: write every full slot, hand it back to the reader, sleep in `poll` when
 * nothing moved. Small methods called from a short loop, as in the reader: V8 took ~27 ms
 * of CPU to optimize the loop when it was one function with the sink's writes inlined.
 */
class WriteLoop {
  readonly #w: SlotWriter;
  readonly #shared: CopyShared;
  readonly #bell: Doorbell;
  readonly #reader: Doorbell;
  readonly #slotPtr: CPointer[];
  readonly #retired: number[] = [];

  constructor(w: SlotWriter, shared: CopyShared, setup: Setup) {
    this.#w = w;
    this.#shared = shared;
    this.#bell = new Doorbell(setup.consumerBell);
    this.#reader = new Doorbell(setup.readerBell);
    this.#slotPtr = slotPointers(
      Deno.UnsafePointer.create(setup.buffer)!,
      shared.slots,
      start.stride,
    );
  }

  /** Writes until the reader is done and every slot is written; throws on failure or abort. */
  run(): void {
    for (;;) {
      if (this.#shared.aborted()) throw new CopyStopped();
      let progressed = this.#submitAll();
      if (this.#retire()) progressed = true;
      if (this.#finished()) return;
      if (!progressed) this.#poll();
    }
  }

  /** Starts writing every full slot. */
  #submitAll(): boolean {
    let progressed = false;
    for (let slot = this.#shared.fullPop(); slot >= 0; slot = this.#shared.fullPop()) {
      this.#submit(slot);
      progressed = true;
    }
    return progressed;
  }

  #submit(slot: number): void {
    const shared = this.#shared;
    const kind = shared.slotKind(slot);
    const offset = shared.slotOffset(slot);
    const length = shared.slotLength(slot);
    if (this.#w.submit(slot, kind, offset, length, this.#slotPtr[slot])) this.#release(slot);
  }

  /** Retires completed asynchronous writes (an NBD target). */
  #retire(): boolean {
    if (this.#w.inFlight() === 0) return false;
    const retired = this.#retired;
    this.#w.retire(retired);
    for (const slot of retired) this.#release(slot);
    const progressed = retired.length > 0;
    retired.length = 0;
    return progressed;
  }

  /** A slot written: count it, give it back to the reader. */
  #release(slot: number): void {
    this.#shared.releaseWritten(slot);
    this.#reader.ring();
  }

  #finished(): boolean {
    const shared = this.#shared;
    return shared.readerDone() && shared.fullEmpty() && this.#w.inFlight() === 0;
  }

  #poll(): void {
    try {
      pollHandles(this.#w.handles, this.#bell, -1);
    } catch (err) {
      if (err instanceof HandlePollError) throw this.#w.pollFailed(err.cause);
      throw err;
    }
  }
}
