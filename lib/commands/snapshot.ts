/**
 * `volt snapshot <volid> <snap>`: take a snapshot of a disk image.
 *
 * @module
 */

import type { CommandSpec } from "../cli/command.ts";
import { VoltError } from "../errors.ts";
import type { StoragePlugin } from "../../plugins/api.ts";
import type { Storages, VolumeHandle } from "../storage/storages.ts";
import { storagesFromArgs } from "./common.ts";

/** The snapshot methods a plugin may have. */
export type SnapshotMethod =
  | "volumeSnapshot"
  | "volumeSnapshotRollback"
  | "volumeSnapshotDelete"
  | "volumeSnapshotList"
  | "volumeCheck";

/**
 * Resolves `volid` and the plugin method `name`, or fails saying the storage type has no such
 * support.
 */
export async function snapshotTarget<M extends SnapshotMethod>(
  storages: Storages,
  volid: string,
  name: M,
): Promise<{ volume: VolumeHandle; method: NonNullable<StoragePlugin[M]> }> {
  const volume = await storages.volume(volid);
  const method = volume.plugin[name];
  if (typeof method !== "function") {
    const what = name === "volumeCheck" ? "volume checks" : "snapshots";
    throw new VoltError(
      `storage '${volume.storage.id}' (type '${volume.storage.type}') does not support ${what}`,
    );
  }
  return { volume, method: method.bind(volume.plugin) as NonNullable<StoragePlugin[M]> };
}

/** Takes snapshot `snap` of the volume `volid`. */
export async function runSnapshot(storages: Storages, volid: string, snap: string): Promise<void> {
  const { volume, method } = await snapshotTarget(storages, volid, "volumeSnapshot");
  await method(volume.storage, volume.volname, snap);
}

/** `volt snapshot`. */
export const snapshotCommand: CommandSpec = {
  name: "snapshot",
  summary: "take a snapshot of a disk image (no VM may be using it)",
  args: "<volid> <snap>",
  details: "Snapshot names: a letter, then letters, digits, '_' or '-', at most 40 characters; " +
    "'current' and 'pending' are reserved. On a storage with snapshot-as-volume-chain the " +
    "snapshot becomes the file snap-<snap>-<volfile>; otherwise it is a qcow2 internal snapshot.",
  positionals: [2, 2],
  async run(args) {
    const [volid, snap] = args.positionals;
    await runSnapshot(await storagesFromArgs(args), volid, snap);
    console.error(`snapshot '${snap}' of '${volid}' created`);
  },
};
