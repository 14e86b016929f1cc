/**
 * Messages between {@link copyNbd} on the main thread and its reader and writer Workers.
 * Bulk data never travels in messages: it stays in the shared C buffer.
 *
 * Reader: `start` → `connected` → `go` → `plan` → `done` (or `aborted` / `error`).
 * Writer: `start` → `ready` → `go` → `done` (or `aborted` / `error`).
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

/** Main → reader or writer: the data buffer is ready, copy. */
export interface Go {
  type: "go";
  /** Address of the C buffer, `slots × requestSize` bytes. */
  buffer: bigint;
  /** The target reads as zeros already (reader: skip zero ranges). */
  initiallyZero: boolean;
}

/** Main → reader or writer waiting for `go`: release everything and end. */
export interface Stop {
  type: "stop";
}

/** Reader → main: connected. */
export interface ReaderConnected {
  type: "connected";
  size: number;
  requestSize: number;
  connections: number;
  /** With an inline sink: whether its target reads as zeros already. */
  initiallyZero?: boolean;
}

/** Reader → main: the plan is known. */
export interface ReaderPlan {
  type: "plan";
  /** Bytes the plan covers. */
  total: number;
  /** Bytes to read. */
  read: number;
}

/** Main → writer: open the sink. */
export interface WriterStart {
  type: "start";
  shared: SharedArrayBuffer;
  sink: BuiltinSink;
  size: number;
  requestSize: number;
  readerBell: number;
  writerBell: number;
}

/** Writer → main: the sink is open. */
export interface WriterReady {
  type: "ready";
  initiallyZero: boolean;
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
  | WriterReady
  | WorkerDone
  | WorkerAborted
  | WorkerFailed;

/** The part of the Worker global scope the workers use. */
export interface WorkerScope {
  postMessage(message: WorkerMessage): void;
  onmessage: ((event: MessageEvent) => void) | null;
  close(): void;
}
