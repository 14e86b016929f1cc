/**
 * The few libc functions the copy engine needs where Deno has no equivalent: writing from C
 * memory at an offset (`pwrite`), punching holes, `poll` over several descriptors, an
 * `eventfd` doorbell between threads, aligned C buffers and a fast zero test (`memcmp`).
 *
 * Linux x86_64/aarch64 (glibc) only, like libnbd itself here.
 *
 * @module
 */

import { bindOnUse } from "./bind_on_use.ts";

/** Every libc function volt calls. */
export const LIBC_SYMBOLS = {
  // int open (const char *pathname, int flags, mode_t mode);
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  // int close (int fd);
  close: { parameters: ["i32"], result: "i32" },
  // ssize_t pwrite (int fd, const void *buf, size_t count, off_t offset);
  pwrite: { parameters: ["i32", "pointer", "usize", "i64"], result: "isize" },
  // ssize_t pread (int fd, void *buf, size_t count, off_t offset);
  pread: { parameters: ["i32", "pointer", "usize", "i64"], result: "isize" },
  // ssize_t read (int fd, void *buf, size_t count);
  read: { parameters: ["i32", "pointer", "usize"], result: "isize" },
  // ssize_t write (int fd, const void *buf, size_t count);
  write: { parameters: ["i32", "pointer", "usize"], result: "isize" },
  // off_t lseek (int fd, off_t offset, int whence);
  lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  // int ftruncate (int fd, off_t length);
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  // int fallocate (int fd, int mode, off_t offset, off_t len);
  fallocate: { parameters: ["i32", "i32", "i64", "i64"], result: "i32" },
  // int fdatasync (int fd);
  fdatasync: { parameters: ["i32"], result: "i32" },
  // pwrite and fdatasync again, run on Deno's blocking thread pool: the call returns a promise
  // (errno is that thread's: repeat a failed call synchronously to learn it).
  pwrite_nonblocking: {
    name: "pwrite",
    parameters: ["i32", "pointer", "usize", "i64"],
    result: "isize",
    nonblocking: true,
  },
  fdatasync_nonblocking: {
    name: "fdatasync",
    parameters: ["i32"],
    result: "i32",
    nonblocking: true,
  },
  // int sync_file_range (int fd, off64_t offset, off64_t nbytes, unsigned int flags);
  sync_file_range: { parameters: ["i32", "i64", "i64", "u32"], result: "i32" },
  // int posix_fadvise (int fd, off_t offset, off_t len, int advice);
  posix_fadvise: { parameters: ["i32", "i64", "i64", "i32"], result: "i32" },
  // int poll (struct pollfd *fds, nfds_t nfds, int timeout);
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  // int eventfd (unsigned int initval, int flags);
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  // int memcmp (const void *s1, const void *s2, size_t n);
  memcmp: { parameters: ["pointer", "pointer", "usize"], result: "i32" },
  // void *dlopen (const char *filename, int flags); on Deno's thread pool (it maps files)
  dlopen: { parameters: ["buffer", "i32"], result: "pointer", nonblocking: true },
  // int madvise (void *addr, size_t length, int advice);
  madvise: { parameters: ["pointer", "usize", "i32"], result: "i32" },
  // void *aligned_alloc (size_t alignment, size_t size);
  aligned_alloc: { parameters: ["usize", "usize"], result: "pointer" },
  // void *calloc (size_t nmemb, size_t size);
  calloc: { parameters: ["usize", "usize"], result: "pointer" },
  // void free (void *ptr);
  free: { parameters: ["pointer"], result: "void" },
  // int *__errno_location (void);
  __errno_location: { parameters: [], result: "pointer" },
  // char *strerror (int errnum);
  strerror: { parameters: ["i32"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded libc functions. */
export type Libc = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"];

/** `open` flags (Linux, x86_64 and aarch64); also used by `libc_fd.ts`. */
export const O = {
  RDONLY: 0,
  WRONLY: 1,
  RDWR: 2,
  CREAT: 0o100,
  EXCL: 0o200,
  TRUNC: 0o1000,
  APPEND: 0o2000,
  NONBLOCK: 0o4000,
  DIRECTORY: Deno.build.arch === "aarch64" ? 0o40000 : 0o200000,
  CLOEXEC: 0o2000000,
  TMPFILE: 0o20200000,
} as const;
/** `fallocate` modes. */
export const FALLOC_FL = { KEEP_SIZE: 1, PUNCH_HOLE: 2, ZERO_RANGE: 0x10 } as const;
/** `poll` event bits. */
export const POLL = { IN: 1, OUT: 4, ERR: 8, HUP: 0x10, NVAL: 0x20 } as const;
/** `eventfd` flags. */
export const EFD = { NONBLOCK: 0o4000, CLOEXEC: 0o2000000 } as const;
/** `sync_file_range` flags. */
export const SYNC_FILE_RANGE = { WAIT_BEFORE: 1, WRITE: 2, WAIT_AFTER: 4 } as const;
/** `madvise` advice: back with huge pages; fault every page in now (Linux 5.14+). */
export const MADV = { HUGEPAGE: 14, POPULATE_WRITE: 23 } as const;
/** `posix_fadvise` advice. */
export const POSIX_FADV_DONTNEED = 4;
/** errno values the engine looks at. */
export const ERRNO = { EINTR: 4, EAGAIN: 11, EOPNOTSUPP: 95, ENOTSUP: 95 } as const;

/**
 * What the copy engine's reader and the set-up of a copy need (memory, the zero test, poll
 * and the doorbells, errno): bound when a thread first loads libc; the rest on first use
 * (see `bind_on_use.ts`).
 */
const FIRST_SYMBOLS = [
  "aligned_alloc",
  "madvise",
  "calloc",
  "free",
  "memcmp",
  "poll",
  "read",
  "write",
  "eventfd",
  "__errno_location",
  "strerror",
] as const satisfies readonly (keyof typeof LIBC_SYMBOLS)[];

let loaded: Libc | undefined;

/**
 * The libc functions, loaded on first use (once per thread).
 *
 * @example
 * ```ts
 * import { libc } from "./libc.ts";
 * const p = libc().calloc(1n, 16n);
 * libc().free(p);
 * ```
 */
export function libc(): Libc {
  loaded ??= bindOnUse("libc.so.6", LIBC_SYMBOLS, FIRST_SYMBOLS);
  return loaded;
}

/** This thread's `errno`, read right after a failed call. */
export function errno(): number {
  const p = libc().__errno_location();
  return p ? new Deno.UnsafePointerView(p).getInt32() : 0;
}

/** The text of an errno value (`strerror`). */
export function strerror(code: number): string {
  const p = libc().strerror(code);
  return p ? Deno.UnsafePointerView.getCString(p) : `errno ${code}`;
}

/**
 * A libc call failed: `op` is the call (with its target), `errno` the error number.
 *
 * @example
 * ```ts
 * import { OsCallError } from "./libc.ts";
 * console.assert(new OsCallError("pwrite", 28).message === "pwrite: errno 28" ||
 *   new OsCallError("pwrite", 28).message.startsWith("pwrite: "));
 * ```
 */
export class OsCallError extends Error {
  /** The failed call. */
  readonly op: string;
  /** errno of the failure. */
  readonly errno: number;
  constructor(op: string, code: number) {
    super(`${op}: ${strerror(code)}`);
    this.name = "OsCallError";
    this.op = op;
    this.errno = code;
  }
}
