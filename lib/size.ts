/**
 * Sizes on the command line (`4G`, `512M`, `1048576`) and for humans.
 *
 * @module
 */

import { UsageError } from "./errors.ts";

const UNITS: Record<string, number> = { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/**
 * Parses a size with an optional binary unit suffix (K, M, G, T; `KiB`/`KB`/`k` accepted).
 *
 * @example
 * ```ts
 * import { parseSize } from "./size.ts";
 * console.assert(parseSize("4G") === 4 * 2 ** 30);
 * console.assert(parseSize("512") === 512);
 * ```
 */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*$/.exec(text);
  if (!m) throw new UsageError(`invalid size '${text}': use bytes or a number with K, M, G or T`);
  const bytes = Math.round(Number(m[1]) * UNITS[m[2].toUpperCase()]);
  if (!Number.isSafeInteger(bytes)) throw new UsageError(`size '${text}' is too large`);
  return bytes;
}

/**
 * A byte count for humans, binary units with one decimal.
 *
 * @example
 * ```ts
 * import { formatBytes } from "./size.ts";
 * console.assert(formatBytes(1536) === "1.5 KiB");
 * ```
 */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}
