/**
 * `volt snapshots <volid>`: the snapshots of a disk image.
 *
 * @module
 */

import { type CommandSpec, OUTPUT_FORMAT_OPTION } from "../cli/command.ts";
import type { SnapshotInfo } from "../../plugins/api.ts";
import { formatBytes } from "../size.ts";
import type { Storages } from "../storage/storages.ts";
import { printOutput, storagesFromArgs } from "./common.ts";
import { snapshotTarget } from "./snapshot.ts";

/** The snapshots of `volid`, oldest first, then `current`. */
export async function runSnapshots(storages: Storages, volid: string): Promise<SnapshotInfo[]> {
  const { volume, method } = await snapshotTarget(storages, volid, "volumeSnapshotList");
  return await method(volume.storage, volume.volname);
}

function formatTime(seconds: number | undefined): string {
  if (seconds === undefined) return "-";
  return new Date(seconds * 1000).toISOString().slice(0, 19).replace("T", " ");
}

/** `volt snapshots`. */
export const snapshotsCommand: CommandSpec = {
  name: "snapshots",
  summary: "list the snapshots of a disk image",
  args: "<volid>",
  details: "JSON fields: name, order (1 = oldest; 'current' last), file, volid, parent, child, " +
    "size (virtual, bytes), ctime (creation, seconds since the epoch; absent for 'current').",
  positionals: [1, 1],
  options: { ...OUTPUT_FORMAT_OPTION },
  async run(args) {
    const list = await runSnapshots(await storagesFromArgs(args), args.positionals[0]);
    printOutput(
      args,
      list,
      ["Order", "Name", "Parent", "Child", "Size", "Created (UTC)", "Volid"],
      (s) => [
        s.order,
        s.name,
        s.parent ?? "-",
        s.child ?? "-",
        s.size === undefined ? "-" : formatBytes(s.size),
        formatTime(s.ctime),
        s.volid ?? "-",
      ],
    );
  },
};
