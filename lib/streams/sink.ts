/**
 * {@link FdSink}: an export stream written to a file descriptor (stdout or a file), each kind
 * of destination the cheapest way measured on Linux:
 *
 * | destination      | file data                        | holes (zeros)                  |
 * |------------------|----------------------------------|--------------------------------|
 * | pipe             | `splice` from the page cache     | `vmsplice` of one zero buffer  |
 * | regular file     | `copy_file_range` (in kernel)    | `lseek` past them (a hole)     |
 * | /dev/null, other | `sendfile`                       | `write` of a zero buffer       |
 *
 * Data never passes through JavaScript memory; a pipe is also enlarged to 1 MiB. Writes are
 * blocking system calls: an export runs in its own process (or is fed into the in-process
 * channel of `volt migrate` instead, see `channel.ts`).
 *
 * @module
 */

import { errno as errnoOf } from "../../ffi/libc.ts";
import type { StreamSink } from "../../plugins/api.ts";
import { VoltError } from "../errors.ts";
import {
  closeFd,
  currentOffset,
  enlargePipe,
  type FdKind,
  fdKind,
  isAppendOnly,
  O,
  openFd,
  preadFull,
  truncateFd,
  waitWritable,
  writeAll,
} from "./fd.ts";
import { E, OsCallError, SEEK, SPLICE_F, sys, ZEROS } from "../../ffi/libc_fd.ts";

/** errno values that mean "this call does not work between these two descriptors". */
const FALLBACK_ERRNOS: readonly number[] = [E.EINVAL, E.ENOSYS, E.EXDEV, E.EOPNOTSUPP, E.EBADF];

/** Largest amount handed to one splice/sendfile/copy_file_range call. */
const MAX_CALL = 1 << 30;

const zeroIov = new BigUint64Array(2);
zeroIov[0] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(ZEROS)));
const zeroIovBytes = new Uint8Array(zeroIov.buffer);

/** Turns a failed system call on the output into a one-line message. */
function outputError(err: unknown, name: string): unknown {
  if (!(err instanceof OsCallError)) return err;
  if (err.errno === E.EPIPE) {
    return new VoltError(`${name} was closed before the end of the stream (broken pipe)`, {
      cause: err,
    });
  }
  if (err.errno === E.ENOSPC) {
    return new VoltError(`no space left on the device of ${name}`, { cause: err });
  }
  return new VoltError(`writing ${name}: ${err.message}`, { cause: err });
}

/** An export destination: stdout (`-`) or a file created for the stream. */
export class FdSink implements StreamSink {
  readonly fd?: number;
  /** What the descriptor is, which decides how bytes are moved. */
  readonly kind: FdKind;
  #fd: number;
  #name: string;
  #path?: string;
  #sparse: boolean;
  #pendingHole = false;
  #bytes = 0;
  #closed = false;

  private constructor(fd: number, name: string, path: string | undefined, owned: boolean) {
    this.#fd = fd;
    this.#name = name;
    this.#path = path;
    this.kind = fdKind(fd);
    if (fd === 1) this.fd = 1;
    if (this.kind === "pipe") enlargePipe(fd);
    // Seeking past holes is safe only where nothing lies beyond our position.
    this.#sparse = this.kind === "file" && !isAppendOnly(fd) &&
      (owned || Deno.statSync(`/proc/self/fd/${fd}`).size <= currentOffset(fd));
  }

  /**
   * The process's stdout. Refuses a terminal: a binary stream would garble it.
   *
   * @example
   * ```ts ignore
   * import { FdSink } from "./sink.ts";
   * const sink = FdSink.stdout();
   * await sink.write(new Uint8Array(8));
   * sink.close();
   * ```
   */
  static stdout(): FdSink {
    if (Deno.stdout.isTerminal()) {
      throw new VoltError(
        "refusing to write a binary stream to a terminal: redirect stdout or give a file name",
      );
    }
    return new FdSink(1, "stdout", undefined, false);
  }

  /** Creates (or truncates) the file at `path` for the stream. */
  static create(path: string): FdSink {
    let fd: number;
    try {
      fd = openFd(path, O.WRONLY | O.CREAT | O.TRUNC, 0o666);
    } catch (err) {
      throw new VoltError(`cannot create '${path}': ${(err as Error).message}`, { cause: err });
    }
    return new FdSink(fd, `'${path}'`, path, true);
  }

  /** Bytes of stream written so far. */
  get bytesWritten(): number {
    return this.#bytes;
  }

