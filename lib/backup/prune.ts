/**
 * Retention: which backups of one guest a `prune-backups` setting keeps and which it removes,
 * with exactly the semantics of Proxmox VE (`PVE::Storage::prune_mark_backup_group`):
 *
 * - Backups are looked at newest first.
 * - The options are applied in the order `keep-last`, `keep-hourly`, `keep-daily`,
 *   `keep-weekly` (ISO 8601 week of the ISO week-year), `keep-monthly`, `keep-yearly`. Periods
 *   are calendar periods in local time of a time zone (an hour that repeats when the clocks go
 *   back is one period).
 * - Each option skips backups that already have a mark and periods that already hold a backup
 *   kept by an earlier option; it keeps the newest backup of each new period until it has kept
 *   N of them, and marks the older backups of those periods for removal on the way.
 * - Whatever no option kept is removed.
 * - Protected backups are always kept and count towards no option: they neither use up a
 *   slot nor fill their period.
 * - No positive option at all, or `keep-all`, keeps everything.
 *
 * Pure: no I/O, no clock. The caller lists the backups and removes what is marked `remove`.
 *
 * @module
 */

import { PRUNE_KEYS } from "../config/options.ts";

/** One key of a `prune-backups` setting. */
export type PruneKey = typeof PRUNE_KEYS[number];

/**
 * A parsed `prune-backups` setting (what `parseOptionValue` returns for it): counts per
 * option, `keep-all` as `1`/`0` or a boolean. Absent or `0` means "not set".
 */
export type KeepOptions = { [K in PruneKey]?: K extends "keep-all" ? number | boolean : number };

/** One backup of a group (the same guest and type). */
export interface PruneCandidate {
  /** The caller's name for it (a volume id, a directory name). Not interpreted. */
  id: string;
  /** Creation time, seconds since the epoch. */
  time: number;
  /** Protected backups are always kept. */
  protected?: boolean;
}

/** What prune does with a backup. */
export type PruneMark = "keep" | "protected" | "remove";

/** A backup with its mark. */
export interface PruneDecision {
  id: string;
  time: number;
  mark: PruneMark;
  /**
   * For `keep`: the option that kept it. `keep-all` also when no option was set at all
   * (Proxmox treats that as keep-all).
   */
  reason?: PruneKey;
}

/** Options for {@link pruneMarks}. */
export interface PruneMarksOptions {
  /** IANA time zone whose local calendar defines the periods (default: the process's). */
  timeZone?: string;
}

/** The period options in the order Proxmox applies them, with their period key. */
const PERIODS: readonly [PruneKey, (t: LocalTime) => string][] = [
  ["keep-hourly", (t) => `${t.year}-${t.month}-${t.day} ${t.hour}`],
  ["keep-daily", (t) => `${t.year}-${t.month}-${t.day}`],
  ["keep-weekly", (t) => `${t.isoWeekYear}-W${t.isoWeek}`],
  ["keep-monthly", (t) => `${t.year}-${t.month}`],
  ["keep-yearly", (t) => `${t.year}`],
];

/**
 * Marks every backup of one group `keep` (with the option that kept it), `protected` or
 * `remove`, as Proxmox's prune does. Returns the backups newest first (backups with the same
 * time in their input order). Throws `RangeError` for a negative or fractional count, an
 * unknown option or an unknown time zone.
 *
 * @example
 * ```ts
 * import { pruneMarks } from "./prune.ts";
 * const day = 86400;
 * const marks = pruneMarks(
 *   [{ id: "a", time: 0 }, { id: "b", time: day }, { id: "c", time: day + 60 }],
 *   { "keep-daily": 1 },
 *   { timeZone: "UTC" },
 * );
 * console.assert(marks.map((m) => `${m.id}:${m.mark}`).join() === "c:keep,b:remove,a:remove");
 * ```
 */
