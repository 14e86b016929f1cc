/**
 * The libc calls the stream engine makes on plain file descriptors: moving bytes between a
 * file and a pipe inside the kernel (`splice`, `vmsplice`, `sendfile`, `copy_file_range`),
 * finding data and holes (`lseek` with `SEEK_DATA`/`SEEK_HOLE`), sizing pipes (`fcntl`
 * `F_SETPIPE_SZ`), waiting for input (`poll`), and creating unnamed files that only appear when complete (`O_TMPFILE` + `linkat`).
 *
 * `errno`, `strerror` and {@link OsCallError} come from `libc.ts`; this table takes JS buffers
 * where that one takes C pointers. Linux (glibc) only.
 *
 * @module
 */

import { errno, FALLOC_FL, O, OsCallError } from "./libc.ts";

/** The flag tables live with the C-pointer binding, one copy for both. */
export { FALLOC_FL, O, OsCallError };

const SYMBOLS = {
  // int open (const char *pathname, int flags, mode_t mode);
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  // int close (int fd);
  close: { parameters: ["i32"], result: "i32" },
  // ssize_t read (int fd, void *buf, size_t count);
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  // ssize_t write (int fd, const void *buf, size_t count);
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  // ssize_t pread (int fd, void *buf, size_t count, off_t offset);
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  // ssize_t pwrite (int fd, const void *buf, size_t count, off_t offset);
  pwrite: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  // off_t lseek (int fd, off_t offset, int whence);
  lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  // int ftruncate (int fd, off_t length);
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  // int fallocate (int fd, int mode, off_t offset, off_t len);
  fallocate: { parameters: ["i32", "i32", "i64", "i64"], result: "i32" },
  // int fcntl (int fd, int cmd, ... /* int arg */);
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  // ssize_t splice (int fd_in, loff_t *off_in, int fd_out, loff_t *off_out, size_t len, unsigned flags);
  splice: { parameters: ["i32", "buffer", "i32", "buffer", "usize", "u32"], result: "isize" },
  // ssize_t vmsplice (int fd, const struct iovec *iov, size_t nr_segs, unsigned int flags);
  vmsplice: { parameters: ["i32", "buffer", "usize", "u32"], result: "isize" },
  // ssize_t sendfile (int out_fd, int in_fd, off_t *offset, size_t count);
  sendfile: { parameters: ["i32", "i32", "buffer", "usize"], result: "isize" },
  // ssize_t copy_file_range (int fd_in, off64_t *off_in, int fd_out, off64_t *off_out, size_t len, unsigned flags);
  copy_file_range: {
    parameters: ["i32", "buffer", "i32", "buffer", "usize", "u32"],
    result: "isize",
  },
  // int memcmp (const void *s1, const void *s2, size_t n);
  memcmp: { parameters: ["buffer", "buffer", "usize"], result: "i32" },
  // int poll (struct pollfd *fds, nfds_t nfds, int timeout);
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  // int linkat (int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags);
  linkat: { parameters: ["i32", "buffer", "i32", "buffer", "i32"], result: "i32" },
  // pid_t getpid (void); as a nonblocking call: a cheap turn of the event loop.
  getpidAsync: { name: "getpid", parameters: [], result: "i32", nonblocking: true },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded stream calls. */
export type StreamLibc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let loaded: StreamLibc | undefined;

/**
 * The stream calls, loaded on first use.
 *
 * @example
 * ```ts
 * import { sys } from "./libc_fd.ts";
 * console.assert(typeof sys().getpidAsync === "function");
 * ```
 */
export function sys(): StreamLibc {
  loaded ??= Deno.dlopen("libc.so.6", SYMBOLS).symbols;
  return loaded;
}

/** `lseek` whence values. */
export const SEEK = { SET: 0, CUR: 1, END: 2, DATA: 3, HOLE: 4 } as const;
/** `fcntl` commands. */
export const F = { GETFL: 3, SETPIPE_SZ: 1031, GETPIPE_SZ: 1032 } as const;
/** `splice` flags. */
export const SPLICE_F = { MOVE: 1, NONBLOCK: 2, MORE: 4 } as const;
/** `poll` events. */
export const POLLIN = 1;
/** `poll`: writable. */
export const POLLOUT = 4;
/** `linkat` flags and the "current directory" descriptor. */
export const AT = { FDCWD: -100, SYMLINK_FOLLOW: 0x400 } as const;
/** errno values the stream engine handles. */
export const E = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  ENXIO: 6,
  EAGAIN: 11,
  EBADF: 9,
  EEXIST: 17,
  EXDEV: 18,
  EISDIR: 21,
  EINVAL: 22,
  ENOSPC: 28,
  ESPIPE: 29,
  EPIPE: 32,
  ENOSYS: 38,
  EOPNOTSUPP: 95,
} as const;

const encoder = new TextEncoder();

/** A NUL-terminated C string. */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  return encoder.encode(`${s}\0`);
}

/** A call's result as a number; `-1` becomes {@link OsCallError} naming `op`. */
export function check(result: number | bigint, op: string): number {
  const n = Number(result);
  if (n < 0) throw new OsCallError(op, errno());
  return n;
}

/** Like {@link check}, but retries on `EINTR` by calling `call` again. */
export function retry(call: () => number | bigint, op: string): number {
  for (;;) {
    const n = Number(call());
    if (n >= 0) return n;
    const code = errno();
    if (code !== E.EINTR) throw new OsCallError(op, code);
  }
}

/** A 1 MiB run of zeros, shared and never written to (also handed to `vmsplice`). */
export const ZEROS: Uint8Array<ArrayBuffer> = new Uint8Array(1 << 20);
