/**
 * Typed storage options: turning the text of a storage.cfg line into a value by its
 * {@link OptionSchema}, and back.
 *
 * @module
 */

import type { OptionSchema, OptionValue } from "../../plugins/api.ts";

/** Keys Proxmox allows in `prune-backups`. */
export const PRUNE_KEYS = [
  "keep-all",
  "keep-last",
  "keep-hourly",
  "keep-daily",
  "keep-weekly",
  "keep-monthly",
  "keep-yearly",
] as const;

/**
 * Parses one option's text. Throws `TypeError` with `storage '<id>': …` on a bad value.
 *
 * @example
 * ```ts
 * import { parseOptionValue } from "./options.ts";
 * const v = parseOptionValue("s", "content", { type: "list", description: "" }, "iso,images");
 * console.assert(Array.isArray(v) && v.length === 2);
 * ```
 */
export function parseOptionValue(
  storeid: string,
  key: string,
  schema: OptionSchema,
  text: string,
): OptionValue {
  const bad = (why: string) => new TypeError(`storage '${storeid}': option '${key}': ${why}`);
  switch (schema.type) {
    case "string":
      if (text.length === 0) throw bad("empty value");
      return text;
    case "boolean":
      if (text === "1" || text === "0") return text === "1";
      throw bad(`'${text}' is not 0 or 1`);
    case "integer": {
      if (!/^-?\d+$/.test(text)) throw bad(`'${text}' is not an integer`);
      const n = Number(text);
      if (schema.minimum !== undefined && n < schema.minimum) {
        throw bad(`${n} is below ${schema.minimum}`);
      }
      if (schema.maximum !== undefined && n > schema.maximum) {
        throw bad(`${n} is above ${schema.maximum}`);
      }
      return n;
    }
    case "enum":
      if (!schema.values?.includes(text)) {
        throw bad(`'${text}' is not one of ${schema.values?.join(", ")}`);
      }
      return text;
    case "list": {
      const items = text.split(/[,;\s]+/).filter((s) => s.length > 0);
      for (const item of items) {
        if (schema.values && !schema.values.includes(item)) {
          throw bad(`'${item}' is not one of ${schema.values.join(", ")}`);
        }
      }
      return items;
    }
    case "prune": {
      const out: Record<string, number> = {};
      for (const part of text.split(",").filter((s) => s.length > 0)) {
        const m = /^([a-z-]+)=(\d+)$/.exec(part.trim());
        if (!m || !(PRUNE_KEYS as readonly string[]).includes(m[1])) {
          throw bad(`'${part}' is not one of ${PRUNE_KEYS.join(", ")} with =N`);
        }
        out[m[1]] = Number(m[2]);
      }
      return out;
    }
  }
}

/**
 * Writes an option value back as storage.cfg text.
 *
 * @example
 * ```ts
 * import { formatOptionValue } from "./options.ts";
 * console.assert(formatOptionValue({ "keep-daily": 7 }) === "keep-daily=7");
 * ```
 */
export function formatOptionValue(value: OptionValue): string {
  if (typeof value === "boolean") return value ? "1" : "0";
  if (Array.isArray(value)) return value.join(",");
  if (typeof value === "object") {
    return Object.entries(value).map(([k, v]) => `${k}=${v}`).join(",");
  }
  return String(value);
}
