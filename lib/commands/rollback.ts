/**
 * `volt rollback <volid> <snap>`: return a disk image to a snapshot.
 *
 * @module
 */

import type { CommandSpec } from "../cli/command.ts";
import type { Storages } from "../storage/storages.ts";
import { storagesFromArgs } from "./common.ts";
import { snapshotTarget } from "./snapshot.ts";

/** Rolls the volume `volid` back to snapshot `snap`. */
export async function runRollback(storages: Storages, volid: string, snap: string): Promise<void> {
  const { volume, method } = await snapshotTarget(storages, volid, "volumeSnapshotRollback");
  await method(volume.storage, volume.volname, snap);
}

/** `volt rollback`. */
export const rollbackCommand: CommandSpec = {
  name: "rollback",
  summary: "roll a disk image back to a snapshot (its current data is lost)",
  args: "<volid> <snap>",
  details: "With snapshot-as-volume-chain only the most recent snapshot can be rolled back to; " +
    "delete the newer ones first.",
  positionals: [2, 2],
  async run(args) {
    const [volid, snap] = args.positionals;
    await runRollback(await storagesFromArgs(args), volid, snap);
    console.error(`'${volid}' rolled back to snapshot '${snap}'`);
  },
};
