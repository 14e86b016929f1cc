/**
 * Messages between {@link copyNbd} on the main thread and its reader and writer Workers.
 * Bulk data never travels in messages: it stays in the shared C buffer.
 *
 * Reader: `start` → `connected` → `plan` → `done` (or `aborted` / `error`).
 * Writer: `start` → `done` (or `aborted` / `error`).
 *
 * Both workers are started first and at once; the main thread then allocates the data buffer
 * and the doorbells and publishes them in shared memory ({@link CopyShared.publishSetup}),
 * where the reader picks them up once it has connected and mapped. The writer waits (in
 * shared memory) until the reader has connected and knows the export size, opens its sink,
 * says in shared memory whether the target reads as zeros, and picks up the buffer. So no
 * thread's start-up waits for another's longer than it must.
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
  /** Bytes between slots in the data buffer: the largest request (requests may be smaller). */
  stride: number;
  /**
   * Whether the consumer's target reads as zeros, when the main thread knows it (a callback
   * sink); with an inline sink the reader asks it, with a writer thread it waits for the
   * writer to say.
   */
  initiallyZero?: boolean;
  /** The main thread's `performance.timeOrigin`, for trace lines. */
  timeOrigin: number;
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
  /** Bytes between slots in the data buffer. */
  stride: number;
  /** The main thread's `performance.timeOrigin`, for trace lines. */
  timeOrigin: number;
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
