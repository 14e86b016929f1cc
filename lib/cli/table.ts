/**
 * Plain-text tables for CLI output.
 *
 * @module
 */

/**
 * Formats rows as aligned columns under a header line. Numeric-looking cells are right-aligned.
 *
 * @example
 * ```ts
 * import { formatTable } from "./table.ts";
 * const text = formatTable(["Name", "Size"], [["a", "10"]]);
 * console.assert(text.startsWith("Name"));
 * ```
 */
export function formatTable(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map((c) => String(c)))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  const numeric = header.map((_, i) =>
    rows.length > 0 && rows.every((r) => /^-?[\d.]+$/.test(String(r[i] ?? "")))
  );
  return cells
    .map((r) =>
      r.map((c, i) => (numeric[i] ? c.padStart(widths[i]) : c.padEnd(widths[i])))
        .join("  ").trimEnd()
    )
    .join("\n");
}
