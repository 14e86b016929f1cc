/**
 * The built-in sinks as the writer thread drives them: each takes a slot (a range and the C
 * memory holding its data) and writes it, synchronously (raw file, null) or as asynchronous
 * NBD requests retired later (NBD export).
 *
 * @module
 */

import { errno, FALLOC_FL, libc, O, OsCallError, strerror } from "../../ffi/libc.ts";
import { cstr } from "../../ffi/libnbd.ts";
import type { CPointer, NbdHandle } from "../../ffi/nbd_handle.ts";
import { VoltError } from "../errors.ts";
import { StreamingWriteback } from "../writeback.ts";
import { CopyShared, COUNTER, Doorbell, SLOT_DATA } from "./copy_shared.ts";
import type { BuiltinSink } from "./sink.ts";
import { connectNbd, sourceUri } from "./source.ts";
import { BASE_ALLOCATION, readExtents } from "./extents.ts";

const EOPNOTSUPP = 95;
const SEEK_END = 2;

/** A built-in sink, driven slot by slot from the writer thread. */
export interface SlotWriter {
  /** The target read as zeros before the copy: zero ranges need not be written. */
  readonly initiallyZero: boolean;
  /** Handles to poll while writes are in flight (empty for synchronous writers). */
  readonly handles: NbdHandle[];
  /** Starts writing a slot; true when it is already written (and the slot free again). */
  submit(slot: number, kind: number, offset: number, length: number, data: CPointer): boolean;
  /** Appends the slots whose writes have completed since the last call. */
  retire(out: number[]): void;
  /** Writes still in flight. */
  inFlight(): number;
  /** The error for a target connection that failed while polling, naming the offset. */
  pollFailed(cause: unknown): Error;
  /** All slots are written: make it durable as the sink promises, and close. */
  finish(): void;
  /** Releases everything; after a failure a file this writer created is removed. */
  close(failed: boolean): void;
}

/** Opens the writer for a built-in sink, for a source of `size` bytes. */
export function openSlotWriter(sink: BuiltinSink, size: number, requestSize: number): SlotWriter {
  switch (sink.type) {
    case "raw":
      return new RawWriter(sink.path, size, requestSize, sink.sync ?? false);
    case "nbd":
      return new NbdWriter(sink, size, requestSize);
    case "null":
      return new NullWriter();
  }
}

/**
 * Opens the writer for a built-in sink once the reader has connected (the export size is in
 * `shared`), publishes whether its target reads as zeros (the reader's zero decisions wait
 * for that) and wakes the reader. For whichever thread writes the sink.
 */
export function openAnnouncedWriter(
  sink: BuiltinSink,
  shared: CopyShared,
  requestSize: number,
  readerBell: number,
): SlotWriter {
  const writer = openSlotWriter(sink, shared.counter(COUNTER.size), requestSize);
  shared.setSinkOpen(writer.initiallyZero);
  new Doorbell(readerBell).ring();
  return writer;
}

function writeFailed(what: string, offset: number, length: number, detail: string): VoltError {
  return new VoltError(`writing ${length} bytes at offset ${offset} to ${what} failed: ${detail}`);
}

/** A raw file or block device written with `pwrite` from slot memory. */
class RawWriter implements SlotWriter {
  readonly initiallyZero: boolean;
  readonly handles: NbdHandle[] = [];
  #path: string;
  #fd: number;
  #created: boolean;
  #sync: boolean;
  #zeroBuffer: CPointer | null = null;
  #requestSize: number;
  #punch = true;
  /** The data goes to disk as it is written, with or without `sync` (see lib/writeback.ts). */
  #writeback: StreamingWriteback;

