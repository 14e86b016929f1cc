/**
 * {@link NbdHandle}: one `struct nbd_handle *`, with a method per libnbd call volt uses. Every
 * failure is an {@link NbdError}; every `UnsafeCallback` the handle creates is closed exactly
 * once, in {@link NbdHandle.close}.
 *
 * Methods block the calling thread (connect, pread, poll): call them from a Worker, or only
 * for short work on the main thread.
 *
 * @module
 */

import {
  cstr,
  lastNbdError,
  type Libnbd,
  libnbd,
  LIBNBD_SIZE,
  NbdError,
  unwrap,
} from "./libnbd.ts";

/** 24 zero bytes: "no callback" for a `{callback, user_data, free}` struct argument. */
const NO_CALLBACK = new Uint8Array(24);

/** The C signature of `nbd_extent_callback.callback`. */
const EXTENT_CALLBACK = {
  // int (*callback) (void *user_data, const char *metacontext, uint64_t offset,
  //                  uint32_t *entries, size_t nr_entries, int *error);
  parameters: ["pointer", "pointer", "u64", "pointer", "usize", "pointer"],
  result: "i32",
} as const;

/** One block-status reply chunk: `entries` holds `[length, flags]` pairs. */
export type ExtentHandler = (metacontext: string, offset: number, entries: Uint32Array) => void;

/** A raw pointer value usable as a C `void *`. */
export type CPointer = NonNullable<Deno.PointerValue>;

/**
 * One libnbd handle.
 *
 * @example
 * ```ts ignore
 * import { NbdHandle } from "./nbd_handle.ts";
 * using h = new NbdHandle();
 * h.addMetaContext("base:allocation");
 * h.connectUri("nbd+unix:///?socket=/tmp/nbd.sock");
 * console.log(h.size());
 * ```
 */
export class NbdHandle implements Disposable {
  #lib: Libnbd;
  #h: CPointer | null;
  #extentCallback: Deno.UnsafeCallback<typeof EXTENT_CALLBACK> | undefined;
  #extentStruct: Uint8Array<ArrayBuffer> | undefined;
  #onExtent: ExtentHandler | undefined;
  #callbackError: unknown;

