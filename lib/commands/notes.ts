/**
 * `volt notes <volid> [--set TEXT]`: show or change the notes of a backup, through the
 * storage plugin's `getVolumeAttribute`/`updateVolumeAttribute` (for the directory backup
 * storage: a `notes` file beside the backup, `plugins/backup_dir/attributes.ts`).
 *
 * @module
 */

import { type CommandSpec, stringOpt } from "../cli/command.ts";
import { VoltError } from "../errors.ts";
import type { VolumeAttribute } from "../../plugins/api.ts";
import type { Storages, VolumeHandle } from "../storage/storages.ts";
import { storagesFromArgs } from "./common.ts";

/** What each attribute is called in messages. */
const ATTRIBUTE_NAMES: Record<VolumeAttribute, string> = {
  notes: "notes",
  protected: "protection",
};

/**
 * Resolves a backup volume whose storage plugin can read and change `attribute`; one clear
 * error otherwise (`storage 'x' (type y) does not support notes`, not a backup).
 */
export async function attributeVolume(
  storages: Storages,
  volid: string,
  attribute: VolumeAttribute,
): Promise<VolumeHandle> {
  const v = await storages.volume(volid);
  if (!v.plugin.getVolumeAttribute || !v.plugin.updateVolumeAttribute) {
    throw new VoltError(
      `storage '${v.storage.id}' (type ${v.storage.type}) does not support ` +
        ATTRIBUTE_NAMES[attribute],
    );
  }
  if (v.name.vtype !== "backup") {
    throw new VoltError(
      `'${v.volid}' is not a backup: only backups have ${ATTRIBUTE_NAMES[attribute]}`,
    );
  }
  return v;
}

/** The notes of a backup (empty when it has none). */
export async function runGetNotes(storages: Storages, volid: string): Promise<string> {
  const v = await attributeVolume(storages, volid, "notes");
  return String(await v.plugin.getVolumeAttribute!(v.storage, v.volname, "notes"));
}

/** Replaces the notes of a backup; empty text removes them. */
export async function runSetNotes(storages: Storages, volid: string, text: string): Promise<void> {
  const v = await attributeVolume(storages, volid, "notes");
  await v.plugin.updateVolumeAttribute!(v.storage, v.volname, "notes", text);
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