export function pruneMarks(
  backups: readonly PruneCandidate[],
  keep: KeepOptions,
  options: PruneMarksOptions = {},
): PruneDecision[] {
  const counts = validKeep(keep);
  const list = backups.map((b) => ({ id: b.id, time: b.time, protected: b.protected === true }))
    .sort((a, b) => b.time - a.time);
  const marks: (PruneDecision | undefined)[] = list.map((b) =>
    b.protected ? { id: b.id, time: b.time, mark: "protected" } : undefined
  );

  const anyPositive = PRUNE_KEYS.some((k) => k !== "keep-all" && (counts[k] ?? 0) > 0);
  if (counts["keep-all"] || !anyPositive) {
    return list.map((b, i) =>
      marks[i] ?? { id: b.id, time: b.time, mark: "keep", reason: "keep-all" }
    );
  }

  const local = localTimes(list.map((b) => b.time), options.timeZone);
  markPass(list, marks, counts["keep-last"], "keep-last", (i) => String(list[i].time));
  for (const [key, period] of PERIODS) {
    markPass(list, marks, counts[key], key, (i) => period(local[i]));
  }
  return list.map((b, i) => marks[i] ?? { id: b.id, time: b.time, mark: "remove" });
}

/** One option's pass over the newest-first list (Proxmox's `$prune_mark`). */
function markPass(
  list: readonly { id: string; time: number }[],
  marks: (PruneDecision | undefined)[],
  count: number | undefined,
  reason: PruneKey,
  periodOf: (index: number) => string,
): void {
  if (!count) return;
  const alreadyKept = new Set<string>();
  for (let i = 0; i < list.length; i++) {
    if (marks[i]?.mark === "keep") alreadyKept.add(periodOf(i));
  }
  const newlyKept = new Set<string>();
  for (let i = 0; i < list.length; i++) {
    if (marks[i] !== undefined) continue;
    const period = periodOf(i);
    if (alreadyKept.has(period)) continue;
    const { id, time } = list[i];
    if (newlyKept.has(period)) {
      marks[i] = { id, time, mark: "remove" };
      continue;
    }
    if (newlyKept.size >= count) break;
    newlyKept.add(period);
    marks[i] = { id, time, mark: "keep", reason };
  }
}

/** The counts, checked: non-negative integers of known options. */
function validKeep(keep: KeepOptions): Partial<Record<PruneKey, number>> {
  const out: Partial<Record<PruneKey, number>> = {};
  for (const [key, value] of Object.entries(keep)) {
    if (!(PRUNE_KEYS as readonly string[]).includes(key)) {
      throw new RangeError(`unknown prune option '${key}': use ${PRUNE_KEYS.join(", ")}`);
    }
    if (value === undefined) continue;
    const n = typeof value === "boolean" ? Number(value) : value;
    if (typeof n !== "number" || !Number.isInteger(n) || n < 0) {
      throw new RangeError(`prune option '${key}' must be a non-negative integer, not ${value}`);
    }
    out[key as PruneKey] = n;
  }
  return out;
}

/** The calendar fields of an instant in local time. */
interface LocalTime {
  year: number;
  month: number;
  day: number;
  hour: number;
  isoWeekYear: number;
  isoWeek: number;
}

/** Local calendar fields of each epoch time in `timeZone`, through `Intl.DateTimeFormat`. */
function localTimes(times: readonly number[], timeZone?: string): LocalTime[] {
  let format: Intl.DateTimeFormat;
  try {
    format = new Intl.DateTimeFormat("en-US", {
      timeZone,
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      hourCycle: "h23",
    });
  } catch (err) {
    throw new RangeError(`unknown time zone '${timeZone}': use an IANA name like Europe/Vienna`, {
      cause: err,
    });
  }
  return times.map((time) => {
    if (!Number.isFinite(time)) throw new RangeError(`backup time ${time} is not a number`);
    const parts: Record<string, number> = {};
    for (const p of format.formatToParts(time * 1000)) {
      if (p.type !== "literal") parts[p.type] = Number(p.value);
    }
    const { year, month, day, hour } = parts;
    return { year, month, day, hour, ...isoWeek(year, month, day) };
  });
}

const DAY_MS = 86_400_000;

/** ISO 8601 week and week-year of a calendar date (`%V` and `%G` of strftime). */
function isoWeek(
  year: number,
  month: number,
  day: number,
): { isoWeekYear: number; isoWeek: number } {
  const date = Date.UTC(year, month - 1, day);
  const weekday = (new Date(date).getUTCDay() + 6) % 7; // Monday 0 … Sunday 6
  const thursday = date + (3 - weekday) * DAY_MS; // the week belongs to its Thursday's year
  const isoWeekYear = new Date(thursday).getUTCFullYear();
  const week = 1 + Math.floor((thursday - Date.UTC(isoWeekYear, 0, 1)) / (7 * DAY_MS));
  return { isoWeekYear, isoWeek: week };
}
