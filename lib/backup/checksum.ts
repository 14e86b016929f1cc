/**
 * File digests for backup manifests and `volt verify`: `sha256-64m`, the SHA-256 of the
 * concatenated (binary) SHA-256 digests of the file's consecutive 64 MiB chunks (the last one
 * may be shorter; an empty file has no chunk). Chunks can be hashed in parallel and in any
 * order, so a backup image can be hashed while it is being written ({@link GrowingDigest}),
 * and `volt verify` hashes two chunks at a time. By hand:
 *
 * ```sh
 * split -b 64M --filter='sha256sum | head -c 64 | tr a-f A-F | basenc --base16 -d' FILE | sha256sum
 * ```
 *
 * SHA-256 runs in libcrypto through FFI when it is there (SHA extensions, off the main
 * thread, reads overlapped), else in `node:crypto`. Only regular files are read: a symbolic
 * link, FIFO or device is refused without being opened.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { type Libcrypto, loadLibcrypto, Sha256 } from "../../ffi/libcrypto.ts";
import { VoltError } from "../errors.ts";

/** Name of the digest, as the manifest records it before the hex value. */
export const DIGEST_ALGORITHM = "sha256-64m";
/** Chunk size of the digest. */
export const DIGEST_CHUNK = 64 * 1024 * 1024;
/** Read size inside a chunk. */
const READ = 4 * 1024 * 1024;

/** A file's size and digest. */
export interface FileDigest {
  /** Bytes hashed (the file's size). */
  size: number;
  /** `sha256-64m:<64 hex digits>`. */
  digest: string;
}

/** Combines chunk digests into the file digest. */
function combine(chunks: Uint8Array[]): string {
  const h = createHash("sha256");
  for (const c of chunks) h.update(c);
  return `${DIGEST_ALGORITHM}:${h.digest("hex")}`;
}

/** Opens a regular file for reading, refusing links, FIFOs and devices before opening them. */
async function openRegular(path: string): Promise<{ file: Deno.FsFile; size: number }> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.lstat(path);
  } catch (err) {
    throw new VoltError(`cannot read '${path}': ${(err as Error).message}`, { cause: err });
  }
  if (st.isSymlink) throw new VoltError(`'${path}' is a symbolic link: refusing to read it`);
  if (!st.isFile) throw new VoltError(`'${path}' is not a regular file: refusing to read it`);
  const file = await Deno.open(path, { read: true });
  return { file, size: (await file.stat()).size };
}

/** The SHA-256 of `[start, start + length)` of an open file (its own read position). */
async function hashRange(
  file: Deno.FsFile,
  start: number,
  length: number,
  lib: Libcrypto | undefined,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  await file.seek(start, Deno.SeekMode.Start);
  const buffers = [new Uint8Array(Math.min(READ, length)), new Uint8Array(Math.min(READ, length))];
  if (!lib) {
    const h = createHash("sha256");
    for (let done = 0; done < length;) {
      signal?.throwIfAborted();
      const n = await readFull(file, buffers[0].subarray(0, Math.min(READ, length - done)));
      if (n === 0) throw new VoltError("the file shrank while it was hashed");
      h.update(buffers[0].subarray(0, n));
      done += n;
    }
    return new Uint8Array(h.digest());
  }
  using h = new Sha256(lib);
  let pending: Promise<void> | undefined;
  try {
    for (let done = 0, i = 0; done < length; i ^= 1) {
      signal?.throwIfAborted();
      const buf = buffers[i];
      const n = await readFull(file, buf.subarray(0, Math.min(READ, length - done)));
      if (n === 0) throw new VoltError("the file shrank while it was hashed");
      await pending;
      pending = h.update(buf.subarray(0, n));
      done += n;
    }
    await pending;
    pending = undefined;
  } finally {
    await pending?.catch(() => {});
  }
  return h.digestBytes();
}

/** Reads until `buf` is full or the file ends; returns the bytes read. */
async function readFull(file: Deno.FsFile, buf: Uint8Array): Promise<number> {
  let n = 0;
  while (n < buf.length) {
    const r = await file.read(buf.subarray(n));
    if (r === null) break;
    n += r;
  }
  return n;
}

/** Hashes the chunks `indexes` of `path`, `parallel` at a time, into `out`. */
async function hashChunks(
  path: string,
  size: number,
  indexes: number[],
  out: Uint8Array[],
  parallel: number,
  signal?: AbortSignal,
): Promise<void> {
  const lib = loadLibcrypto();
  const queue = [...indexes];
  const worker = async () => {
    const { file } = await openRegular(path);
    try {
      for (let i = queue.shift(); i !== undefined; i = queue.shift()) {
        const start = i * DIGEST_CHUNK;
        out[i] = await hashRange(file, start, Math.min(DIGEST_CHUNK, size - start), lib, signal);
      }
    } finally {
      file.close();
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(parallel, queue.length)) }, worker));
}

