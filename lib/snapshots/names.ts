/**
 * Names in a volume chain: snapshot names, the snapshot files `snap-<snap>-<volfile>`, and the
 * temporary files and lock file that volt keeps beside a volume while it changes its chain.
 *
 * | file                                  | what it is                                         |
 * |---------------------------------------|----------------------------------------------------|
 * | `<volfile>`                           | the volume itself: always the top (`current`)      |
 * | `snap-<snap>-<volfile>`               | the frozen image of snapshot `<snap>`              |
 * | `.<volfile>.snapshot-<snap>.tmp`      | new overlay of an unfinished `volt snapshot`       |
 * | `.<volfile>.rollback-<snap>.tmp`      | new overlay of an unfinished `volt rollback`       |
 * | `.<volfile>.delete-<snap>.tmp`        | hard link marking an unfinished `volt delsnapshot` |
 * | `.<volfile>.lock`                     | the volume's lock                                  |
 *
 * Snapshot names cannot contain a dot, so a temporary name never parses two ways.
 *
 * @module
 */

import { VoltError } from "../errors.ts";

/** Longest snapshot name (Proxmox's limit). */
export const MAX_SNAPSHOT_NAME = 40;

/** Names that cannot be snapshots: `current` is the volume itself, `pending` is Proxmox's. */
export const RESERVED_SNAPSHOT_NAMES: readonly string[] = ["current", "pending"];

const SNAPSHOT_NAME = /^[A-Za-z][A-Za-z0-9_-]*$/;

/** Is `name` a valid snapshot name? */
export function isSnapshotName(name: string): boolean {
  return SNAPSHOT_NAME.test(name) && name.length <= MAX_SNAPSHOT_NAME &&
    !RESERVED_SNAPSHOT_NAMES.includes(name);
}

/**
 * Throws {@link VoltError} unless `name` is a valid snapshot name: `[A-Za-z][A-Za-z0-9_-]*`,
 * at most 40 characters, not `current` or `pending`.
 *
 * @example
 * ```ts
 * import { assertSnapshotName } from "./names.ts";
 * assertSnapshotName("before-upgrade");
 * ```
 */
export function assertSnapshotName(name: string): void {
  if (RESERVED_SNAPSHOT_NAMES.includes(name)) {
    throw new VoltError(`snapshot name '${name}' is reserved`);
  }
  if (!SNAPSHOT_NAME.test(name) || name.length > MAX_SNAPSHOT_NAME) {
    throw new VoltError(
      `invalid snapshot name '${JSON.stringify(name).slice(1, -1)}': use a letter, then ` +
        `letters, digits, '_' or '-', at most ${MAX_SNAPSHOT_NAME} characters`,
    );
  }
}

/**
 * The file name of snapshot `snap` of the volume file `volfile`.
 *
 * @example
 * ```ts
 * import { snapFileName } from "./names.ts";
 * console.assert(snapFileName("vm-100-disk-0.qcow2", "s1") === "snap-s1-vm-100-disk-0.qcow2");
 * ```
 */
export function snapFileName(volfile: string, snap: string): string {
  return `snap-${snap}-${volfile}`;
}

/**
 * The snapshot name in a file name of volume `volfile`: `current` for the volume's own file,
 * the snapshot for `snap-<snap>-<volfile>`, undefined for anything else.
 *
 * @example
 * ```ts
 * import { snapNameOfFile } from "./names.ts";
 * console.assert(snapNameOfFile("vm-1-disk-0.qcow2", "snap-a-b-vm-1-disk-0.qcow2") === "a-b");
 * console.assert(snapNameOfFile("vm-1-disk-0.qcow2", "vm-1-disk-1.qcow2") === undefined);
 * ```
 */
export function snapNameOfFile(volfile: string, file: string): string | undefined {
  if (file === volfile) return "current";
  const suffix = `-${volfile}`;
  if (!file.startsWith("snap-") || !file.endsWith(suffix)) return undefined;
  const snap = file.slice(5, file.length - suffix.length);
  return isSnapshotName(snap) ? snap : undefined;
}

/** The operations that leave temporary files while they run. */
export type ChainOperation = "snapshot" | "rollback" | "delete";

/** The temporary file of `op` on snapshot `snap` of volume `volfile`. */
export function tempFileName(volfile: string, op: ChainOperation, snap: string): string {
  return `.${volfile}.${op}-${snap}.tmp`;
}

/**
 * Parses a temporary file name of volume `volfile`; undefined when it is not one.
 *
 * @example
 * ```ts
 * import { parseTempFileName } from "./names.ts";
 * const t = parseTempFileName("vm-1-disk-0.qcow2", ".vm-1-disk-0.qcow2.delete-s1.tmp");
 * console.assert(t?.op === "delete" && t.snap === "s1");
 * ```
 */
export function parseTempFileName(
  volfile: string,
  file: string,
): { op: ChainOperation; snap: string } | undefined {
  const prefix = `.${volfile}.`;
  if (!file.startsWith(prefix)) return undefined;
  const m = /^(snapshot|rollback|delete)-([A-Za-z][A-Za-z0-9_-]*)\.tmp$/.exec(
    file.slice(prefix.length),
  );
  if (!m || !isSnapshotName(m[2])) return undefined;
  return { op: m[1] as ChainOperation, snap: m[2] };
}

/** The lock file of volume `volfile` (beside it). */
export function lockFileName(volfile: string): string {
  return `.${volfile}.lock`;
}
