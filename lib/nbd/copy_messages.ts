/**
 * Messages between {@link copyNbd} on the main thread and its reader and writer Workers.
 * Bulk data never travels in messages: it stays in the shared C buffer.
 *
 * Reader: `start` → `connected` → `plan` → `done` (or `aborted` / `error`).
 * Writer: `start` → `done` (or `aborted` / `error`).
 *
 * Both start at once, with the data buffer already allocated: the reader connects, maps and
 * copies without waiting for anything; the writer waits (in shared memory) until the reader
 * has connected and knows the export size, opens its sink and says in shared memory whether
 * the target reads as zeros. So neither thread's start-up waits for the other's.
 *
 * @module
 */

import type { RangeSelection } from "./plan.ts";
import type { BuiltinSink } from "./sink.ts";
import type { NbdSource } from "./source.ts";

/** Main → reader: connect. */
export interface ReaderStart {
  type: "start";
  shared: SharedArrayBuffer;
  source: NbdSource;
  bitmap?: string;
  selection: RangeSelection;
  connections: number;
  depth: number;
  requestSize: number;
  /** Read bandwidth limit in bytes per second, 0 for none. */
  bwlimit: number;
  detectZeroes: boolean;
  /** Address of the C data buffer: `slots × stride` bytes. */
  buffer: bigint;
  /** Bytes between slots in the buffer: the largest request (requests may be smaller). */
  stride: number;
  /**
   * Whether the consumer's target reads as zeros, when the main thread knows it (a callback
   * sink); with an inline sink the reader asks it, with a writer thread it waits for the
   * writer to say.
   */
  initiallyZero?: boolean;
  /** The main thread's `performance.timeOrigin`, for trace lines. */
  timeOrigin: number;
  /** The reader's eventfd doorbell. */
  readerBell: number;
  /** The consumer's eventfd doorbell, -1 when the consumer is the main thread. */
  consumerBell: number;
  /**
   * A built-in sink the reader writes itself, in the same loop (no writer thread): used for
   * NBD and null sinks, whose writes are asynchronous or free.
   */
  sink?: BuiltinSink;
}

/** Main → a reader or writer that has not started: release everything and end. */
export interface Stop {
  type: "stop";
}

/** Reader → main: connected. */
export interface ReaderConnected {
  type: "connected";
  size: number;
  requestSize: number;
  connections: number;
}

/** Reader → main: the plan is known. */
export interface ReaderPlan {
  type: "plan";
  /** Bytes the plan covers. */
  total: number;
  /** Bytes to read. */
  read: number;
}

/** Main → writer: open the sink once the reader has connected, and write. */
export interface WriterStart {
  type: "start";
  shared: SharedArrayBuffer;
  sink: BuiltinSink;
  /** Address of the C data buffer. */
  buffer: bigint;
  /** Bytes between slots in the buffer. */
  stride: number;
  /** The main thread's `performance.timeOrigin`, for trace lines. */
  timeOrigin: number;
  readerBell: number;
  writerBell: number;
}

/** Either worker → main: finished its part. */
export interface WorkerDone {
  type: "done";
}

/** Either worker → main: stopped because of the abort flag. */
export interface WorkerAborted {
  type: "aborted";
}

/** Either worker → main: failed (after releasing its handles). */
export interface WorkerFailed {
  type: "error";
  /** One line, naming the offset when the failure concerns one. */
  message: string;
  /** `NbdError` / `VoltError` / … */
  name: string;
}

/** Anything a worker sends. */
export type WorkerMessage =
  | ReaderConnected
  | ReaderPlan
  | WorkerDone
  | WorkerAborted
  | WorkerFailed;

/** The part of the Worker global scope the workers use. */
export interface WorkerScope {
  postMessage(message: WorkerMessage): void;
  onmessage: ((event: MessageEvent) => void) | null;
  close(): void;
}
