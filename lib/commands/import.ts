/**
 * `volt import <volid> <format> <file|->`: create a volume from a stream (like `pvesm import`).
 *
 * @module
 */

import type { CommandSpec } from "../cli/command.ts";
import { VoltError } from "../errors.ts";
import { withTermination } from "../signals.ts";
import type { Storages } from "../storage/storages.ts";
import { FdSource } from "../streams/source.ts";
import { storagesFromArgs } from "./common.ts";

/** Options of {@link runImport}. */
export interface ImportOptions {
  /** Volume to create. */
  volid: string;
  /** Stream format, e.g. `raw+size`. */
  format: string;
  /** Stream file, or `-` for stdin. */
  file: string;
  /** The stream carries snapshots (qcow2+size, vmdk+size). */
  withSnapshots?: boolean;
  /** Take the next free disk name when `volid` exists (images, rootdir). */
  allowRename?: boolean;
}

/**
 * Imports the stream and returns the volume id it created. SIGINT/SIGTERM stop it; whatever
 * failure, nothing half-written remains.
 */
export async function runImport(storages: Storages, options: ImportOptions): Promise<string> {
  const v = await storages.volume(options.volid);
  const importer = v.plugin.volumeImport;
  if (!importer) throw new VoltError(`storage type '${v.storage.type}' does not support import`);
  return await withTermination(async (signal) => {
    const source = options.file === "-"
      ? FdSource.stdin(signal)
      : FdSource.open(options.file, signal);
    try {
      const volname = await importer.call(
        v.plugin,
        v.storage,
        v.volname,
        options.format,
        source,
        {
          withSnapshots: options.withSnapshots,
          allowRename: options.allowRename,
          signal,
          log: (_level, message) => console.error(message),
        },
      );
      return `${v.storage.id}:${volname}`;
    } finally {
      source.close();
    }
  });
}

/** `volt import`. */
export const importCommand: CommandSpec = {
  name: "import",
  summary: "create a volume from a stream written by 'volt export' or 'pvesm export'",
  args: "<volid> <format> <file|->",
  details: "Formats a new volume accepts: 'volt import-formats <volid>'. '-' reads stdin. " +
    "Prints \"successfully imported '<volid>'\" (the volume id used) on success.",
  positionals: [3, 3],
  options: {
    "with-snapshots": {
      type: "boolean",
      description: "the stream carries snapshots (qcow2+size, vmdk+size)",
    },
    "allow-rename": {
      type: "boolean",
      description: "if the volume exists, import under the next free disk name",
    },
  },
  async run(args) {
    const [volid, format, file] = args.positionals;
    const used = await runImport(await storagesFromArgs(args), {
      volid,
      format,
      file,
      withSnapshots: args.values["with-snapshots"] === true,
      allowRename: args.values["allow-rename"] === true,
    });
    console.log(`successfully imported '${used}'`);
  },
};
