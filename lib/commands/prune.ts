/**
 * `volt prune <storage>`: remove the backups a retention setting does not keep
 * (`lib/backup/retention.ts`), or with `--dry-run` only show what it would do.
 *
 * @module
 */

import {
  type CommandSpec,
  intOpt,
  type OptionSpec,
  OUTPUT_FORMAT_OPTION,
  outputFormat,
  type ParsedArgs,
  stringOpt,
} from "../cli/command.ts";
import { formatTable } from "../cli/table.ts";
import { PRUNE_KEYS } from "../config/options.ts";
import { UsageError } from "../errors.ts";
import type { KeepOptions } from "../backup/prune.ts";
import {
  formatKeep,
  formatLocalTime,
  type PruneResult,
  type RetentionDecision,
  runPrune,
} from "../backup/retention.ts";
import { withTermination } from "../signals.ts";
import { parseVmid, storagesFromArgs } from "./common.ts";

/** The guest types `--type` accepts. */
const GUEST_TYPES = ["qemu", "lxc"] as const;

/** The counted keep options (all but keep-all), in Proxmox's order. */
const COUNTED = PRUNE_KEYS.filter((k) => k !== "keep-all");

const KEEP_HELP: Record<string, string> = {
  "keep-last": "keep the N newest backups",
  "keep-hourly": "keep the newest backup of each of the last N hours that have one",
  "keep-daily": "… of each of the last N days",
  "keep-weekly": "… of each of the last N ISO weeks",
  "keep-monthly": "… of each of the last N months",
  "keep-yearly": "… of each of the last N years",
};

/**
 * The keep options given on the command line; undefined when none is. `--keep-all` with
 * a positive count is refused, as Proxmox refuses it ("keep-all cannot be set together with
 * other options"): it is unclear which one the user meant.
 */
export function keepFromArgs(args: ParsedArgs): KeepOptions | undefined {
  const keep: KeepOptions = {};
  for (const key of COUNTED) {
    const n = intOpt(args, key);
    if (n !== undefined) keep[key] = n;
  }
  if (args.values["keep-all"] === true) {
    const counted = COUNTED.find((k) => (keep[k] ?? 0) > 0);
    if (counted) {
      throw new UsageError(
        `--keep-all cannot be combined with --${counted}: give one or the other`,
      );
    }
    keep["keep-all"] = 1;
  }
  return Object.keys(keep).length > 0 ? keep : undefined;
}

function row(d: RetentionDecision, timeZone?: string): string[] {
  return [d.volid, formatLocalTime(d.ctime, timeZone), d.mark, d.reason ?? ""];
}

/** The keep/remove table: one row per backup. */
export function pruneTable(result: PruneResult, timeZone?: string): string {
  return formatTable(
    ["Backup", "Time", "Mark", "Reason"],
    result.decisions.map((d) => row(d, timeZone)),
  );
}

/** `volt prune`. */
export const pruneCommand: CommandSpec = {
  name: "prune",
  summary: "remove the backups a retention setting does not keep",
  args: "<storage>",
  details: `
Marks every backup of the storage (with --vmid: of one guest; with --type: of one guest
type) keep, protected or remove, as Proxmox VE's prune does, and removes those marked
remove. The keep options are the ones given here; without any, the storage's prune-backups
setting; without that, nothing is removed (keep-all).

Backups are grouped by guest type and guest id and looked at newest first. The options
apply in the order keep-last, keep-hourly, keep-daily, keep-weekly (ISO weeks),
keep-monthly, keep-yearly; periods are calendar periods in local time (set TZ to change
it). Each option keeps the newest backup of each period that no earlier option covered,
until it has kept N; everything not kept is removed. Protected backups (volt protect) are
always kept and count towards no option.

Backups are removed one at a time, each guest's newest first, each reported on stderr; a
backup that others depend on is merged into its child by the storage. The first removal
that fails stops the run: what was removed stays removed, nothing else is touched.
Prints the table (Backup, Time, Mark, Reason) or, with --output-format json, an object
{keep, keepSource, decisions, removed, dryRun}.`,
  positionals: [1, 1],
  options: {
    vmid: { type: "string", arg: "N", description: "only the backups of guest N" },
    type: { type: "string", arg: "qemu|lxc", description: "only backups of this guest type" },
    ...Object.fromEntries(
      COUNTED.map((k): [string, OptionSpec] => [
        k,
        { type: "string", arg: "N", description: KEEP_HELP[k] },
      ]),
    ),
    "keep-all": {
      type: "boolean",
      description: "keep every backup (not with a positive --keep-* count)",
    },
    "dry-run": { type: "boolean", description: "only print what would be kept and removed" },
    ...OUTPUT_FORMAT_OPTION,
  },
  async run(args) {
    const format = outputFormat(args);
    const keep = keepFromArgs(args);
    const vmidText = stringOpt(args, "vmid");
    let vmid: number | undefined;
    if (vmidText !== undefined) {
      try {
        vmid = parseVmid(vmidText);
      } catch (err) {
        throw new UsageError(`--vmid: ${(err as Error).message}`);
      }
    }
    const type = stringOpt(args, "type");
    if (type !== undefined && !(GUEST_TYPES as readonly string[]).includes(type)) {
      throw new UsageError(`--type: '${type}' is not one of ${GUEST_TYPES.join(", ")}`);
    }
    const dryRun = args.values["dry-run"] === true;
    const storageId = args.positionals[0];
    const storages = await storagesFromArgs(args);
    const result = await withTermination((signal) =>
      runPrune(storages, storageId, {
        vmid,
        type,
        keep,
        dryRun,
        signal,
        log: (level, message) => {
          const prefix = level === "info" ? "" : level === "warn" ? "warning: " : "error: ";
          console.error(`${prefix}${message}`);
        },
      })
    );
    if (format === "json") {
      console.log(JSON.stringify({ ...result, dryRun }, null, 2));
    } else if (result.decisions.length > 0) {
      console.log(pruneTable(result));
    }
    const removing = result.decisions.filter((d) => d.mark === "remove").length;
    const total = result.decisions.length;
    const rule = `${formatKeep(result.keep)}${
      result.keepSource === "storage"
        ? ` from the storage's prune-backups`
        : result.keepSource === "default"
        ? ": no keep options given or configured"
        : ""
    }`;
    if (total === 0) {
      console.error(`no backups on '${storageId}' to prune`);
    } else if (dryRun) {
      console.error(`dry run: would remove ${removing} of ${total} backups (retention ${rule})`);
    } else {
      console.error(`removed ${result.removed.length} of ${total} backups (retention ${rule})`);
    }
  },
};