  write(bytes: Uint8Array): Promise<void> {
    try {
      this.#flushHole(false);
      writeAll(this.#fd, bytes);
      this.#bytes += bytes.length;
    } catch (err) {
      return Promise.reject(outputError(err, this.#name));
    }
    return Promise.resolve();
  }

  writeZeros(length: number): Promise<void> {
    try {
      if (this.#sparse) {
        if (length > 0) {
          if (Number(sys().lseek(this.#fd, BigInt(length), SEEK.CUR)) < 0) {
            throw new OsCallError("lseek", errnoOf());
          }
          this.#pendingHole = true;
        }
      } else if (this.kind === "pipe") {
        this.#spliceZeros(length);
      } else {
        for (let left = length; left > 0;) {
          const n = Math.min(left, ZEROS.length);
          writeAll(this.#fd, ZEROS.subarray(0, n));
          left -= n;
        }
      }
      this.#bytes += length;
    } catch (err) {
      return Promise.reject(outputError(err, this.#name));
    }
    return Promise.resolve();
  }

  writeRange(fd: number, offset: number, length: number): Promise<void> {
    try {
      this.#flushHole(false);
      this.#copyRange(fd, offset, length);
      this.#bytes += length;
    } catch (err) {
      return Promise.reject(outputError(err, this.#name));
    }
    return Promise.resolve();
  }

  /**
   * Finishes the stream: a file that ends in a hole gets its length, a created file is
   * closed. Safe to call twice.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#flushHole(true);
    } finally {
      if (this.#path !== undefined) closeFd(this.#fd);
    }
  }

  /** Closes and removes a file created for a stream that failed. */
  async discard(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      if (this.#path !== undefined) closeFd(this.#fd);
    }
    if (this.#path !== undefined && this.kind === "file") {
      await Deno.remove(this.#path).catch(() => {});
    }
  }

  /** After seeking past a hole, the file must reach that far even if nothing follows. */
  #flushHole(final: boolean): void {
    if (!this.#pendingHole) return;
    this.#pendingHole = false;
    if (final) truncateFd(this.#fd, currentOffset(this.#fd));
  }

  #spliceZeros(length: number): void {
    const libc = sys();
    let left = length;
    while (left > 0) {
      const n = Math.min(left, ZEROS.length);
      zeroIov[1] = BigInt(n);
      const r = Number(libc.vmsplice(this.#fd, zeroIovBytes, 1n, 0));
      if (r < 0) {
        const err = new OsCallError("vmsplice", errnoOf());
        if (err.errno === E.EINTR) continue;
        if (err.errno === E.EAGAIN) {
          waitWritable(this.#fd);
          continue;
        }
        if (err.errno === E.EINVAL || err.errno === E.ENOSYS) {
          writeAll(this.#fd, ZEROS.subarray(0, n));
          left -= n;
          continue;
        }
        throw err;
      }
      left -= r;
    }
  }

  #copyRange(src: number, offset: number, length: number): void {
    const libc = sys();
    const off = new BigInt64Array(1);
    const offBytes = new Uint8Array(off.buffer);
    let pos = offset;
    const end = offset + length;
    let method: "splice" | "copy" | "sendfile" | "rw" = this.kind === "pipe"
      ? "splice"
      : this.kind === "file"
      ? "copy"
      : "sendfile";
    while (pos < end) {
      const n = Math.min(end - pos, MAX_CALL);
      off[0] = BigInt(pos);
      let r: number;
      if (method === "splice") {
        r = Number(libc.splice(
          src,
          offBytes,
          this.#fd,
          null,
          BigInt(n),
          SPLICE_F.MOVE | SPLICE_F.MORE,
        ));
      } else if (method === "copy") {
        r = Number(libc.copy_file_range(src, offBytes, this.#fd, null, BigInt(n), 0));
      } else if (method === "sendfile") {
        r = Number(libc.sendfile(this.#fd, src, offBytes, BigInt(n)));
      } else {
        r = this.#readWrite(src, pos, Math.min(n, 1 << 20));
      }
      if (r < 0) {
        const code = errnoOf();
        if (code === E.EINTR) continue;
        if (code === E.EAGAIN) {
          waitWritable(this.#fd);
          continue;
        }
        if (
          method !== "rw" &&
          FALLBACK_ERRNOS.includes(code)
        ) {
          // Not supported between these two: the next method down.
          method = method === "copy" ? "sendfile" : "rw";
          continue;
        }
        throw new OsCallError(method === "copy" ? "copy_file_range" : method, code);
      }
      if (r === 0) {
        throw new VoltError(
          `the volume's file ended ${end - pos} bytes early (changed during the export?)`,
        );
      }
      pos += r;
    }
  }

  #buffer?: Uint8Array;

  #readWrite(src: number, offset: number, length: number): number {
    this.#buffer ??= new Uint8Array(1 << 20);
    const buf = this.#buffer.subarray(0, length);
    const got = preadFull(src, buf, offset);
    writeAll(this.#fd, buf.subarray(0, got));
    return got;
  }
}
