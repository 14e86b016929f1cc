/**
 * Retention of a backup storage (`volt prune`, `volt backup --prune`): which backups a
 * `prune-backups` setting keeps, and removing the others, for ANY storage that holds backups
 * (the built-in `backup-dir`, a third-party provider's storage): everything goes through the
 * storage plugin's `listVolumes` and `freeImage`.
 *
 * As Proxmox VE's `prune-backups`:
 *
 * - The keep options are the ones given; when none are given, the storage's `prune-backups`;
 *   when that is unset too, keep-all (nothing is removed).
 * - Backups are grouped by guest type and guest id; each group is marked on its own by
 *   {@link pruneMarks} (`lib/backup/prune.ts`: the options, periods in local time, protected
 *   backups always kept and counted by no option).
 * - `vmid` limits the run to one guest, `type` to one guest type.
 * - A backup the storage reports without a guest id or guest type cannot be grouped: it is
 *   listed as `renamed` (Proxmox's word for a backup outside its naming scheme) and kept.
 *
 * Removal (not with `dryRun`): the backups marked `remove`, one at a time, each guest's newest
 * first (removing a backup others depend on merges it into its child, so the deltas moved stay
 * small), each reported through `log` before it starts. Right before each removal the
 * backup's protection is read again (when the plugin has `getVolumeAttribute`): one protected
 * since the listing is skipped with a warning, never removed. The first removal that fails
 * stops the run with one error naming it: what was removed stays removed, nothing else is
 * touched.
 *
 * @module
 */

import type { LogFunction, Storage, VolumeInfo } from "../../plugins/api.ts";
import { PRUNE_KEYS } from "../config/options.ts";
import { errorLine, VoltError } from "../errors.ts";
import type { StorageHandle, Storages } from "../storage/storages.ts";
import { parseVolumeId } from "../storage/volume_id.ts";
import { type KeepOptions, type PruneKey, pruneMarks } from "./prune.ts";

/** What prune does with a backup; `renamed`: it cannot be grouped, so it is kept. */
export type RetentionMark = "keep" | "protected" | "remove" | "renamed";

/** One backup and its mark, as `volt prune` prints it. */
export interface RetentionDecision {
  volid: string;
  /** Owning guest; absent when the storage does not say (then the mark is `renamed`). */
  vmid?: number;
  /** Guest type (`qemu`, `lxc`); `unknown` when the storage does not say. */
  type: string;
  /** Backup time, seconds since the epoch. */
  ctime: number;
  mark: RetentionMark;
  /** For `keep`: the option that kept it (`keep-all` when nothing limits retention). */
  reason?: PruneKey;
}

/** Where the keep options of a run came from. */
export type KeepSource = "options" | "storage" | "default";

/** Options of {@link planPrune} and {@link runPrune}. */
export interface RetentionOptions {
  /** Only the backups of this guest. */
  vmid?: number;
  /** Only backups of this guest type (`qemu`, `lxc`). */
  type?: string;
  /**
   * Keep options for this run. Absent or without any key: the storage's `prune-backups`, and
   * keep-all when that is unset. Given, they replace the storage's setting entirely (an
   * option set to 0 included).
   */
  keep?: KeepOptions;
  /** IANA time zone of the periods (default: the process's local time). */
  timeZone?: string;
}

/** The plan of a prune: the keep options used and every backup's mark. */
export interface PrunePlan {
  /** The keep options applied (`{ "keep-all": 1 }` when none were set). */
  keep: KeepOptions;
  keepSource: KeepSource;
  /** Every backup looked at: by guest id, then guest type, each group newest first. */
  decisions: RetentionDecision[];
}

/** Options of {@link runPrune} besides the plan's. */
export interface RunPruneOptions extends RetentionOptions {
  /** Only mark; remove nothing. */
  dryRun?: boolean;
  /** Progress and warnings (`removing backup '…'`). */
  log?: LogFunction;
  /** Stops before the next removal (the current one finishes). */
  signal?: AbortSignal;
  /**
   * Volume ids that must survive (`volt backup --prune` passes the backup it just made). The
   * rules always keep a group's newest backup, so one of these marked `remove` means a
   * broken listing: the run then refuses before removing anything.
   */
  mustKeep?: readonly string[];
}

/** What {@link runPrune} did. */
export interface PruneResult extends PrunePlan {
  /** Volume ids removed, in removal order (empty for a dry run). */
  removed: string[];
}

