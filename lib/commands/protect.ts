/**
 * `volt protect <volid> [0|1]`: show or change whether a backup is protected. A protected
 * backup cannot be freed and is always kept by prune; the storage's `max-protected-backups`
 * limits how many backups of a guest may be protected (checked by the storage plugin).
 *
 * @module
 */

import type { CommandSpec } from "../cli/command.ts";
import { UsageError } from "../errors.ts";
import type { Storages } from "../storage/storages.ts";
import { readBackupAttribute, writeBackupAttribute } from "./backup_attributes.ts";
import { storagesFromArgs } from "./common.ts";

/** Whether a backup is protected. */
export async function runGetProtected(storages: Storages, volid: string): Promise<boolean> {
  return await readBackupAttribute(storages, volid, "protected") === true;
}

/** Protects a backup or removes its protection. */
export function runSetProtected(
  storages: Storages,
  volid: string,
  value: boolean,
): Promise<void> {
  return writeBackupAttribute(storages, volid, "protected", value);
}

/** `volt protect`. */
export const protectCommand: CommandSpec = {
  name: "protect",
  summary: "show or change whether a backup is protected",
  args: "<backup-volid> [0|1]",
  details: `
Without a value, prints 1 (protected) or 0. With 1, protects the backup: 'volt free'
refuses it and prune keeps it (without counting it towards any keep option). Refused when
the guest already has max-protected-backups protected backups of its type on the storage
(unset or -1: no limit). With 0, removes the protection.`,
  positionals: [1, 2],
  async run(args) {
    const [volid, value] = args.positionals;
    if (value !== undefined && value !== "0" && value !== "1") {
      throw new UsageError(`volt protect: '${value}' is not 0 or 1`);
    }
    const storages = await storagesFromArgs(args);
    if (value === undefined) {
      console.log((await runGetProtected(storages, volid)) ? "1" : "0");
      return;
    }
    await runSetProtected(storages, volid, value === "1");
    console.error(value === "1" ? `protected '${volid}'` : `removed the protection of '${volid}'`);
  },
};