  /** Creates a handle (`nbd_create`); `name` shows in libnbd's debug output. */
  constructor(name?: string) {
    this.#lib = libnbd();
    const h = this.#lib.nbd_create();
    if (h === null) throw lastNbdError("nbd_create");
    this.#h = h;
    if (name) unwrap("nbd_set_handle_name", this.#lib.nbd_set_handle_name(h, cstr(name)));
  }

  /** The `struct nbd_handle *` (throws after close). */
  get pointer(): CPointer {
    if (this.#h === null) throw new NbdError("nbd_handle", "handle is closed", 0);
    return this.#h;
  }

  /** Whether {@link close} has run. */
  get closed(): boolean {
    return this.#h === null;
  }

  /** `nbd_set_export_name`. */
  setExportName(name: string): void {
    unwrap("nbd_set_export_name", this.#lib.nbd_set_export_name(this.pointer, cstr(name)));
  }

  /** `nbd_add_meta_context`: ask for a meta context before connecting. */
  addMetaContext(name: string): void {
    unwrap("nbd_add_meta_context", this.#lib.nbd_add_meta_context(this.pointer, cstr(name)));
  }

  /** `nbd_set_pread_initialize`: false skips libnbd's memset of read buffers. */
  setPreadInitialize(on: boolean): void {
    unwrap("nbd_set_pread_initialize", this.#lib.nbd_set_pread_initialize(this.pointer, on));
  }

  /** `nbd_connect_uri`, e.g. `nbd+unix:///export?socket=/run/x.sock`. */
  connectUri(uri: string): void {
    unwrap("nbd_connect_uri", this.#lib.nbd_connect_uri(this.pointer, cstr(uri)));
  }

  /** `nbd_connect_unix`: connect to a unix socket (export name set beforehand). */
  connectUnix(socket: string): void {
    unwrap("nbd_connect_unix", this.#lib.nbd_connect_unix(this.pointer, cstr(socket)));
  }

  /** `nbd_get_size`: the export size in bytes. */
  size(): number {
    return Number(unwrap("nbd_get_size", this.#lib.nbd_get_size(this.pointer)));
  }

  /** `nbd_can_meta_context`: whether the server agreed to a meta context. */
  canMetaContext(name: string): boolean {
    return unwrap(
      "nbd_can_meta_context",
      this.#lib.nbd_can_meta_context(this.pointer, cstr(name)),
    ) === 1;
  }

  /** `nbd_can_multi_conn`. */
  canMultiConn(): boolean {
    return unwrap("nbd_can_multi_conn", this.#lib.nbd_can_multi_conn(this.pointer)) === 1;
  }

  /** `nbd_is_read_only`. */
  isReadOnly(): boolean {
    return unwrap("nbd_is_read_only", this.#lib.nbd_is_read_only(this.pointer)) === 1;
  }

  /** `nbd_can_zero`. */
  canZero(): boolean {
    return unwrap("nbd_can_zero", this.#lib.nbd_can_zero(this.pointer)) === 1;
  }

  /** `nbd_can_fast_zero`. */
  canFastZero(): boolean {
    return unwrap("nbd_can_fast_zero", this.#lib.nbd_can_fast_zero(this.pointer)) === 1;
  }

  /** `nbd_can_trim`. */
  canTrim(): boolean {
    return unwrap("nbd_can_trim", this.#lib.nbd_can_trim(this.pointer)) === 1;
  }

  /** `nbd_can_flush`. */
  canFlush(): boolean {
    return unwrap("nbd_can_flush", this.#lib.nbd_can_flush(this.pointer)) === 1;
  }

  /** `nbd_get_block_size`: the server's limit, or 0 when it did not say. */
  blockSize(kind: keyof typeof LIBNBD_SIZE): number {
    return Number(unwrap(
      "nbd_get_block_size",
      this.#lib.nbd_get_block_size(this.pointer, LIBNBD_SIZE[kind]),
    ));
  }

  /** `nbd_pread` into `buf` (a JS buffer, kept alive by the caller for the call). */
  pread(buf: Uint8Array, offset: number, flags = 0): void {
    unwrap(
      "nbd_pread",
      this.#lib.nbd_pread(
        this.pointer,
        bufPointer(buf),
        BigInt(buf.byteLength),
        BigInt(offset),
        flags,
      ),
    );
  }

  /** `nbd_pwrite` from `buf`. */
  pwrite(buf: Uint8Array, offset: number, flags = 0): void {
    unwrap(
      "nbd_pwrite",
      this.#lib.nbd_pwrite(
        this.pointer,
        bufPointer(buf),
        BigInt(buf.byteLength),
        BigInt(offset),
        flags,
      ),
    );
  }

  /** `nbd_zero`: make `[offset, offset+count)` read as zeros. */
  zero(count: number, offset: number, flags = 0): void {
    unwrap("nbd_zero", this.#lib.nbd_zero(this.pointer, BigInt(count), BigInt(offset), flags));
  }

  /** `nbd_trim`. */
  trim(count: number, offset: number, flags = 0): void {
    unwrap("nbd_trim", this.#lib.nbd_trim(this.pointer, BigInt(count), BigInt(offset), flags));
  }

  /** `nbd_flush`. */
  flush(flags = 0): void {
    unwrap("nbd_flush", this.#lib.nbd_flush(this.pointer, flags));
  }

  /**
   * `nbd_block_status`: calls `onExtent` once per meta context the server answers for, while
   * the call runs. The handler only records; it must not call back into this handle.
   */
  blockStatus(count: number, offset: number, onExtent: ExtentHandler, flags = 0): void {
    const h = this.pointer;
    if (!this.#extentCallback) {
      this.#extentCallback = new Deno.UnsafeCallback(
        EXTENT_CALLBACK,
        (_user, ctx, off, entries, nr) => this.#extent(ctx, off, entries, nr),
      );
      this.#extentStruct = callbackStruct(this.#extentCallback.pointer);
    }
    this.#onExtent = onExtent;
    this.#callbackError = undefined;
    try {
      const r = this.#lib.nbd_block_status(
        h,
        BigInt(count),
        BigInt(offset),
        this.#extentStruct!,
        flags,
      );
      if (this.#callbackError !== undefined) throw this.#callbackError;
      unwrap("nbd_block_status", r);
    } finally {
      this.#onExtent = undefined;
    }
  }

  #extent(
    ctx: Deno.PointerValue,
    offset: number | bigint,
    entries: Deno.PointerValue,
    nr: number | bigint,
  ): number {
    try {
      const name = ctx ? Deno.UnsafePointerView.getCString(ctx) : "";
      const n = Number(nr);
      const copy = new Uint32Array(n);
      if (n > 0 && entries) {
        copy.set(new Uint32Array(Deno.UnsafePointerView.getArrayBuffer(entries, n * 4)));
      }
      this.#onExtent?.(name, Number(offset), copy);
      return 0;
    } catch (err) {
      this.#callbackError ??= err;
      return -1; // libnbd fails the command (EPROTO unless *error is set)
    }
  }

  /** `nbd_aio_pread` into C memory, no completion callback; returns the cookie. */
  aioPread(buf: CPointer, count: number, offset: number, flags = 0): bigint {
    return unwrap(
      "nbd_aio_pread",
      this.#lib.nbd_aio_pread(this.pointer, buf, BigInt(count), BigInt(offset), NO_CALLBACK, flags),
    );
  }

  /** `nbd_aio_pwrite` from C memory, no completion callback; returns the cookie. */
  aioPwrite(buf: CPointer, count: number, offset: number, flags = 0): bigint {
    return unwrap(
      "nbd_aio_pwrite",
      this.#lib.nbd_aio_pwrite(
        this.pointer,
        buf,
        BigInt(count),
        BigInt(offset),
        NO_CALLBACK,
        flags,
      ),
    );
  }

  /** `nbd_aio_zero`, no completion callback; returns the cookie. */
  aioZero(count: number, offset: number, flags = 0): bigint {
    return unwrap(
      "nbd_aio_zero",
      this.#lib.nbd_aio_zero(this.pointer, BigInt(count), BigInt(offset), NO_CALLBACK, flags),
    );
  }

  /** `nbd_aio_trim`, no completion callback; returns the cookie. */
  aioTrim(count: number, offset: number, flags = 0): bigint {
    return unwrap(
      "nbd_aio_trim",
      this.#lib.nbd_aio_trim(this.pointer, BigInt(count), BigInt(offset), NO_CALLBACK, flags),
    );
  }

  /** `nbd_aio_flush`, no completion callback; returns the cookie. */
  aioFlush(flags = 0): bigint {
    return unwrap("nbd_aio_flush", this.#lib.nbd_aio_flush(this.pointer, NO_CALLBACK, flags));
  }

  /**
   * `nbd_aio_command_completed`: true once the command is retired, false while in flight;
   * a failed command throws its {@link NbdError}.
   */
  aioCommandCompleted(cookie: bigint): boolean {
    return unwrap(
      "nbd_aio_command_completed",
      this.#lib.nbd_aio_command_completed(this.pointer, cookie),
    ) === 1;
  }

  /**
   * `nbd_aio_peek_command_completed`: the cookie of a completed command not yet retired,
   * 0n when none has completed (or none is in flight).
   */
  aioPeekCommandCompleted(): bigint {
    const r = this.#lib.nbd_aio_peek_command_completed(this.pointer);
    if (r === -1n) {
      if (this.aioInFlight() === 0) return 0n;
      throw lastNbdError("nbd_aio_peek_command_completed");
    }
    return r;
  }

  /** `nbd_aio_in_flight`: commands sent or queued and not yet retired. */
  aioInFlight(): number {
    return unwrap("nbd_aio_in_flight", this.#lib.nbd_aio_in_flight(this.pointer));
  }

  /** `nbd_poll`: wait up to `timeout` ms (-1 forever); 0 on timeout. */
  poll(timeout: number): number {
    return unwrap("nbd_poll", this.#lib.nbd_poll(this.pointer, timeout));
  }

  /** `nbd_aio_get_fd`: the socket, for polling it with other descriptors. */
  aioGetFd(): number {
    return unwrap("nbd_aio_get_fd", this.#lib.nbd_aio_get_fd(this.pointer));
  }

  /** `nbd_aio_get_direction`: `LIBNBD_AIO_DIRECTION_*` bits to poll for. */
  aioGetDirection(): number {
    return this.#lib.nbd_aio_get_direction(this.pointer);
  }

  /** `nbd_aio_notify_read`: the socket is readable. */
  aioNotifyRead(): void {
    unwrap("nbd_aio_notify_read", this.#lib.nbd_aio_notify_read(this.pointer));
  }

  /** `nbd_aio_notify_write`: the socket is writable. */
  aioNotifyWrite(): void {
    unwrap("nbd_aio_notify_write", this.#lib.nbd_aio_notify_write(this.pointer));
  }

  /** `nbd_shutdown`: a clean disconnect (waits for commands in flight). */
  shutdown(flags = 0): void {
    unwrap("nbd_shutdown", this.#lib.nbd_shutdown(this.pointer, flags));
  }

  /**
   * `nbd_close`, then closes this handle's callbacks. Safe to call twice. Commands still in
   * flight are abandoned: their buffers are no longer touched once this returns.
   */
  close(): void {
    if (this.#h !== null) {
      this.#lib.nbd_close(this.#h);
      this.#h = null;
    }
    if (this.#extentCallback) {
      this.#extentCallback.close();
      this.#extentCallback = undefined;
      this.#extentStruct = undefined;
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** A `{callback, user_data = NULL, free = NULL}` struct for a by-value argument. */
function callbackStruct(fn: Deno.PointerValue): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(24);
  new BigUint64Array(bytes.buffer)[0] = BigInt(Deno.UnsafePointer.value(fn));
  return bytes;
}

function bufPointer(buf: Uint8Array): Deno.PointerValue {
  return Deno.UnsafePointer.of(buf as Uint8Array<ArrayBuffer>);
}