/**
 * The keep options a run uses: `keep` when it has any key, else the storage's
 * `prune-backups`, else keep-all.
 *
 * @example
 * ```ts
 * import { effectiveKeep } from "./retention.ts";
 * const s = { id: "b", type: "backup-dir", options: { "prune-backups": { "keep-last": 3 } } };
 * console.assert(effectiveKeep(s).keep["keep-last"] === 3);
 * console.assert(effectiveKeep(s, { "keep-daily": 1 }).keep["keep-last"] === undefined);
 * ```
 */
export function effectiveKeep(
  storage: Storage,
  keep?: KeepOptions,
): { keep: KeepOptions; source: KeepSource } {
  if (keep !== undefined && Object.keys(keep).length > 0) return { keep, source: "options" };
  const configured = storage.options["prune-backups"];
  if (configured !== undefined && typeof configured === "object" && !Array.isArray(configured)) {
    if (Object.keys(configured).length > 0) {
      return { keep: configured as KeepOptions, source: "storage" };
    }
  }
  return { keep: { "keep-all": 1 }, source: "default" };
}

/**
 * Marks backups (any storage's `VolumeInfo` list) with `keep`: grouped by guest type and id,
 * each group by {@link pruneMarks}. Volumes that are not backups, or not of `filter.vmid` /
 * `filter.type`, are left out. Pure. Throws `RangeError` for invalid counts or time zones.
 *
 * @example
 * ```ts
 * import { markBackups } from "./retention.ts";
 * const b = (t: number) => ({
 *   volid: `s:backup/100/qemu-${t}`, format: "directory", size: 0, used: 0, vmid: 100,
 *   content: "backup" as const, subtype: "qemu", ctime: t,
 * });
 * const marks = markBackups([b(1), b(2), b(3)], { "keep-last": 2 }, { timeZone: "UTC" });
 * console.assert(marks.map((d) => d.mark).join() === "keep,keep,remove");
 * ```
 */
export function markBackups(
  volumes: readonly VolumeInfo[],
  keep: KeepOptions,
  filter: { vmid?: number; type?: string; timeZone?: string } = {},
): RetentionDecision[] {
  const groups = new Map<string, VolumeInfo[]>();
  const renamed: RetentionDecision[] = [];
  for (const v of volumes) {
    if (v.content !== "backup") continue;
    if (filter.vmid !== undefined && v.vmid !== filter.vmid) continue;
    if (filter.type !== undefined && v.subtype !== filter.type) continue;
    const type = v.subtype ?? "unknown";
    if (v.vmid === undefined || v.subtype === undefined || !Number.isFinite(v.ctime)) {
      renamed.push({
        volid: v.volid,
        ...(v.vmid !== undefined ? { vmid: v.vmid } : {}),
        type,
        ctime: v.ctime,
        mark: v.protected ? "protected" : "renamed",
      });
      continue;
    }
    const key = `${type}/${v.vmid}`;
    const group = groups.get(key) ?? [];
    group.push(v);
    groups.set(key, group);
  }
  const out: RetentionDecision[] = [];
  const ordered = [...groups.values()].sort((a, b) =>
    a[0].vmid! - b[0].vmid! || a[0].subtype!.localeCompare(b[0].subtype!)
  );
  for (const group of ordered) {
    const byVolid = new Map(group.map((v) => [v.volid, v]));
    const marks = pruneMarks(
      group.map((v) => ({ id: v.volid, time: v.ctime, protected: v.protected === true })),
      keep,
      { timeZone: filter.timeZone },
    );
    for (const m of marks) {
      const v = byVolid.get(m.id)!;
      out.push({
        volid: v.volid,
        vmid: v.vmid,
        type: v.subtype!,
        ctime: v.ctime,
        mark: m.mark,
        ...(m.reason !== undefined ? { reason: m.reason } : {}),
      });
    }
  }
  return [...out, ...renamed.sort((a, b) => a.volid.localeCompare(b.volid))];
}

/**
 * Lists the backups of a storage (of one guest with `vmid`) and marks them: what a prune
 * would do, without doing it. `volt backup --prune` calls it with the guest just backed up.
 * Throws `VoltError` for a storage that holds no backups.
 */
