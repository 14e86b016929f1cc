/**
 * `volt free <volid>`: delete a volume.
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
  summary: "delete a volume",
  args: "<volid>",
  positionals: [1, 1],
  async run(args) {
    await runFree(await storagesFromArgs(args), args.positionals[0]);
    console.error(`removed '${args.positionals[0]}'`);
  },
};
