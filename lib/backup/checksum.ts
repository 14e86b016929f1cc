/**
 * SHA-256 of files, for backup manifests and `volt verify`. Uses libcrypto through FFI when it
 * is there (SHA extensions; reads and hashes overlap, off the main thread), else `node:crypto`.
 * The digest is the one `sha256sum FILE` prints, so a manifest can be checked by hand.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { loadLibcrypto, Sha256 } from "../../ffi/libcrypto.ts";
import { VoltError } from "../errors.ts";

/** Read size per step. */
const CHUNK = 4 * 1024 * 1024;

/** A file's size and SHA-256. */
export interface FileDigest {
  /** Bytes hashed (the file's size). */
  size: number;
  /** Lower-case hex SHA-256. */
  sha256: string;
}

/**
 * Hashes a regular file (a symbolic link, FIFO or device is refused, never opened). Rejects
 * with a {@link VoltError} naming the file when it cannot be read; stops early when `signal`
 * fires.
 *
 * @example
 * ```ts
 * import { sha256File } from "./checksum.ts";
 * const path = Deno.makeTempFileSync();
 * Deno.writeTextFileSync(path, "abc");
 * const d = await sha256File(path);
 * console.assert(d.size === 3 && d.sha256.startsWith("ba7816bf"));
 * ```
 */
export async function sha256File(
  path: string,
  options: { signal?: AbortSignal } = {},
): Promise<FileDigest> {
  let file: Deno.FsFile;
  try {
    // Never follow a link or open a FIFO or device: a crafted backup must not make volt block
    // on a pipe or read a file outside it.
    const st = await Deno.lstat(path);
    if (st.isSymlink) throw new VoltError(`'${path}' is a symbolic link: refusing to read it`);
    if (!st.isFile) throw new VoltError(`'${path}' is not a regular file: refusing to read it`);
    file = await Deno.open(path, { read: true });
  } catch (err) {
    if (err instanceof VoltError) throw err;
    throw new VoltError(`cannot read '${path}': ${(err as Error).message}`, { cause: err });
  }
  try {
    const lib = loadLibcrypto();
    return lib
      ? await hashWithLibcrypto(file, new Sha256(lib), options.signal)
      : await hashWithNode(
        file,
        options.signal,
      );
  } catch (err) {
    if (err instanceof VoltError) throw err;
    throw new VoltError(`cannot hash '${path}': ${(err as Error).message}`, { cause: err });
  } finally {
    file.close();
  }
}

/** Two buffers: one is read into while the other is hashed. */
async function hashWithLibcrypto(
  file: Deno.FsFile,
  hash: Sha256,
  signal?: AbortSignal,
): Promise<FileDigest> {
  using h = hash;
  const buffers = [new Uint8Array(CHUNK), new Uint8Array(CHUNK)];
  let pending: Promise<void> | undefined;
  let size = 0;
  try {
    for (let i = 0;; i ^= 1) {
      signal?.throwIfAborted();
      const buf = buffers[i];
      const n = await readFull(file, buf);
      await pending;
      pending = undefined;
      if (n === 0) break;
      size += n;
      pending = h.update(buf.subarray(0, n));
    }
  } finally {
    await pending?.catch(() => {});
  }
  return { size, sha256: h.digest() };
}

async function hashWithNode(file: Deno.FsFile, signal?: AbortSignal): Promise<FileDigest> {
  const h = createHash("sha256");
  const buf = new Uint8Array(CHUNK);
  let size = 0;
  for (;;) {
    signal?.throwIfAborted();
    const n = await readFull(file, buf);
    if (n === 0) break;
    size += n;
    h.update(buf.subarray(0, n));
  }
  return { size, sha256: h.digest("hex") };
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

/**
 * SHA-256 of bytes in memory (small files: configurations, the manifest's own fields).
 *
 * @example
 * ```ts
 * import { sha256Bytes } from "./checksum.ts";
 * console.assert(sha256Bytes(new TextEncoder().encode("abc")).startsWith("ba7816bf"));
 * ```
 */
export function sha256Bytes(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}