  constructor(path: string, size: number, requestSize: number, sync: boolean) {
    this.#path = path;
    this.#sync = sync;
    this.#requestSize = requestSize;
    let stat: Deno.FileInfo | undefined;
    try {
      stat = Deno.statSync(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    if (stat?.isDirectory) throw new VoltError(`${path} is a directory: give a file name`);
    const lib = libc();
    this.#created = stat === undefined;
    const flags = O.WRONLY | O.CLOEXEC | (this.#created ? O.CREAT | O.EXCL : 0);
    this.#fd = lib.open(cstr(path), flags, 0o644);
    if (this.#fd < 0) throw new VoltError(`cannot open ${path}: ${strerror(errno())}`);
    this.#writeback = new StreamingWriteback(
      this.#fd,
      (offset, length, code) => writeFailed(path, offset, length, strerror(code)),
    );
    try {
      if (stat === undefined || stat.isFile) {
        this.initiallyZero = stat === undefined || stat.size === 0;
        if (stat?.size !== size && lib.ftruncate(this.#fd, BigInt(size)) < 0) {
          throw new VoltError(`cannot resize ${path} to ${size} bytes: ${strerror(errno())}`);
        }
      } else {
        const deviceSize = Number(lib.lseek(this.#fd, 0n, SEEK_END));
        if (deviceSize < size) {
          throw new VoltError(
            `${path} holds ${deviceSize} bytes, less than the ${size} bytes to copy`,
          );
        }
        this.initiallyZero = false;
      }
    } catch (err) {
      this.close(true);
      throw err;
    }
  }

  submit(_slot: number, kind: number, offset: number, length: number, data: CPointer): boolean {
    if (kind === SLOT_DATA) this.#write(data, offset, length);
    else this.#zero(offset, length);
    return true;
  }

  #write(data: CPointer, offset: number, length: number): void {
    const lib = libc();
    let done = 0;
    while (done < length) {
      const p = done === 0 ? data : Deno.UnsafePointer.offset(data, done)!;
      const n = Number(lib.pwrite(this.#fd, p, BigInt(length - done), BigInt(offset + done)));
      if (n < 0) {
        const code = errno();
        if (code === 4) continue; // EINTR
        throw writeFailed(this.#path, offset, length, strerror(code));
      }
      if (n === 0) throw writeFailed(this.#path, offset, length, "no progress");
      done += n;
    }
    this.#writeback.written(offset, length);
  }

  #zero(offset: number, length: number): void {
    if (this.#punch) {
      const mode = FALLOC_FL.PUNCH_HOLE | FALLOC_FL.KEEP_SIZE;
      if (libc().fallocate(this.#fd, mode, BigInt(offset), BigInt(length)) === 0) return;
      const code = errno();
      if (code !== EOPNOTSUPP && code !== 19 /* ENODEV */) {
        throw writeFailed(this.#path, offset, length, `punching a hole: ${strerror(code)}`);
      }
      this.#punch = false;
    }
    this.#zeroBuffer ??= libc().calloc(1n, BigInt(this.#requestSize));
    if (!this.#zeroBuffer) throw new Error("out of memory for a zero buffer");
    for (let pos = offset; pos < offset + length; pos += this.#requestSize) {
      this.#write(this.#zeroBuffer, pos, Math.min(this.#requestSize, offset + length - pos));
    }
  }

  retire(): void {}

  inFlight(): number {
    return 0;
  }

  pollFailed(cause: unknown): Error {
    return new VoltError(`writing to ${this.#path} failed: ${errText(cause)}`);
  }

  finish(): void {
    this.#writeback.settleAll();
    if (this.#sync && libc().fdatasync(this.#fd) < 0) {
      throw new VoltError(`syncing ${this.#path} failed: ${strerror(errno())}`);
    }
    const fd = this.#fd;
    this.#fd = -1;
    if (libc().close(fd) < 0) throw new OsCallError(`close ${this.#path}`, errno());
  }

  close(failed: boolean): void {
    if (this.#fd >= 0) libc().close(this.#fd);
    this.#fd = -1;
    if (this.#zeroBuffer) libc().free(this.#zeroBuffer);
    this.#zeroBuffer = null;
    if (failed && this.#created) {
      try {
        Deno.removeSync(this.#path);
      } catch { /* already gone */ }
      this.#created = false;
    }
  }
}

interface PendingWrite {
  slot: number;
  offset: number;
  length: number;
}

/** An NBD export written with `nbd_aio_pwrite` / `nbd_aio_zero` from slot memory. */
class NbdWriter implements SlotWriter {
  readonly initiallyZero: boolean;
  readonly handles: NbdHandle[];
  #h: NbdHandle;
  #uri: string;
  #canZero: boolean;
  #maxWrite: number;
  #pending = new Map<bigint, PendingWrite>();
  #perSlot = new Map<number, number>();
  #zeroBuffer: CPointer | null = null;
  #requestSize: number;

  constructor(sink: Extract<BuiltinSink, { type: "nbd" }>, size: number, requestSize: number) {
    this.#uri = sourceUri(sink.target);
    this.#requestSize = requestSize;
    this.#h = connectNbd(sink.target, { name: "volt-target", metaContexts: [BASE_ALLOCATION] });
    this.handles = [this.#h];
    try {
      if (this.#h.isReadOnly()) {
        throw new VoltError(`the target ${this.#uri} is read-only: export it writable`);
      }
      const targetSize = this.#h.size();
      if (targetSize < size) {
        throw new VoltError(
          `the target ${this.#uri} holds ${targetSize} bytes, less than the ${size} to copy`,
        );
      }
      this.#canZero = this.#h.canZero();
      this.#maxWrite = this.#h.blockSize("maximum") || 32 * 2 ** 20;
      this.initiallyZero = sink.targetIsZero ?? readsAsZeros(this.#h);
    } catch (err) {
      this.#h.close();
      throw err;
    }
  }

  submit(slot: number, kind: number, offset: number, length: number, data: CPointer): boolean {
    try {
      if (kind === SLOT_DATA) {
        for (let done = 0; done < length; done += this.#maxWrite) {
          const n = Math.min(this.#maxWrite, length - done);
          const p = done === 0 ? data : Deno.UnsafePointer.offset(data, done)!;
          this.#track(this.#h.aioPwrite(p, n, offset + done), slot, offset + done, n);
        }
      } else if (this.#canZero) {
        this.#track(this.#h.aioZero(length, offset), slot, offset, length);
      } else {
        const chunk = Math.min(this.#requestSize, this.#maxWrite);
        this.#zeroBuffer ??= libc().calloc(1n, BigInt(chunk));
        for (let pos = offset; pos < offset + length; pos += chunk) {
          const n = Math.min(chunk, offset + length - pos);
          this.#track(this.#h.aioPwrite(this.#zeroBuffer!, n, pos), slot, pos, n);
        }
      }
    } catch (err) {
      throw writeFailed(this.#uri, offset, length, errText(err));
    }
    return false;
  }

  #track(cookie: bigint, slot: number, offset: number, length: number): void {
    this.#pending.set(cookie, { slot, offset, length });
    this.#perSlot.set(slot, (this.#perSlot.get(slot) ?? 0) + 1);
  }

  retire(out: number[]): void {
    if (this.#pending.size === 0) return;
    for (;;) {
      const cookie = this.#h.aioPeekCommandCompleted();
      if (cookie === 0n) return;
      const w = this.#pending.get(cookie);
      try {
        this.#h.aioCommandCompleted(cookie);
      } catch (err) {
        throw writeFailed(this.#uri, w?.offset ?? 0, w?.length ?? 0, errText(err));
      }
      if (!w) continue;
      this.#pending.delete(cookie);
      const left = this.#perSlot.get(w.slot)! - 1;
      if (left === 0) {
        this.#perSlot.delete(w.slot);
        out.push(w.slot);
      } else {
        this.#perSlot.set(w.slot, left);
      }
    }
  }

  pollFailed(cause: unknown): Error {
    let first: PendingWrite | undefined;
    for (const w of this.#pending.values()) if (!first || w.offset < first.offset) first = w;
    if (!first) return new VoltError(`writing to ${this.#uri} failed: ${errText(cause)}`);
    return writeFailed(this.#uri, first.offset, first.length, errText(cause));
  }

  inFlight(): number {
    return this.#pending.size;
  }

  finish(): void {
    try {
      if (this.#h.canFlush()) this.#h.flush();
      this.#h.shutdown();
    } catch (err) {
      throw new VoltError(`finishing the writes to ${this.#uri} failed: ${errText(err)}`);
    }
    this.close();
  }

  close(): void {
    this.#h.close();
    if (this.#zeroBuffer) libc().free(this.#zeroBuffer);
    this.#zeroBuffer = null;
  }
}

/**
 * Whether the whole export reads as zeros according to its `base:allocation` map (a new
 * image): then holes need not be zeroed. Stops at the first extent that is not zero.
 */
function readsAsZeros(h: NbdHandle): boolean {
  if (!h.canMetaContext(BASE_ALLOCATION)) return false;
  for (const e of readExtents(h)) if (!e.zero) return false;
  return true;
}

/** Discards everything. */
class NullWriter implements SlotWriter {
  readonly initiallyZero = true;
  readonly handles: NbdHandle[] = [];
  submit(): boolean {
    return true;
  }
  retire(): void {}
  inFlight(): number {
    return 0;
  }
  pollFailed(cause: unknown): Error {
    return new Error(errText(cause));
  }
  finish(): void {}
  close(): void {}
}

/** The message of an error without a repeated prefix. */
export function errText(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
