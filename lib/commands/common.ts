/**
 * Pieces shared by the command files: opening the storages from the global flags and printing
 * a table or JSON.
 *
 * @module
 */

import { listOpt, outputFormat, type ParsedArgs, stringOpt } from "../cli/command.ts";
import { formatTable } from "../cli/table.ts";
import { Storages } from "../storage/storages.ts";

/** Opens the storages named by `--config` and `--plugin`. */
export function storagesFromArgs(args: ParsedArgs): Promise<Storages> {
  return Storages.open({
    configPath: stringOpt(args, "config"),
    pluginPaths: listOpt(args, "plugin"),
  });
}

/** Prints `data` as JSON, or as a table built by `toRows` (header first). */
export function printOutput<T>(
  args: ParsedArgs,
  data: T[],
  header: string[],
  toRow: (item: T) => (string | number)[],
): void {
  if (outputFormat(args) === "json") {
    console.log(JSON.stringify(data, null, 2));
  } else if (data.length > 0) {
    console.log(formatTable(header, data.map(toRow)));
  }
}

/** Parses a vmid argument (a positive integer). */
export function parseVmid(text: string): number {
  if (!/^[1-9]\d{0,8}$/.test(text)) {
    throw new TypeError(`invalid vmid '${text}': expected a positive integer`);
  }
  return Number(text);
}
