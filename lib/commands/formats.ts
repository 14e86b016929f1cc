/**
 * `volt export-formats <volid>` and `volt import-formats <volid>`: the stream formats a volume
 * can be exported as, or a new volume imported from, preferred first, one per line.
 *
 * @module
 */

import type { CommandSpec } from "../cli/command.ts";
import { VoltError } from "../errors.ts";
import type { Storages } from "../storage/storages.ts";
import { storagesFromArgs } from "./common.ts";

/** Options of {@link runExportFormats} and {@link runImportFormats}. */
export interface FormatsOptions {
  /** The volume (for import: the volume to be created). */
  volid: string;
  /** Formats that carry the snapshots. */
  withSnapshots?: boolean;
}

/** The formats the volume can be exported as (empty when it cannot be exported). */
export async function runExportFormats(
  storages: Storages,
  options: FormatsOptions,
): Promise<string[]> {
  const v = await storages.volume(options.volid);
  if (!v.plugin.volumeExportFormats) return [];
  return await v.plugin.volumeExportFormats(v.storage, v.volname, {
    withSnapshots: options.withSnapshots,
  });
}

/** The formats a new volume `volid` can be imported from. */
export async function runImportFormats(
  storages: Storages,
  options: FormatsOptions,
): Promise<string[]> {
  const v = await storages.volume(options.volid);
  if (!v.plugin.volumeImportFormats) return [];
  return await v.plugin.volumeImportFormats(v.storage, v.volname, {
    withSnapshots: options.withSnapshots,
  });
}

const WITH_SNAPSHOTS = {
  "with-snapshots": {
    type: "boolean" as const,
    description: "formats that carry the snapshots",
  },
};

/** The command listing `kind` formats, computed by `list`. */
function formatsCommand(
  kind: "export" | "import",
  summary: string,
  list: (storages: Storages, options: FormatsOptions) => Promise<string[]>,
): CommandSpec {
  return {
    name: `${kind}-formats`,
    summary,
    args: "<volid>",
    positionals: [1, 1],
    options: WITH_SNAPSHOTS,
    async run(args) {
      const withSnapshots = args.values["with-snapshots"] === true;
      const volid = args.positionals[0];
      const formats = await list(await storagesFromArgs(args), { volid, withSnapshots });
      if (formats.length === 0) {
        throw new VoltError(
          `'${volid}' has no ${kind} formats ${withSnapshots ? "with" : "without"} snapshots`,
        );
      }
      for (const f of formats) console.log(f);
    },
  };
}

/** `volt export-formats`. */
export const exportFormatsCommand: CommandSpec = formatsCommand(
  "export",
  "list the stream formats a volume can be exported as",
  runExportFormats,
);

/** `volt import-formats`. */
export const importFormatsCommand: CommandSpec = formatsCommand(
  "import",
  "list the stream formats a new volume can be imported from",
  runImportFormats,
);
