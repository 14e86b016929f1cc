/**
 * Plain file descriptors for the stream engine: opening and closing them, telling a pipe from
 * a regular file or a device, making pipes larger, and waiting for input in short slices (so
 * SIGTERM still reaches an import that is waiting for data).
 *
 * @module
 */

import { errno } from "../../ffi/libc.ts";
import { InterruptedError } from "../signals.ts";
import {
  check,
  cString,
  E,
  F,
  FALLOC_FL,
  O,
  OsCallError,
  POLLIN,
  POLLOUT,
  retry,
  SEEK,
  sys,
} from "../../ffi/libc_fd.ts";

/** What a descriptor refers to, as far as moving bytes is concerned. */
export type FdKind = "pipe" | "file" | "null" | "tty" | "other";

/**
 * Opens `path` with `open(2)` flags and returns the descriptor (close-on-exec). `mode` applies
 * when the file is created.
 *
 * @example
 * ```ts
 * import { closeFd, O, openFd } from "./fd.ts";
 * const fd = openFd("/dev/null", O.WRONLY);
 * closeFd(fd);
 * ```
 */
export function openFd(path: string, flags: number, mode = 0o666): number {
  return retry(() => sys().open(cString(path), flags | O.CLOEXEC, mode), `open '${path}'`);
}

export { O };

/** Closes a descriptor, ignoring errors (it is gone either way). */
export function closeFd(fd: number): void {
  sys().close(fd);
}

/**
 * What `fd` refers to: a pipe (or FIFO), a regular file, `/dev/null`, a terminal, or anything
 * else (socket, other device).
 *
 * @example
 * ```ts
 * import { fdKind, O, openFd } from "./fd.ts";
 * const fd = openFd("/dev/null", O.RDONLY);
 * console.assert(fdKind(fd) === "null");
 * ```
 */
export function fdKind(fd: number): FdKind {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(`/proc/self/fd/${fd}`);
  } catch {
    return "other";
  }
  if (info.isFifo) return "pipe";
  if (info.isFile) return "file";
  if (info.isCharDevice) {
    // /dev/null is char device 1:3.
    if (info.rdev === 0x103) return "null";
    if (Deno.stdin.isTerminal() && fd === 0) return "tty";
    if (Deno.stdout.isTerminal() && fd === 1) return "tty";
    return "other";
  }
  return "other";
}

/** Was `fd` opened with `O_APPEND` (writes go to the end whatever the offset)? */
export function isAppendOnly(fd: number): boolean {
  const flags = sys().fcntl(fd, F.GETFL, 0);
  return flags >= 0 && (flags & O.APPEND) !== 0;
}

/** The descriptor's offset (`lseek(fd, 0, SEEK_CUR)`), or -1 when it has none (pipe). */
export function currentOffset(fd: number): number {
  const n = Number(sys().lseek(fd, 0n, 1));
  return n < 0 ? -1 : n;
}

/** The pipe buffer size the stream engine asks for. */
export const PIPE_SIZE = 1 << 20;

/**
 * Grows the kernel buffer of the pipe `fd` to `size` bytes (default 1 MiB) when it is smaller:
 * fewer, larger transfers and fewer context switches between the two ends. Quietly keeps the
 * current size when not allowed (`/proc/sys/fs/pipe-max-size` for unprivileged users).
 * Returns the resulting size, or 0 when `fd` is not a pipe.
 *
 * @example
 * ```ts
 * import { enlargePipe } from "./fd.ts";
 * console.assert(enlargePipe(-1) === 0);
 * ```
 */
export function enlargePipe(fd: number, size = PIPE_SIZE): number {
  const libc = sys();
  const current = libc.fcntl(fd, F.GETPIPE_SZ, 0);
  if (current < 0) return 0;
  if (current >= size) return current;
  for (let want = size; want > current; want >>= 1) {
    const got = libc.fcntl(fd, F.SETPIPE_SZ, want);
    if (got >= 0) return got;
  }
  return current;
}

const pollFd = new Uint8Array(8);
const pollView = new DataView(pollFd.buffer);

function pollReady(fd: number, timeoutMs: number): boolean {
  pollView.setInt32(0, fd, true);
  pollView.setInt16(4, POLLIN, true);
  pollView.setInt16(6, 0, true);
  const r = sys().poll(pollFd, 1n, timeoutMs);
  return r > 0;
}

/**
 * Resolves when `fd` has input (or end of file, or an error, all of which `read` reports).
 * Waits in `poll` on this thread, woken by the kernel as soon as data arrives (a hop to a
 * worker thread per wait cost more than the copying itself), but for at most 100 ms at a time:
 * in between, the event loop turns so that SIGTERM reaches the importer, and an abort of
 * `signal` is noticed.
 */
