/**
 * The `+size` header of Proxmox's stream formats: 8 bytes, the size as an unsigned 64-bit
 * little-endian integer (Perl's `pack('Q<')`), in front of `raw+size`, `tar+size`,
 * `qcow2+size` and `vmdk+size` payloads. Layout: `docs/formats.md`.
 *
 * @module
 */

/** Length of the size header in bytes. */
export const SIZE_HEADER_LENGTH = 8;

/**
 * The 8 header bytes for `size`.
 *
 * @example
 * ```ts
 * import { encodeSizeHeader } from "./size_header.ts";
 * const h = encodeSizeHeader(1024);
 * console.assert(h.length === 8 && h[0] === 0x00 && h[1] === 0x04);
 * ```
 */
export function encodeSizeHeader(size: number): Uint8Array<ArrayBuffer> {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new RangeError(`size header: ${size} is not a byte count`);
  }
  const out = new Uint8Array(SIZE_HEADER_LENGTH);
  new DataView(out.buffer).setBigUint64(0, BigInt(size), true);
  return out;
}

/**
 * Decodes a size header. Throws `SyntaxError` when fewer than 8 bytes arrived (the stream
 * ended early) and `RangeError` for a size beyond 2^53 bytes.
 *
 * @example
 * ```ts
 * import { decodeSizeHeader, encodeSizeHeader } from "./size_header.ts";
 * console.assert(decodeSizeHeader(encodeSizeHeader(2 ** 21)) === 2 ** 21);
 * ```
 */
export function decodeSizeHeader(bytes: Uint8Array, what = "size header"): number {
  if (bytes.length < SIZE_HEADER_LENGTH) {
    throw new SyntaxError(
      `stream ended after ${bytes.length} byte${
        bytes.length === 1 ? "" : "s"
      }, before its 8-byte ${what}`,
    );
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, SIZE_HEADER_LENGTH).getBigUint64(0, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new RangeError(`${what} says ${v} bytes: not a plausible size`);
  }
  return Number(v);
}
