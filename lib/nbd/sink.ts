/**
 * Where a copy writes: the built-in sinks (a raw file or block device, an NBD export, nothing)
 * that the engine drives from its own writer thread, or a {@link CallbackSink} that your code
 * implements and the engine calls on the main thread.
 *
 * @module
 */

import type { NbdSource } from "./source.ts";

/**
 * A raw file (created sparse when missing, resized to the export size when it is a regular
 * file) or a block device.
 */
export interface RawSink {
  type: "raw";
  path: string;
  /**
   * `fdatasync` before the copy reports success, so the data is on disk (default false,
   * like `qemu-img convert`; nbdcopy always syncs).
   */
  sync?: boolean;
}

/** A writable NBD export at least as large as the source, e.g. `qemu-nbd` serving a qcow2. */
export interface NbdSink {
  type: "nbd";
  target: NbdSource;
  /**
   * The target already reads as zeros (a new image), so holes need not be zeroed. Default:
   * decided from the target's `base:allocation` map (all zero → true).
   */
  targetIsZero?: boolean;
}

/** Discards everything (for measuring the read side). */
export interface NullSink {
  type: "null";
}

/** A sink the engine drives from its writer thread. */
export type BuiltinSink = RawSink | NbdSink | NullSink;

/**
 * A sink implemented in TypeScript and called on the main thread, one call at a time, in
 * roughly ascending offset order. `data` is a view of the engine's buffer: valid until the
 * returned promise settles; copy it to keep it.
 *
 * @example
 * ```ts
 * import type { CallbackSink } from "./sink.ts";
 * const chunks = new Map<number, Uint8Array>();
 * const sink: CallbackSink = {
 *   initiallyZero: true,
 *   writeData(offset, data) { chunks.set(offset, data.slice()); },
 *   writeZeroes(offset) { chunks.delete(offset); },
 *   finish() {},
 * };
 * console.assert(typeof sink.writeData === "function");
 * ```
 */
export interface CallbackSink {
  /**
   * The target reads as zeros before the copy (a new, empty file), so zero ranges need not
   * be written. Leave false when it holds older data, e.g. an overlay on a previous backup.
   */
  initiallyZero?: boolean;
  /** Write `data` at `offset`. */
  writeData(offset: number, data: Uint8Array): void | Promise<void>;
  /** Make `[offset, offset + length)` read as zeros. */
  writeZeroes(offset: number, length: number): void | Promise<void>;
  /** Everything has been written: flush, close, commit. Not called when the copy fails. */
  finish(): void | Promise<void>;
  /** The copy failed or was cancelled: release what was opened. */
  abort?(reason: unknown): void | Promise<void>;
}

/** Anything {@link copyNbd} can write to. */
export type CopySink = BuiltinSink | CallbackSink;

/**
 * Whether a sink is implemented by the caller.
 *
 * @example
 * ```ts
 * import { isCallbackSink, nullSink } from "./sink.ts";
 * console.assert(!isCallbackSink(nullSink()));
 * ```
 */
export function isCallbackSink(sink: CopySink): sink is CallbackSink {
  return typeof (sink as CallbackSink).writeData === "function";
}

/**
 * A raw file or block device sink.
 *
 * @example
 * ```ts
 * import { rawSink } from "./sink.ts";
 * console.assert(rawSink("/tmp/disk.raw").type === "raw");
 * ```
 */
export function rawSink(path: string, options: { sync?: boolean } = {}): RawSink {
  return { type: "raw", path, ...options };
}

/**
 * An NBD export sink.
 *
 * @example
 * ```ts
 * import { nbdSink } from "./sink.ts";
 * console.assert(nbdSink({ uri: "nbd+unix:///?socket=/tmp/s" }).type === "nbd");
 * ```
 */
export function nbdSink(target: NbdSource, options: { targetIsZero?: boolean } = {}): NbdSink {
  return { type: "nbd", target, ...options };
}

/**
 * The null sink.
 *
 * @example
 * ```ts
 * import { nullSink } from "./sink.ts";
 * console.assert(nullSink().type === "null");
 * ```
 */
export function nullSink(): NullSink {
  return { type: "null" };
}
