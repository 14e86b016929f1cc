/**
 * `volt info <volid>`: format, virtual size, usage and backing file of one volume.
 *
 * @module
 */

import { type CommandSpec, OUTPUT_FORMAT_OPTION, outputFormat } from "../cli/command.ts";
import type { VolumeSize } from "../../plugins/api.ts";
import { formatBytes } from "../size.ts";
import type { Storages } from "../storage/storages.ts";
import { storagesFromArgs } from "./common.ts";

/** Size facts of a volume (unsafe images are refused, never opened). */
export async function runSizeInfo(
  storages: Storages,
  volid: string,
): Promise<VolumeSize & { volid: string }> {
  const v = await storages.volume(volid);
  return { volid: v.volid, ...(await v.plugin.volumeSizeInfo(v.storage, v.volname)) };
}

/** `volt info`. */
export const infoCommand: CommandSpec = {
  name: "info",
  summary: "show a volume's format, virtual size, usage and backing file",
  args: "<volid>",
  positionals: [1, 1],
  options: { ...OUTPUT_FORMAT_OPTION },
  async run(args) {
    const info = await runSizeInfo(await storagesFromArgs(args), args.positionals[0]);
    if (outputFormat(args) === "json") {
      console.log(JSON.stringify(info, null, 2));
      return;
    }
    console.log(`volume:  ${info.volid}`);
    console.log(`format:  ${info.format}`);
    console.log(`size:    ${info.size} (${formatBytes(info.size)})`);
    console.log(`used:    ${info.used} (${formatBytes(info.used)})`);
    if (info.backing !== undefined) console.log(`backing: ${info.backing}`);
  },
};
