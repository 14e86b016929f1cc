/**
 * `volt free <volid>`: delete a volume. For a backup that others are based on, the directory
 * backup storage merges it into them first (`plugins/backup_dir/remove_backup.ts`) and says
 * so on stderr.
 *
 * @module
 */

import type { CommandSpec } from "../cli/command.ts";
import type { Storages } from "../storage/storages.ts";
import { storagesFromArgs } from "./common.ts";

/** Deletes a volume. */
export async function runFree(storages: Storages, volid: string): Promise<void> {
  const v = await storages.volume(volid);
  await v.plugin.freeImage(v.storage, v.volname);
}

/** `volt free`. */
export const freeCommand: CommandSpec = {
  name: "free",
  summary: "delete a volume (a backup others are based on is merged into them first)",
  args: "<volid>",
  details: `
Removes the volume and all of its files; a volume with snapshots (volume chains) goes with
its snapshot files.

Backups in a directory backup storage: a backup that later incremental backups are based on
is merged into each of them first (they become based on its parent, or full backups), so
every remaining backup still restores exactly the disks it captured. Each merged backup is
replaced in one atomic step; an interrupted removal (a crash, kill -9, SIGINT) leaves every
remaining backup complete and restorable, and running 'volt free' again finishes it. A
protected backup is refused ('volt protect <volid> 0' first). Merging needs room for a
rewritten copy of each backup based on the removed one, and a file system that can exchange
two directories atomically (not NFS/CIFS). Format: docs/formats.md, "Removing backups".`,
  positionals: [1, 1],
  async run(args) {
    await runFree(await storagesFromArgs(args), args.positionals[0]);
    console.error(`removed '${args.positionals[0]}'`);
  },
};
