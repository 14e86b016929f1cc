/**
 * qcow2 internal snapshots, for storages without `snapshot-as-volume-chain`: `qemu-img snapshot
 * -c/-a/-d` on the volume's file, under the volume's lock, after the same header checks as a
 * chain (a backing file outside the storage is refused). The list comes from `qemu-img info
 * --output=json` (the machine-readable form of `qemu-img snapshot -l`). Unlike a chain, any
 * snapshot can be rolled back to, and snapshots have no parent or child.
 *
 * @module
 */

import type { SnapshotInfo } from "../../plugins/api.ts";
import { VoltError } from "../errors.ts";
import { readChain, type SnapshotVolume, volumeFile, volumeWhat } from "./chain.ts";
import { assertSnapshotName } from "./names.ts";
import { imageInfo, internalSnapshot, type QemuInternalSnapshot } from "./qemu_img.ts";
import { withSnapshotLock } from "./volume_chain.ts";

async function snapshotsOf(vol: SnapshotVolume): Promise<QemuInternalSnapshot[]> {
  return (await readInfo(vol)).snapshots;
}

async function readInfo(
  vol: SnapshotVolume,
): Promise<{ snapshots: QemuInternalSnapshot[]; size: number }> {
  await readChain(vol); // Refuses unsafe backing files before qemu opens anything.
  const info = await imageInfo(volumeFile(vol, vol.volfile));
  const snapshots = (info.snapshots ?? []).slice().sort((a, b) => Number(a.id) - Number(b.id));
  return { snapshots, size: info["virtual-size"] };
}

async function assertExists(vol: SnapshotVolume, snap: string): Promise<void> {
  if (!(await snapshotsOf(vol)).some((s) => s.name === snap)) {
    throw new VoltError(`snapshot '${snap}' does not exist on ${volumeWhat(vol)}`);
  }
}

/** `qemu-img snapshot -c`. */
export function createInternalSnapshot(vol: SnapshotVolume, snap: string): Promise<void> {
  assertSnapshotName(snap);
  return withSnapshotLock(vol, async () => {
    if ((await snapshotsOf(vol)).some((s) => s.name === snap)) {
      throw new VoltError(`snapshot '${snap}' already exists on ${volumeWhat(vol)}`);
    }
    await internalSnapshot("create", volumeFile(vol, vol.volfile), snap);
  });
}

/** `qemu-img snapshot -a`: any snapshot may be applied. */
export function rollbackInternalSnapshot(vol: SnapshotVolume, snap: string): Promise<void> {
  assertSnapshotName(snap);
  return withSnapshotLock(vol, async () => {
    await assertExists(vol, snap);
    await internalSnapshot("apply", volumeFile(vol, vol.volfile), snap);
  });
}

/** `qemu-img snapshot -d`. */
export function deleteInternalSnapshot(vol: SnapshotVolume, snap: string): Promise<void> {
  assertSnapshotName(snap);
  return withSnapshotLock(vol, async () => {
    await assertExists(vol, snap);
    await internalSnapshot("delete", volumeFile(vol, vol.volfile), snap);
  });
}

/** The internal snapshots in creation order, then `current`. */
export async function listInternalSnapshots(vol: SnapshotVolume): Promise<SnapshotInfo[]> {
  const { snapshots: snaps, size } = await readInfo(vol);
  const path = volumeFile(vol, vol.volfile);
  const out: SnapshotInfo[] = snaps.map((s, i) => ({
    name: s.name,
    order: i + 1,
    file: path,
    volid: vol.volid,
    ctime: s["date-sec"],
  }));
  out.push({
    name: "current",
    order: snaps.length + 1,
    file: path,
    volid: vol.volid,
    size,
  });
  return out;
}