export async function planPrune(
  handle: StorageHandle,
  options: RetentionOptions = {},
): Promise<PrunePlan> {
  const { storage, plugin } = handle;
  const content = (storage.options.content as string[] | undefined) ?? plugin.content.default;
  if (!content.includes("backup")) {
    throw new VoltError(
      `storage '${storage.id}' does not hold backups (content: ${content.join(",") || "none"})`,
    );
  }
  const { keep, source } = effectiveKeep(storage, options.keep);
  const volumes = await plugin.listVolumes(storage, { content: ["backup"], vmid: options.vmid });
  let decisions: RetentionDecision[];
  try {
    decisions = markBackups(volumes, keep, options);
  } catch (err) {
    const where = source === "storage" ? `storage '${storage.id}': prune-backups: ` : "";
    throw new VoltError(`${where}${(err as Error).message}`, { cause: err });
  }
  return { keep, keepSource: source, decisions };
}

/**
 * Prunes a storage: {@link planPrune}, then (without `dryRun`) removes every backup marked
 * `remove` through the plugin's `freeImage`, as the module documentation describes. Returns
 * the plan and what was removed; throws `VoltError` naming the backup whose removal failed.
 *
 * @example
 * ```ts ignore
 * import { runPrune } from "./retention.ts";
 * const { removed } = await runPrune(storages, "backup", { vmid: 100, keep: { "keep-last": 3 } });
 * ```
 */
export async function runPrune(
  storages: Storages,
  storageId: string,
  options: RunPruneOptions = {},
): Promise<PruneResult> {
  const handle = await storages.get(storageId);
  const plan = await planPrune(handle, options);
  const doomed = plan.decisions.filter((d) => d.mark === "remove");
  const spared = doomed.find((d) => options.mustKeep?.includes(d.volid));
  if (spared) {
    throw new VoltError(
      `prune would remove '${spared.volid}', which must be kept: nothing was removed`,
    );
  }
  const removed: string[] = [];
  if (options.dryRun) return { ...plan, removed };
  const { storage, plugin } = handle;
  const log = options.log ?? (() => {});
  for (const [i, d] of doomed.entries()) {
    if (options.signal?.aborted) {
      throw new VoltError(
        `prune interrupted by ${String(options.signal.reason)} after removing ` +
          `${removed.length} of ${doomed.length} backups; the others were not touched`,
      );
    }
    const { volname } = parseVolumeId(d.volid);
    try {
      if (await plugin.getVolumeAttribute?.(storage, volname, "protected") === true) {
        log("warn", `backup '${d.volid}' was protected after it was listed: kept`);
        d.mark = "protected";
        continue;
      }
      log("info", `removing backup '${d.volid}' (${i + 1} of ${doomed.length})`);
      await plugin.freeImage(storage, volname);
    } catch (err) {
      const before = removed.length > 0 ? `after removing ${removed.length}, ` : "";
      throw new VoltError(
        `prune stopped ${before}at '${d.volid}': ${errorLine(err)}`,
        { cause: err },
      );
    }
    removed.push(d.volid);
  }
  return { ...plan, removed };
}

/**
 * `keep` as storage.cfg writes it (`keep-daily=7,keep-last=3`), options in Proxmox's order.
 *
 * @example
 * ```ts
 * import { formatKeep } from "./retention.ts";
 * console.assert(formatKeep({ "keep-daily": 7, "keep-last": 3 }) === "keep-last=3,keep-daily=7");
 * ```
 */
export function formatKeep(keep: KeepOptions): string {
  return PRUNE_KEYS.filter((k) => keep[k] !== undefined)
    .map((k) => `${k}=${Number(keep[k])}`)
    .join(",");
}

/**
 * A backup time as local wall-clock time `YYYY-MM-DD HH:MM:SS` of `timeZone` (default: the
 * process's), the calendar the periods are counted in.
 *
 * @example
 * ```ts
 * import { formatLocalTime } from "./retention.ts";
 * console.assert(formatLocalTime(0, "UTC") === "1970-01-01 00:00:00");
 * ```
 */
export function formatLocalTime(epoch: number, timeZone?: string): string {
  const parts: Record<string, string> = {};
  const format = new Intl.DateTimeFormat("en-US", {
    timeZone,
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hourCycle: "h23",
  });
  for (const p of format.formatToParts(epoch * 1000)) parts[p.type] = p.value;
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second}`;
}
