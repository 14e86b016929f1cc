/**
 * `volt notes <volid> [--set TEXT]`: show or change the notes of a backup, through the
 * storage plugin's `getVolumeAttribute`/`updateVolumeAttribute` (for the directory backup
 * storage: a `notes` file beside the backup, `plugins/backup_dir/attributes.ts`).
 *
 * @module
 */

import { type CommandSpec, stringOpt } from "../cli/command.ts";
import type { Storages } from "../storage/storages.ts";
import { readBackupAttribute, writeBackupAttribute } from "./backup_attributes.ts";
import { storagesFromArgs } from "./common.ts";

/** The notes of a backup (empty when it has none). */
export async function runGetNotes(storages: Storages, volid: string): Promise<string> {
  return String(await readBackupAttribute(storages, volid, "notes"));
}

/** Replaces the notes of a backup; empty text removes them. */
export function runSetNotes(storages: Storages, volid: string, text: string): Promise<void> {
  return writeBackupAttribute(storages, volid, "notes", text);
}

/** `volt notes`. */
export const notesCommand: CommandSpec = {
  name: "notes",
  summary: "show or change the notes of a backup",
  args: "<backup-volid>",
  details: `
Without --set, prints the notes (nothing when there are none). --set TEXT replaces them
(newlines allowed, up to 32 KiB for the directory backup storage); --set '' removes them.
'volt list' shows the first line of each backup's notes, JSON output the whole text.`,
  positionals: [1, 1],
  options: {
    set: { type: "string", arg: "TEXT", description: "replace the notes ('' removes them)" },
  },
  async run(args) {
    const volid = args.positionals[0];
    const storages = await storagesFromArgs(args);
    const text = stringOpt(args, "set");
    if (text === undefined) {
      const notes = await runGetNotes(storages, volid);
      if (notes !== "") console.log(notes.endsWith("\n") ? notes.slice(0, -1) : notes);
      return;
    }
    await runSetNotes(storages, volid, text);
    console.error(
      text === "" ? `removed the notes of '${volid}'` : `updated the notes of '${volid}'`,
    );
  },
};