/**
 * The `sha256-64m` digest of a file, hashing `parallel` chunks at a time (default 2).
 *
 * @example
 * ```ts
 * import { fileDigest } from "./checksum.ts";
 * const path = Deno.makeTempFileSync();
 * Deno.writeTextFileSync(path, "abc");
 * const d = await fileDigest(path);
 * console.assert(d.size === 3 && d.digest.startsWith("sha256-64m:"));
 * ```
 */
export async function fileDigest(
  path: string,
  options: { parallel?: number; signal?: AbortSignal } = {},
): Promise<FileDigest> {
  const { file, size } = await openRegular(path);
  file.close();
  const chunks = Math.ceil(size / DIGEST_CHUNK);
  const out: Uint8Array[] = new Array(chunks);
  try {
    await hashChunks(
      path,
      size,
      [...Array(chunks).keys()],
      out,
      options.parallel ?? 2,
      options.signal,
    );
  } catch (err) {
    if (err instanceof VoltError || options.signal?.aborted) throw err;
    throw new VoltError(`cannot hash '${path}': ${(err as Error).message}`, { cause: err });
  }
  return { size, digest: combine(out) };
}

/**
 * The digest of a file that is being written by appending: chunks that lie wholly below the
 * point up to which the file is written and will not change ({@link GrowingDigest.advance})
 * are hashed in the background, one at a time, while the writer goes on; {@link
 * GrowingDigest.finish} hashes the rest (two at a time) once the file is complete. If the
 * writer may have changed bytes below that point after all, {@link GrowingDigest.invalidate}
 * makes `finish` hash the whole file again.
 *
 * @example
 * ```ts
 * import { fileDigest, GrowingDigest } from "./checksum.ts";
 * const path = Deno.makeTempFileSync();
 * Deno.writeTextFileSync(path, "abc");
 * const g = new GrowingDigest(path);
 * g.advance(3);
 * console.assert((await g.finish()).digest === (await fileDigest(path)).digest);
 * ```
 */
export class GrowingDigest {
  readonly path: string;
  readonly #done: Uint8Array[] = [];
  #next = 1; // chunk 0 holds the qcow2 header, written last: always hashed at the end
  #stable = 0;
  #invalid = false;
  #running: Promise<void> = Promise.resolve();
  #busy = false;
  readonly #abort = new AbortController();

  constructor(path: string) {
    this.path = path;
  }

  /** The file's bytes below `end` are written and final. */
  advance(end: number): void {
    if (this.#invalid || end <= this.#stable) return;
    this.#stable = end;
    if (this.#busy || (this.#next + 1) * DIGEST_CHUNK > end) return;
    this.#busy = true;
    this.#running = this.#catchUp().finally(() => (this.#busy = false));
  }

  async #catchUp(): Promise<void> {
    const lib = loadLibcrypto();
    let file: Deno.FsFile | undefined;
    try {
      while (!this.#invalid && (this.#next + 1) * DIGEST_CHUNK <= this.#stable) {
        file ??= (await openRegular(this.path)).file;
        const i = this.#next;
        this.#done[i] = await hashRange(
          file,
          i * DIGEST_CHUNK,
          DIGEST_CHUNK,
          lib,
          this.#abort.signal,
        );
        this.#next = i + 1;
      }
    } catch {
      this.#invalid = true; // finish() hashes everything and reports a real error
    } finally {
      file?.close();
    }
  }

  /** Bytes below the stable point may have changed: hash everything at the end. */
  invalidate(): void {
    this.#invalid = true;
  }

  /** Stops background hashing (the file is being discarded). */
  async abort(): Promise<void> {
    this.#invalid = true;
    this.#abort.abort();
    await this.#running.catch(() => {});
  }

  /** The digest of the complete file. */
  async finish(options: { signal?: AbortSignal } = {}): Promise<FileDigest> {
    await this.#running.catch(() => {});
    if (this.#invalid) return await fileDigest(this.path, options);
    const { file, size } = await openRegular(this.path);
    file.close();
    const chunks = Math.ceil(size / DIGEST_CHUNK);
    const todo = [...Array(chunks).keys()].filter((i) => i === 0 || i >= this.#next);
    const out = this.#done.slice(0, chunks);
    await hashChunks(this.path, size, todo, out, 2, options.signal);
    return { size, digest: combine(out) };
  }
}

/**
 * The `sha256-64m` digest of bytes in memory (small files such as configurations).
 *
 * @example
 * ```ts
 * import { bytesDigest } from "./checksum.ts";
 * console.assert(bytesDigest(new Uint8Array(0)).startsWith("sha256-64m:e3b0c442"));
 * ```
 */
export function bytesDigest(data: Uint8Array): string {
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < data.length; i += DIGEST_CHUNK) {
    chunks.push(
      new Uint8Array(createHash("sha256").update(data.subarray(i, i + DIGEST_CHUNK)).digest()),
    );
  }
  return combine(chunks);
}
