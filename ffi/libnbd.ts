/**
 * The libnbd binding: one symbol table with the C prototype beside each entry, the loader, and
 * {@link NbdError}. Handles are wrapped by {@link NbdHandle} in `nbd_handle.ts`.
 *
 * The library is `libnbd.so.0` (Debian `libnbd0`), or the path in `$VOLT_LIBNBD`. It is opened
 * on first use, once per thread (each Worker opens its own view of the same library).
 *
 * No call here is `nonblocking`: blocking calls (connect, `nbd_poll`, `nbd_pread`) belong in a
 * Worker, where blocking is harmless; the main thread only makes short calls.
 *
 * @module
 */

import { VoltError } from "../lib/errors.ts";
import { bindOnUse } from "./bind_on_use.ts";
import { libc } from "./libc.ts";

/** The callback struct `{callback, user_data, free}` that libnbd takes by value (24 bytes). */
const CALLBACK_STRUCT = { struct: ["pointer", "pointer", "pointer"] } as const;

/** Every libnbd function volt calls. */
export const LIBNBD_SYMBOLS = {
  // struct nbd_handle *nbd_create (void);
  nbd_create: { parameters: [], result: "pointer" },
  // void nbd_close (struct nbd_handle *h);
  nbd_close: { parameters: ["pointer"], result: "void" },
  // const char *nbd_get_error (void);
  nbd_get_error: { parameters: [], result: "pointer" },
  // int nbd_get_errno (void);
  nbd_get_errno: { parameters: [], result: "i32" },
  // const char *nbd_get_version (struct nbd_handle *h);
  nbd_get_version: { parameters: ["pointer"], result: "pointer" },
  // int nbd_set_handle_name (struct nbd_handle *h, const char *handle_name);
  nbd_set_handle_name: { parameters: ["pointer", "buffer"], result: "i32" },
  // int nbd_set_export_name (struct nbd_handle *h, const char *export_name);
  nbd_set_export_name: { parameters: ["pointer", "buffer"], result: "i32" },
  // int nbd_add_meta_context (struct nbd_handle *h, const char *name);
  nbd_add_meta_context: { parameters: ["pointer", "buffer"], result: "i32" },
  // int nbd_set_pread_initialize (struct nbd_handle *h, bool request);
  nbd_set_pread_initialize: { parameters: ["pointer", "bool"], result: "i32" },
  // int nbd_connect_uri (struct nbd_handle *h, const char *uri);
  nbd_connect_uri: { parameters: ["pointer", "buffer"], result: "i32" },
  // int nbd_connect_unix (struct nbd_handle *h, const char *unixsocket);
  nbd_connect_unix: { parameters: ["pointer", "buffer"], result: "i32" },
  // int nbd_shutdown (struct nbd_handle *h, uint32_t flags);
  nbd_shutdown: { parameters: ["pointer", "u32"], result: "i32" },
  // int64_t nbd_get_size (struct nbd_handle *h);
  nbd_get_size: { parameters: ["pointer"], result: "i64" },
  // int nbd_can_meta_context (struct nbd_handle *h, const char *metacontext);
  nbd_can_meta_context: { parameters: ["pointer", "buffer"], result: "i32" },
  // int nbd_can_multi_conn (struct nbd_handle *h);
  nbd_can_multi_conn: { parameters: ["pointer"], result: "i32" },
  // int nbd_is_read_only (struct nbd_handle *h);
  nbd_is_read_only: { parameters: ["pointer"], result: "i32" },
  // int nbd_can_zero (struct nbd_handle *h);
  nbd_can_zero: { parameters: ["pointer"], result: "i32" },
  // int nbd_can_fast_zero (struct nbd_handle *h);
  nbd_can_fast_zero: { parameters: ["pointer"], result: "i32" },
  // int nbd_can_trim (struct nbd_handle *h);
  nbd_can_trim: { parameters: ["pointer"], result: "i32" },
  // int nbd_can_flush (struct nbd_handle *h);
  nbd_can_flush: { parameters: ["pointer"], result: "i32" },
  // int64_t nbd_get_block_size (struct nbd_handle *h, int size_type);
  nbd_get_block_size: { parameters: ["pointer", "i32"], result: "i64" },
  // int nbd_pread (struct nbd_handle *h, void *buf, size_t count, uint64_t offset,
  //                uint32_t flags);
  nbd_pread: { parameters: ["pointer", "pointer", "usize", "u64", "u32"], result: "i32" },
  // int nbd_pwrite (struct nbd_handle *h, const void *buf, size_t count, uint64_t offset,
  //                 uint32_t flags);
  nbd_pwrite: { parameters: ["pointer", "pointer", "usize", "u64", "u32"], result: "i32" },
  // int nbd_zero (struct nbd_handle *h, uint64_t count, uint64_t offset, uint32_t flags);
  nbd_zero: { parameters: ["pointer", "u64", "u64", "u32"], result: "i32" },
  // int nbd_trim (struct nbd_handle *h, uint64_t count, uint64_t offset, uint32_t flags);
  nbd_trim: { parameters: ["pointer", "u64", "u64", "u32"], result: "i32" },
  // int nbd_flush (struct nbd_handle *h, uint32_t flags);
  nbd_flush: { parameters: ["pointer", "u32"], result: "i32" },
  // int nbd_block_status (struct nbd_handle *h, uint64_t count, uint64_t offset,
  //                       nbd_extent_callback extent_callback, uint32_t flags);
  nbd_block_status: {
    parameters: ["pointer", "u64", "u64", CALLBACK_STRUCT, "u32"],
    result: "i32",
  },
  // int64_t nbd_aio_pread (struct nbd_handle *h, void *buf, size_t count, uint64_t offset,
  //                        nbd_completion_callback completion_callback, uint32_t flags);
  nbd_aio_pread: {
    parameters: ["pointer", "pointer", "usize", "u64", CALLBACK_STRUCT, "u32"],
    result: "i64",
  },
  // int64_t nbd_aio_pwrite (struct nbd_handle *h, const void *buf, size_t count,
  //                         uint64_t offset, nbd_completion_callback completion_callback,
  //                         uint32_t flags);
  nbd_aio_pwrite: {
    parameters: ["pointer", "pointer", "usize", "u64", CALLBACK_STRUCT, "u32"],
    result: "i64",
  },
  // int64_t nbd_aio_zero (struct nbd_handle *h, uint64_t count, uint64_t offset,
  //                       nbd_completion_callback completion_callback, uint32_t flags);
  nbd_aio_zero: {
    parameters: ["pointer", "u64", "u64", CALLBACK_STRUCT, "u32"],
    result: "i64",
  },
  // int64_t nbd_aio_trim (struct nbd_handle *h, uint64_t count, uint64_t offset,
  //                       nbd_completion_callback completion_callback, uint32_t flags);
  nbd_aio_trim: {
    parameters: ["pointer", "u64", "u64", CALLBACK_STRUCT, "u32"],
    result: "i64",
  },
  // int64_t nbd_aio_flush (struct nbd_handle *h,
  //                        nbd_completion_callback completion_callback, uint32_t flags);
  nbd_aio_flush: { parameters: ["pointer", CALLBACK_STRUCT, "u32"], result: "i64" },
  // int nbd_aio_command_completed (struct nbd_handle *h, uint64_t cookie);
  nbd_aio_command_completed: { parameters: ["pointer", "u64"], result: "i32" },
  // int64_t nbd_aio_peek_command_completed (struct nbd_handle *h);
  nbd_aio_peek_command_completed: { parameters: ["pointer"], result: "i64" },
  // int nbd_aio_in_flight (struct nbd_handle *h);
  nbd_aio_in_flight: { parameters: ["pointer"], result: "i32" },
  // int nbd_poll (struct nbd_handle *h, int timeout);
  nbd_poll: { parameters: ["pointer", "i32"], result: "i32" },
  // int nbd_aio_get_fd (struct nbd_handle *h);
  nbd_aio_get_fd: { parameters: ["pointer"], result: "i32" },
  // unsigned nbd_aio_get_direction (struct nbd_handle *h);
  nbd_aio_get_direction: { parameters: ["pointer"], result: "u32" },
  // int nbd_aio_notify_read (struct nbd_handle *h);
  nbd_aio_notify_read: { parameters: ["pointer"], result: "i32" },
  // int nbd_aio_notify_write (struct nbd_handle *h);
  nbd_aio_notify_write: { parameters: ["pointer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/**
 * What reading an export needs (connect, map, asynchronous reads, polling, errors): bound
 * when a thread first loads the library; the rest on first use (see `bind_on_use.ts`).
 */
const READER_SYMBOLS = [
  "nbd_create",
  "nbd_close",
  "nbd_get_error",
  "nbd_get_errno",
  "nbd_set_handle_name",
  "nbd_set_export_name",
  "nbd_add_meta_context",
  "nbd_set_pread_initialize",
  "nbd_connect_uri",
  "nbd_connect_unix",
  "nbd_shutdown",
  "nbd_get_size",
  "nbd_can_meta_context",
  "nbd_can_multi_conn",
  "nbd_get_block_size",
  "nbd_block_status",
  "nbd_aio_pread",
  "nbd_aio_command_completed",
  "nbd_aio_peek_command_completed",
  "nbd_aio_in_flight",
  "nbd_aio_get_fd",
  "nbd_aio_get_direction",
  "nbd_aio_notify_read",
  "nbd_aio_notify_write",
] as const satisfies readonly (keyof typeof LIBNBD_SYMBOLS)[];

/** The loaded libnbd functions. */
export type Libnbd = Deno.DynamicLibrary<typeof LIBNBD_SYMBOLS>["symbols"];

/** `nbd_get_block_size` size types. */
export const LIBNBD_SIZE = { minimum: 0, preferred: 1, maximum: 2 } as const;
/** Command flags (`LIBNBD_CMD_FLAG_*`). */
export const LIBNBD_CMD_FLAG = {
  FUA: 0x01,
  NO_HOLE: 0x02,
  DF: 0x04,
  REQ_ONE: 0x08,
  FAST_ZERO: 0x10,
} as const;
/** `base:allocation` extent flags (`LIBNBD_STATE_*`). */
export const LIBNBD_STATE = { HOLE: 1, ZERO: 2, DIRTY: 1 } as const;
/** `nbd_aio_get_direction` bits. */
export const LIBNBD_AIO_DIRECTION = { READ: 1, WRITE: 2 } as const;
/** `nbd_shutdown` flag: abandon commands not yet sent. */
export const LIBNBD_SHUTDOWN_ABANDON_PENDING = 0x10000;

/** The library name when `$VOLT_LIBNBD` is not set. */
export const LIBNBD_NAME = "libnbd.so.0";

let loaded: Libnbd | undefined;

/**
 * The libnbd functions, loading the library on first use. A missing library is one clear
 * {@link VoltError} line, not a stack trace.
 *
 * @example
 * ```ts ignore
 * import { libnbd } from "./libnbd.ts";
 * const h = libnbd().nbd_create();
 * libnbd().nbd_close(h);
 * ```
 */
export function libnbd(): Libnbd {
  if (loaded) return loaded;
  const override = Deno.env.get("VOLT_LIBNBD");
  const path = override || LIBNBD_NAME;
  try {
    loaded = bindOnUse(
      path,
      LIBNBD_SYMBOLS,
      READER_SYMBOLS,
      (name) => new VoltError(`${path} has no ${name}: install a newer libnbd0`),
    );
  } catch {
    // Deno's own message repeats the path and adds nothing a user can act on.
    if (override) {
      throw new VoltError(
        `${LIBNBD_NAME} not found at '${override}' (from VOLT_LIBNBD): ` +
          `install libnbd0 or fix VOLT_LIBNBD`,
      );
    }
    throw new VoltError(`${LIBNBD_NAME} not found: install libnbd0`);
  }
  return loaded;
}

/** `RTLD_NOW` for `dlopen(3)`. */
const RTLD_NOW = 2;
let preloading: Promise<unknown> | undefined;

/**
 * Starts mapping libnbd and the libraries it needs (gnutls, libxml2, …: about 4 ms here) into
 * the process on a background thread (`dlopen(3)` as a `nonblocking` call), so that a
 * {@link libnbd} call soon after, typically in a Worker that is still booting, only binds
 * symbols. Binds nothing itself, never throws: a missing library is reported by
 * {@link libnbd}. The library stays mapped for the life of the process.
 *
 * @example
 * ```ts ignore
 * import { preloadLibnbd } from "./libnbd.ts";
 * preloadLibnbd(); // then start the Worker that calls libnbd()
 * ```
 */
export function preloadLibnbd(): void {
  if (loaded || preloading) return;
  try {
    const path = Deno.env.get("VOLT_LIBNBD") || LIBNBD_NAME;
    preloading = libc().dlopen(cstr(path), RTLD_NOW).catch(() => {});
  } catch {
    preloading = Promise.resolve(); // no libc to ask: libnbd() loads it as usual
  }
}

/**
 * A libnbd call failed: `op` is the C function, `message` libnbd's text
 * (`nbd_get_error`), `errno` its error number (`nbd_get_errno`, 0 when unknown).
 *
 * @example
 * ```ts
 * import { NbdError } from "./libnbd.ts";
 * const err = new NbdError("nbd_connect_uri", "connect: No such file or directory", 2);
 * console.assert(err.message.startsWith("nbd_connect_uri: "));
 * ```
 */
export class NbdError extends Error {
  /** The libnbd function that failed. */
  readonly op: string;
  /** errno reported by libnbd (0 when none). */
  readonly errno: number;
  /** libnbd's own message, without the `op: ` prefix. */
  readonly detail: string;
  constructor(op: string, detail: string, errno = 0, options?: ErrorOptions) {
    super(`${op}: ${detail}`, options);
    this.name = "NbdError";
    this.op = op;
    this.errno = errno;
    this.detail = detail;
  }
}

/**
 * The error of the last failed libnbd call on this thread, as an {@link NbdError}.
 * libnbd's messages usually start with the function name already; it is not repeated.
 */
export function lastNbdError(op: string): NbdError {
  const lib = libnbd();
  const ptr = lib.nbd_get_error();
  let text = ptr ? Deno.UnsafePointerView.getCString(ptr) : "";
  const errno = lib.nbd_get_errno();
  if (text.startsWith(`${op}: `)) text = text.slice(op.length + 2);
  return new NbdError(op, text || `failed (errno ${errno})`, errno);
}

/**
 * Returns `r` unless it is `-1`, in which case throws the thread's last libnbd error for `op`.
 * The one place where libnbd's `-1` convention becomes an exception.
 */
export function unwrap<T extends number | bigint>(op: string, r: T): T {
  if (r === -1 || r === -1n) throw lastNbdError(op);
  return r;
}

/** A C string argument (NUL-terminated UTF-8). */
export function cstr(text: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(`${text}\0`);
}
