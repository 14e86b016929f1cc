/**
 * `volt path <volid>`: the local path of a volume.
 *
 * @module
 */

import type { CommandSpec } from "../cli/command.ts";
import type { Storages } from "../storage/storages.ts";
import { storagesFromArgs } from "./common.ts";

/** The filesystem path of a volume. */
export async function runPath(storages: Storages, volid: string): Promise<string> {
  const v = await storages.volume(volid);
  return v.plugin.path(v.storage, v.volname);
}

/** `volt path`. */
export const pathCommand: CommandSpec = {
  name: "path",
  summary: "print the filesystem path of a volume",
  args: "<volid>",
  positionals: [1, 1],
  async run(args) {
    console.log(await runPath(await storagesFromArgs(args), args.positionals[0]));
  },
};