export async function waitReadable(fd: number, signal?: AbortSignal): Promise<void> {
  if (pollReady(fd, 0)) return;
  for (;;) {
    if (pollReady(fd, 100)) return;
    await sys().getpidAsync();
    if (signal?.aborted) throw interrupted(signal);
  }
}

/** The error for an aborted stream operation. */
export function interrupted(signal: AbortSignal): Error {
  const reason = signal.reason;
  if (reason instanceof Error) return reason;
  return new InterruptedError("stream transfer", String(reason));
}

/**
 * Lets the event loop turn (signal handlers, timers) at most every `intervalMs` while a loop
 * runs synchronous system calls. Cheap to call often.
 */
export class EventLoopYielder {
  #last = performance.now();
  #interval: number;
  /** Yields at most every `intervalMs` milliseconds. */
  constructor(intervalMs = 50) {
    this.#interval = intervalMs;
  }
  /** Yields when the interval has passed, then throws if `signal` has fired. */
  async maybeYield(signal?: AbortSignal): Promise<void> {
    const now = performance.now();
    if (now - this.#last >= this.#interval) {
      await sys().getpidAsync();
      this.#last = performance.now();
    }
    if (signal?.aborted) throw interrupted(signal);
  }
}

/**
 * `read(2)` into `buf`, waiting for input with {@link waitReadable} when `wait` says the
 * descriptor may block (pipes, sockets, terminals). Returns 0 at end of file.
 */
export async function readSome(
  fd: number,
  buf: Uint8Array,
  wait: boolean,
  signal?: AbortSignal,
): Promise<number> {
  if (wait) await waitReadable(fd, signal);
  for (;;) {
    const n = Number(sys().read(fd, buf, BigInt(buf.length)));
    if (n >= 0) return n;
    const code = errno();
    if (code === E.EINTR) continue;
    if (code === E.EAGAIN) {
      await waitReadable(fd, signal);
      continue;
    }
    throw new OsCallError("read", code);
  }
}

/** Writes all of `bytes` to `fd` (blocking), retrying short writes and `EINTR`. */
export function writeAll(fd: number, bytes: Uint8Array): void {
  let off = 0;
  while (off < bytes.length) {
    const rest = bytes.subarray(off);
    const n = Number(sys().write(fd, rest, BigInt(rest.length)));
    if (n >= 0) {
      off += n;
      continue;
    }
    const code = errno();
    if (code === E.EAGAIN) waitWritable(fd);
    else if (code !== E.EINTR) throw new OsCallError("write", code);
  }
}

/**
 * Blocks until `fd` can take more output: for a descriptor someone else made non-blocking
 * (`O_NONBLOCK` on a shared pipe), where writes fail with `EAGAIN` instead of waiting.
 */
export function waitWritable(fd: number): void {
  const pfd = new Uint8Array(8);
  const view = new DataView(pfd.buffer);
  view.setInt32(0, fd, true);
  view.setInt16(4, POLLOUT, true);
  sys().poll(pfd, 1n, -1);
}

/** Reads exactly `buf.length` bytes at `offset` with `pread` (fewer only at end of file). */
export function preadFull(fd: number, buf: Uint8Array, offset: number): number {
  let got = 0;
  while (got < buf.length) {
    const rest = buf.subarray(got);
    const n = retry(
      () => sys().pread(fd, rest, BigInt(rest.length), BigInt(offset + got)),
      "pread",
    );
    if (n === 0) break;
    got += n;
  }
  return got;
}

/** Writes all of `bytes` at `offset` with `pwrite`. */
export function pwriteAll(fd: number, bytes: Uint8Array, offset: number): void {
  let off = 0;
  while (off < bytes.length) {
    const rest = bytes.subarray(off);
    off += retry(() => sys().pwrite(fd, rest, BigInt(rest.length), BigInt(offset + off)), "write");
  }
}

/**
 * Makes the open file read as zeros everywhere, keeping its length: punches one hole over all
 * of it. Unlike truncating to 0, this does not make ext4 write the new contents back when the
 * file is closed (its "replace via truncate" heuristic, `auto_da_alloc`), which cost a third
 * of an import's time. Falls back to truncating where holes cannot be punched.
 */
export function clearFile(fd: number): void {
  const end = Number(sys().lseek(fd, 0n, SEEK.END));
  if (end <= 0) return;
  const r = sys().fallocate(fd, FALLOC_FL.PUNCH_HOLE | FALLOC_FL.KEEP_SIZE, 0n, BigInt(end));
  if (r < 0) truncateFd(fd, 0);
}

/** `ftruncate(2)`. */
export function truncateFd(fd: number, length: number): void {
  check(sys().ftruncate(fd, BigInt(length)), "truncate");
}
