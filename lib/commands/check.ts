/**
 * `volt check <volid> [--repair]`: find (and resolve) interrupted snapshot operations and
 * damaged images.
 *
 * @module
 */

import { type CommandSpec, OUTPUT_FORMAT_OPTION, outputFormat } from "../cli/command.ts";
import type { VolumeCheckReport } from "../../plugins/api.ts";
import type { Storages } from "../storage/storages.ts";
import { storagesFromArgs } from "./common.ts";
import { snapshotTarget } from "./snapshot.ts";

/** Options of {@link runCheck}. */
export interface CheckCommandOptions {
  volid: string;
  repair: boolean;
}

/** Checks (and repairs) one volume. */
export async function runCheck(
  storages: Storages,
  options: CheckCommandOptions,
): Promise<VolumeCheckReport> {
  const { volume, method } = await snapshotTarget(storages, options.volid, "volumeCheck");
  return await method(volume.storage, volume.volname, { repair: options.repair });
}

/** The report as text lines. */
export function formatCheckReport(report: VolumeCheckReport, repair: boolean): string[] {
  const lines = report.problems.map((p) => {
    let line = `${p.severity}: ${p.message}`;
    if (p.repaired === true) line += ` — repaired: ${p.repair}`;
    else if (p.repairError) line += ` — repair failed: ${p.repairError}`;
    else if (p.repair && !repair) line += ` (--repair: ${p.repair})`;
    return line;
  });
  if (report.ok) {
    const fixed = report.problems.filter((p) => p.repaired === true).length;
    lines.push(`${report.volid}: ok${fixed > 0 ? ` (${fixed} repaired)` : ""}`);
  } else {
    const fixable = report.problems.some((p) => p.repair && p.repaired !== true);
    lines.push(
      `${report.volid}: needs attention${
        fixable && !repair ? `: run 'volt check --repair ${report.volid}'` : ""
      }`,
    );
  }
  return lines;
}

/** `volt check`. */
export const checkCommand: CommandSpec = {
  name: "check",
  summary: "check a disk image for interrupted snapshot operations and damage (--repair)",
  args: "<volid>",
  details: "Reports a leftover of an interrupted snapshot, rollback or deletion, files of the " +
    "chain that are not volt snapshots, and what 'qemu-img check' finds in each file. " +
    "--repair undoes an interrupted snapshot or rollback, finishes an interrupted deletion and " +
    "frees leaked clusters; it never touches files it did not create. Exit code 0 when no " +
    "error is left.",
  positionals: [1, 1],
  options: {
    repair: { type: "boolean", description: "resolve what can be resolved" },
    ...OUTPUT_FORMAT_OPTION,
  },
  async run(args) {
    const repair = args.values.repair === true;
    const report = await runCheck(await storagesFromArgs(args), {
      volid: args.positionals[0],
      repair,
    });
    if (outputFormat(args) === "json") console.log(JSON.stringify(report, null, 2));
    else console.log(formatCheckReport(report, repair).join("\n"));
    return report.ok ? 0 : 1;
  },
};
