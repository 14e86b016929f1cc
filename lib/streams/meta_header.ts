/**
 * The metadata header of the `<vtype>+meta` stream formats (seed 000): an unsigned 64-bit
 * little-endian length, then that many bytes of a UTF-8 JSON object with at least `vtype` and
 * `format` (the data format of what follows: raw, qcow2, vmdk, tar, …). Readers accept any
 * key order and ignore unknown keys. Unlike the seed, the length is bounded
 * ({@link META_MAX_LENGTH}): a stream cannot make the importer allocate gigabytes.
 * Layout: `docs/formats.md`.
 *
 * @module
 */

import { decodeSizeHeader, encodeSizeHeader, SIZE_HEADER_LENGTH } from "./size_header.ts";

/** The largest JSON length a reader accepts: 64 KiB. */
export const META_MAX_LENGTH = 64 * 1024;

/** What a metadata header carries. Unknown keys are kept in `extra`. */
export interface StreamMeta {
  /** Volume type: images, rootdir, iso, vztmpl, backup, snippets, import. */
  vtype: string;
  /** Data format of the payload: raw, qcow2, vmdk, tar, ova, …. */
  format: string;
  /** Any other keys the writer put in. */
  extra?: Record<string, unknown>;
}

/**
 * The header bytes (length, then JSON) for `meta`. `vtype` and `format` come first, in that
 * order, so the bytes are the same on every run.
 *
 * @example
 * ```ts
 * import { encodeMetaHeader } from "./meta_header.ts";
 * const h = encodeMetaHeader({ vtype: "iso", format: "raw" });
 * console.assert(new TextDecoder().decode(h.subarray(8)) === '{"vtype":"iso","format":"raw"}');
 * ```
 */
export function encodeMetaHeader(meta: StreamMeta): Uint8Array<ArrayBuffer> {
  const json = new TextEncoder().encode(
    JSON.stringify({ vtype: meta.vtype, format: meta.format, ...meta.extra }),
  );
  if (json.length > META_MAX_LENGTH) {
    throw new RangeError(`metadata header of ${json.length} bytes exceeds ${META_MAX_LENGTH}`);
  }
  const out = new Uint8Array(SIZE_HEADER_LENGTH + json.length);
  out.set(encodeSizeHeader(json.length), 0);
  out.set(json, SIZE_HEADER_LENGTH);
  return out;
}

/**
 * Checks the metadata length field before anything is read or allocated for the JSON.
 * Throws `RangeError` beyond {@link META_MAX_LENGTH} and `SyntaxError` for a short field.
 *
 * @example
 * ```ts
 * import { decodeMetaLength } from "./meta_header.ts";
 * let refused = false;
 * try { decodeMetaLength(new Uint8Array([0, 0, 0, 1, 0, 0, 0, 0])); } catch { refused = true; }
 * console.assert(refused);
 * ```
 */
export function decodeMetaLength(bytes: Uint8Array): number {
  const n = decodeSizeHeader(bytes, "metadata length");
  if (n > META_MAX_LENGTH) {
    throw new RangeError(
      `metadata header length ${n} exceeds the limit of ${META_MAX_LENGTH} bytes: not a volt or Proxmox stream?`,
    );
  }
  if (n === 0) throw new SyntaxError("malformed metadata header: empty");
  return n;
}

/**
 * Parses the JSON of a metadata header (`length` bytes were expected). Throws `SyntaxError`
 * for a short read, invalid UTF-8, invalid JSON, a non-object, or a missing `vtype`/`format`.
 *
 * @example
 * ```ts
 * import { decodeMetaJson } from "./meta_header.ts";
 * const bytes = new TextEncoder().encode('{"format":"raw","x":1,"vtype":"iso"}');
 * const m = decodeMetaJson(bytes, bytes.length);
 * console.assert(m.vtype === "iso" && m.format === "raw");
 * ```
 */
export function decodeMetaJson(bytes: Uint8Array, length: number): StreamMeta {
  if (bytes.length < length) {
    throw new SyntaxError(
      `stream ended inside its metadata header (${bytes.length} of ${length} bytes)`,
    );
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new SyntaxError("malformed metadata header: not valid UTF-8");
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new SyntaxError(`malformed metadata header: ${(err as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new SyntaxError("malformed metadata header: not a JSON object");
  }
  const { vtype, format, ...extra } = value as Record<string, unknown>;
  if (typeof vtype !== "string" || vtype === "") {
    throw new SyntaxError("malformed metadata header: no 'vtype' string");
  }
  if (typeof format !== "string" || format === "") {
    throw new SyntaxError("malformed metadata header: no 'format' string");
  }
  return Object.keys(extra).length > 0 ? { vtype, format, extra } : { vtype, format };
}
