/**
 * `volt verify <backup-volid>`: check a stored backup through its provider (for the
 * directory backup storage: `lib/backup/verify.ts`).
 *
 * @module
 */

import { type CommandSpec, OUTPUT_FORMAT_OPTION, outputFormat } from "../cli/command.ts";
import type { VerifyReport } from "../../plugins/backup_api.ts";
import { VoltError } from "../errors.ts";
import { openBackupProvider } from "../backup/open_provider.ts";
import { formatBytes } from "../size.ts";
import type { Storages } from "../storage/storages.ts";
import { storagesFromArgs } from "./common.ts";

/** Verifies one backup and returns the provider's report. */
export async function runVerify(storages: Storages, volid: string): Promise<VerifyReport> {
  const v = await storages.volume(volid);
  if (v.name.vtype !== "backup") throw new VoltError(`'${volid}' is not a backup`);
  const provider = await openBackupProvider(v, (level, message) => {
    if (level !== "info") {
      console.error(`volt: ${level === "warn" ? "warning" : "error"}: ${message}`);
    }
  });
  if (!provider.archiveVerify) {
    throw new VoltError(
      `the backup provider of storage type ${v.storage.type} cannot verify backups`,
    );
  }
  return await provider.archiveVerify(v.volname);
}

/** `volt verify`. */
export const verifyCommand: CommandSpec = {
  name: "verify",
  summary: "check a backup: checksums, images and backing chain, or the container archive",
  args: "<backup-volid>",
  details: `
For the directory backup storage: the manifest, the size and SHA-256 of every file, the
qcow2 backing chain (walked by volt, as restore does), 'qemu-img check' of every image, and
the parent backups an incremental one depends on; for a container backup, that its archive
(archive.tar or archive.sqfs) is one of its format. Exits 1 naming the first problem; the
others follow on stderr.`,
  options: { ...OUTPUT_FORMAT_OPTION },
  positionals: [1, 1],
  async run(args) {
    const volid = args.positionals[0];
    const r = await runVerify(await storagesFromArgs(args), volid);
    if (outputFormat(args) === "json") console.log(JSON.stringify(r, null, 2));
    if (!r.ok) {
      for (const p of r.problems.slice(1)) console.error(`volt: also: ${p.message}`);
      throw new VoltError(`backup ${volid} failed verification: ${r.problems[0].message}`);
    }
    const images = r.checked.images > 0 ? ` and ${r.checked.images} images` : "";
    console.error(
      `backup ${volid} verified: ${r.checked.files} files (${formatBytes(r.checked.bytes)})` +
        `${images}, no problem found`,
    );
    return 0;
  },
};
