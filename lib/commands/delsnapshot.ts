/**
 * `volt delsnapshot <volid> <snap>`: delete a snapshot of a disk image.
 *
 * @module
 */

import type { CommandSpec } from "../cli/command.ts";
import type { Storages } from "../storage/storages.ts";
import { storagesFromArgs } from "./common.ts";
import { snapshotTarget } from "./snapshot.ts";

/** Deletes snapshot `snap` of the volume `volid`. */
export async function runDelSnapshot(
  storages: Storages,
  volid: string,
  snap: string,
): Promise<void> {
  const { volume, method } = await snapshotTarget(storages, volid, "volumeSnapshotDelete");
  await method(volume.storage, volume.volname, snap);
}

/** `volt delsnapshot`. */
export const delSnapshotCommand: CommandSpec = {
  name: "delsnapshot",
  summary: "delete a snapshot of a disk image (its data merges into the next one)",
  args: "<volid> <snap>",
  positionals: [2, 2],
  async run(args) {
    const [volid, snap] = args.positionals;
    await runDelSnapshot(await storagesFromArgs(args), volid, snap);
    console.error(`snapshot '${snap}' of '${volid}' deleted`);
  },
};
