/**
 * The snapshot operations of a qcow2 volume on a directory-like storage, whichever way the
 * storage keeps snapshots: as volume chains (`volume_chain.ts`) when `snapshot-as-volume-chain`
 * is set, else as qcow2 internal snapshots (`internal.ts`). A storage plugin builds a
 * {@link SnapshotVolume} and calls these; `volt check` works for both.
 *
 * @module
 */

import type { SnapshotInfo, VolumeCheckReport } from "../../plugins/api.ts";
import { VoltError } from "../errors.ts";
import {
  type Chain,
  ChainError,
  readChain,
  scanDirectory,
  type SnapshotVolume,
  volumeFile,
  volumeWhat,
} from "./chain.ts";
import { type CheckOptions, checkVolume } from "./check.ts";
import { removeFile, syncDir } from "./fs_steps.ts";
import {
  createInternalSnapshot,
  deleteInternalSnapshot,
  listInternalSnapshots,
  rollbackInternalSnapshot,
} from "./internal.ts";
import {
  createChainSnapshot,
  deleteChainSnapshot,
  listChainSnapshots,
  rollbackChainSnapshot,
  withSnapshotLock,
} from "./volume_chain.ts";

export type { SnapshotVolume } from "./chain.ts";

function assertQcow2(vol: SnapshotVolume): void {
  if (vol.format !== "qcow2") {
    throw new VoltError(
      `${volumeWhat(vol)} is a ${vol.format} image: snapshots need qcow2`,
    );
  }
}

/**
 * Takes snapshot `snap` of the volume (offline: no VM may be using it).
 *
 * @example
 * ```ts ignore
 * import { createSnapshot } from "./volume_snapshots.ts";
 * await createSnapshot({
 *   volid: "local:100/vm-100-disk-0.qcow2", storeid: "local", root: "/var/lib/vz",
 *   dir: "/var/lib/vz/images/100", volfile: "vm-100-disk-0.qcow2", format: "qcow2",
 *   chain: true,
 * }, "before-upgrade");
 * ```
 */
export function createSnapshot(vol: SnapshotVolume, snap: string): Promise<void> {
  assertQcow2(vol);
  return vol.chain ? createChainSnapshot(vol, snap) : createInternalSnapshot(vol, snap);
}

/** Rolls the volume back to `snap` (for a chain: only the most recent snapshot). */
export function rollbackSnapshot(vol: SnapshotVolume, snap: string): Promise<void> {
  assertQcow2(vol);
  return vol.chain ? rollbackChainSnapshot(vol, snap) : rollbackInternalSnapshot(vol, snap);
}

/** Deletes snapshot `snap`; the volume and the other snapshots read as before. */
export function deleteSnapshot(vol: SnapshotVolume, snap: string): Promise<void> {
  assertQcow2(vol);
  return vol.chain ? deleteChainSnapshot(vol, snap) : deleteInternalSnapshot(vol, snap);
}

/** The snapshots, oldest first, then `current`. */
export function listSnapshots(vol: SnapshotVolume): Promise<SnapshotInfo[]> {
  assertQcow2(vol);
  return vol.chain ? listChainSnapshots(vol) : listInternalSnapshots(vol);
}

/** Checks (and repairs) the volume; a volume that is not qcow2 has nothing to check here. */
export async function checkSnapshotVolume(
  vol: SnapshotVolume,
  options: CheckOptions = {},
): Promise<VolumeCheckReport> {
  if (vol.format !== "qcow2") {
    try {
      await Deno.stat(volumeFile(vol, vol.volfile));
    } catch {
      throw new VoltError(`${volumeWhat(vol)} does not exist`);
    }
    return { volid: vol.volid, ok: true, problems: [] };
  }
  return await checkVolume(vol, options);
}

/**
 * Removes a qcow2 volume under its lock. For a chain: the volume's file first (so that it is
 * gone at once), then its snapshot files, volt's temporary files and the lock file; an unsafe
 * chain (a backing file outside the storage…) is refused, a broken one (a file missing or not
 * qcow2) is freed by name, and files of the chain that are not this volume's snapshots are
 * left alone. Without chains:
 * the file and the lock file. Returns the file names removed.
 */
export function freeSnapshotVolume(vol: SnapshotVolume): Promise<string[]> {
  return withSnapshotLock(vol, async (lock) => {
    const paths = [volumeFile(vol, vol.volfile)];
    if (vol.chain) {
      let chain: Chain | undefined;
      try {
        chain = await readChain(vol);
      } catch (err) {
        // A broken or corrupt volume can still be freed; an unsafe chain is not touched.
        if (!(err instanceof ChainError && err.kind === "broken")) throw err;
      }
      const { temps, strays } = await scanDirectory(vol, chain);
      const ours = (chain?.files ?? []).filter((f) =>
        f.snap !== undefined && f.snap !== "current" &&
        f.path.slice(0, f.path.lastIndexOf("/")) === vol.dir
      );
      paths.push(
        ...ours.map((f) => f.path),
        ...temps.map((t) => t.path),
        ...strays.map((s) => s.path),
      );
    }
    const removed: string[] = [];
    for (const p of paths) {
      await removeFile(p);
      removed.push(p.slice(p.lastIndexOf("/") + 1));
      if (removed.length === 1) await syncDir(vol.dir);
    }
    await lock.discard();
    await syncDir(vol.dir);
    return removed;
  });
}
