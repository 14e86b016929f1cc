/**
 * Snapshots as volume chains (qcow2 "external" snapshots), done so that no step can lose the
 * disk. A volume `V` (`images/<vmid>/<volfile>`) is always the top of its chain and always a
 * complete, usable image; snapshot `s` is the frozen file `S(s)` = `snap-<s>-<volfile>`, each
 * overlay backed by the next older file through a relative name. Nothing but the files records
 * the chain: the order comes from the backing links, a snapshot's creation time is the
 * modification time of its file (set when it is taken and kept through every rewrite).
 *
 * Every operation holds the volume's lock (`volume_lock.ts`), refuses a chain that
 * `readChain` refuses (a backing file outside the storage, a protocol name, a loop…) and
 * refuses to start while an earlier operation is unfinished. Each step below is followed by an
 * `fsync` (of the file qemu wrote, or of the directory after a link, rename or unlink), so a
 * crash leaves exactly one of the listed states, and `volt check` (`check.ts`) recognises it by
 * the files alone: a temporary file `.<volfile>.<op>-<s>.tmp` names the operation, and a
 * hard link shows which name is new.
 *
 * ## Create snapshot `s` (upstream renames V first and has no disk until the overlay exists)
 *
 * ```text
 * C0 chain …→V                      link V as S(s)              → C1
 * C1 S(s)≡V (same inode)            qemu-img create T=.V.snapshot-s.tmp -b S(s)  → C2
 * C2 T exists, backed by S(s)       rename T over V             → C3
 * C3 …→S(s)→V(new overlay)          set S(s)'s mtime (created)  done
 * ```
 * A failure in C1/C2 removes T and the link S(s): V is untouched. After a crash, check sees T
 * (C2: remove it) and S(s) as a hard link of V outside the chain (C1: remove the link).
 *
 * ## Roll back to `s` (only the most recent snapshot: V must be backed by S(s))
 *
 * ```text
 * R0 …→S(s)→V                       qemu-img create T=.V.rollback-s.tmp -b S(s)  → R1
 * R1 T exists                       rename T over V (the only step that drops data) → done
 * ```
 * Upstream unlinks V before creating the new one; here the old V stays until the rename
 * replaces it atomically. A failure or crash in R1 leaves V as it was; check removes T.
 *
 * ## Delete `s` (child C is the file above S(s), parent P the one below)
 *
 * ```text
 * D0 P→S(s)→C  or  S(s)→C            link S(s) as M=.V.delete-s.tmp (intent)  → D1
 * with a parent (rebase path):
 * D1 M≡S(s)                          qemu-img rebase -F qcow2 -b P C           → D2
 * D2 C backed by P, S(s) unused      unlink S(s)                                → D3
 * D3 only M left                     unlink M                                   done
 * without a parent (commit path):
 * D1 M≡S(s)                          qemu-img resize M (if C is larger)         → D1
 * D1                                 qemu-img commit -d C (into S(s)≡M)         → D2
 * D2 M holds C's content             rename M over C (same content, no backing) → D3
 * D3 S(s)≡C, outside the chain       unlink S(s)                                done
 * ```
 * `qemu-img rebase` writes the new backing name last, so C reads the same whether it ran or
 * not; `qemu-img commit -d` only writes S(s), and leaves C whole, so running it again is
 * harmless. A failure before anything was merged (rebase failed with C still on S(s), or the
 * resize failed) removes M and the snapshot stays. A failure once the commit started leaves M
 * in place: the current image reads as before, snapshot `s` can no longer be trusted, and
 * `volt check --repair` finishes the deletion from whichever state it finds (re-running the
 * rebase or commit is idempotent).
 *
 * Files in the chain that are not volt snapshots of this volume are shown by `volt check` and
 * never touched: rollback and delete refuse such a chain.
 *
 * @module
 */

import type { SnapshotInfo } from "../../plugins/api.ts";
import { errorLine, VoltError } from "../errors.ts";
import { readQcow2Header } from "../qcow2/header.ts";
import {
  type Chain,
  type ChainFile,
  chainSnapshots,
  readChain,
  sameFile,
  scanVolume,
  type SnapshotVolume,
  volumeFile,
  type VolumeScan,
  volumeWhat,
} from "./chain.ts";
import {
  hardLink,
  lstatOrUndefined,
  removeFile,
  restoreTimes,
  syncDir,
  syncFile,
} from "./fs_steps.ts";
import { assertSnapshotName, lockFileName, snapFileName, tempFileName } from "./names.ts";
import {
  backingChainInfo,
  commitImage,
  createOverlay,
  rebaseImage,
  resizeImage,
} from "./qemu_img.ts";
import { type VolumeLock, withVolumeLock } from "./volume_lock.ts";

/**
 * Runs `fn` holding the volume's lock. A volume that does not exist (or was freed while this
 * waited) is refused without leaving a lock file behind.
 */
export async function withSnapshotLock<T>(
  vol: SnapshotVolume,
  fn: (lock: VolumeLock) => Promise<T>,
): Promise<T> {
  const path = volumeFile(vol, vol.volfile);
  const missing = () => new VoltError(`${volumeWhat(vol)} does not exist`);
  if (!(await lstatOrUndefined(path))) throw missing();
  return await withVolumeLock(
    volumeFile(vol, lockFileName(vol.volfile)),
    volumeWhat(vol),
    async (lock) => {
      if (!(await lstatOrUndefined(path))) {
        await lock.discard();
        throw missing();
      }
      return await fn(lock);
    },
  );
}

const OPERATION_WORDS = { snapshot: "snapshot", rollback: "rollback to", delete: "deletion of" };

/**
 * Refuses to start while an earlier operation is unfinished (a temporary file, or a leftover
 * hard link of a chain file): `volt check --repair` must resolve it first.
 */
export function assertNoUnfinished(vol: SnapshotVolume, scan: VolumeScan): void {
  const t = scan.temps[0];
  if (t) {
    throw new VoltError(
      `${volumeWhat(vol)} has an unfinished ${OPERATION_WORDS[t.op]} snapshot '${t.snap}' ` +
        `('${t.file}'): run 'volt check --repair ${vol.volid}' first`,
    );
  }
  const link = scan.strays.find((s) => s.linkOf);
  if (link) {
    throw new VoltError(
      `${volumeWhat(vol)}: '${link.file}' is a leftover link of an unfinished operation: ` +
        `run 'volt check --repair ${vol.volid}' first`,
    );
  }
}

/** Refuses a chain holding files that are not volt snapshots of this volume. */
function assertOnlyOurFiles(vol: SnapshotVolume, chain: Chain): void {
  const foreign = chain.files.find((f) => f.snap === undefined);
  if (foreign) {
    throw new VoltError(
      `${volumeWhat(vol)}: '${foreign.file}' in the backing chain is not a snapshot of this ` +
        "volume: refusing to change the chain (see 'volt check')",
    );
  }
}

function findSnapshot(vol: SnapshotVolume, chain: Chain, snap: string): number {
  const i = chain.files.findIndex((f) => f.snap === snap);
  if (i < 0) throw new VoltError(`snapshot '${snap}' does not exist on ${volumeWhat(vol)}`);
  return i;
}

/** Takes snapshot `snap`: the current file becomes `S(snap)`, a new overlay becomes current. */
export function createChainSnapshot(vol: SnapshotVolume, snap: string): Promise<void> {
  assertSnapshotName(snap);
  const what = volumeWhat(vol);
  return withSnapshotLock(vol, async () => {
    const scan = await scanVolume(vol);
    assertNoUnfinished(vol, scan);
    const top = scan.chain.files[0];
    const snapFile = snapFileName(vol.volfile, snap);
    const snapPath = volumeFile(vol, snapFile);
    if (scan.chain.files.some((f) => f.snap === snap) || await lstatOrUndefined(snapPath)) {
      throw new VoltError(`snapshot '${snap}' already exists on ${what}`);
    }
    const tmp = volumeFile(vol, tempFileName(vol.volfile, "snapshot", snap));
    try {
      await hardLink(top.path, snapPath); // C0 → C1
      await syncDir(vol.dir);
    } catch (err) {
      throw new VoltError(`snapshot '${snap}' of ${what} failed: ${errorLine(err)}`);
    }
    let replaced = false;
    try {
      await createOverlay(tmp, snapFile, top.size, vol.preallocation); // C1 → C2
      await Deno.chmod(tmp, (top.stat.mode ?? 0o600) & 0o7777);
      await syncFile(tmp);
      await Deno.rename(tmp, top.path); // C2 → C3
      replaced = true;
      await syncDir(vol.dir);
    } catch (err) {
      if (!replaced) {
        await removeFile(tmp).catch(() => {});
        await removeFile(snapPath).catch(() => {});
        await syncDir(vol.dir).catch(() => {});
        throw new VoltError(
          `snapshot '${snap}' of ${what} failed: ${errorLine(err)}; the volume is unchanged`,
        );
      }
      throw new VoltError(`snapshot '${snap}' of ${what}: ${errorLine(err)}`);
    }
    const now = new Date();
    await Deno.utime(snapPath, now, now).catch(() => {});
  });
}

/** Rolls the volume back to `snap`, which must be its most recent snapshot. */
export function rollbackChainSnapshot(vol: SnapshotVolume, snap: string): Promise<void> {
  assertSnapshotName(snap);
  const what = volumeWhat(vol);
  return withSnapshotLock(vol, async () => {
    const scan = await scanVolume(vol);
    assertNoUnfinished(vol, scan);
    const { files } = scan.chain;
    const i = findSnapshot(vol, scan.chain, snap);
    const newer = files.slice(1, i).map((f) => f.snap ?? f.file);
    if (newer.length > 0) {
      throw new VoltError(
        `can't rollback to snapshot '${snap}' of ${what}: it is not the most recent snapshot; ` +
          `newer: ${newer.reverse().join(", ")} (delete them first)`,
      );
    }
    const top = files[0];
    const target = files[i];
    const tmp = volumeFile(vol, tempFileName(vol.volfile, "rollback", snap));
    let replaced = false;
    try {
      await createOverlay(tmp, target.file, target.size, vol.preallocation); // R0 → R1
      await Deno.chmod(tmp, (top.stat.mode ?? 0o600) & 0o7777);
      await syncFile(tmp);
      await Deno.rename(tmp, top.path); // R1 → done
      replaced = true;
      await syncDir(vol.dir);
    } catch (err) {
      if (!replaced) {
        await removeFile(tmp).catch(() => {});
        throw new VoltError(
          `rollback of ${what} to snapshot '${snap}' failed: ${
            errorLine(err)
          }; the volume is unchanged`,
        );
      }
      throw new VoltError(`rollback of ${what} to snapshot '${snap}': ${errorLine(err)}`);
    }
  });
}

/** Deletes snapshot `snap`, merging its data into the file above it. */
export function deleteChainSnapshot(vol: SnapshotVolume, snap: string): Promise<void> {
  assertSnapshotName(snap);
  const what = volumeWhat(vol);
  return withSnapshotLock(vol, async () => {
    const scan = await scanVolume(vol);
    assertNoUnfinished(vol, scan);
    assertOnlyOurFiles(vol, scan.chain);
    const target = scan.chain.files[findSnapshot(vol, scan.chain, snap)];
    const marker = volumeFile(vol, tempFileName(vol.volfile, "delete", snap));
    try {
      await hardLink(target.path, marker); // D0 → D1
      await syncDir(vol.dir);
    } catch (err) {
      throw new VoltError(`deleting snapshot '${snap}' of ${what} failed: ${errorLine(err)}`);
    }
    await finishDelete(vol, snap);
  });
}

/**
 * Carries a deletion of `snap` on from whatever state it is in (D1, D2 or D3 above); the
 * marker `.<volfile>.delete-<snap>.tmp` must exist. Called with the volume's lock held, by
 * {@link deleteChainSnapshot} and by `volt check --repair`.
 */
export async function finishDelete(vol: SnapshotVolume, snap: string): Promise<void> {
  const what = volumeWhat(vol);
  const markerFile = tempFileName(vol.volfile, "delete", snap);
  const marker = volumeFile(vol, markerFile);
  const snapPath = volumeFile(vol, snapFileName(vol.volfile, snap));
  const markerStat = await Deno.lstat(marker);
  const chain = await readChain(vol);
  const i = chain.files.findIndex((f) => f.snap === snap);
  if (i < 0) {
    // D2/D3 of the rebase path: nothing references S(snap) any more.
    const s = await lstatOrUndefined(snapPath);
    if (s) {
      if (!sameFile(s, markerStat)) {
        throw new VoltError(
          `${what}: '${markerFile}' is not a link of '${snapFileName(vol.volfile, snap)}': ` +
            "check both files and remove the wrong one by hand",
        );
      }
      await Deno.remove(snapPath);
      await syncDir(vol.dir);
    }
    await Deno.remove(marker);
    await syncDir(vol.dir);
    return;
  }
  const target = chain.files[i];
  if (!sameFile(target.stat, markerStat)) {
    throw new VoltError(
      `${what}: '${markerFile}' is not a link of '${target.file}': check both files and ` +
        "remove the wrong one by hand",
    );
  }
  assertOnlyOurFiles(vol, chain);
  const child = chain.files[i - 1];
  const parent: ChainFile | undefined = chain.files[i + 1];
  if (parent) await rebasePath(vol, snap, target, child, parent, marker);
  else await commitPath(vol, snap, target, child, marker, snapPath);
}

async function rebasePath(
  vol: SnapshotVolume,
  snap: string,
  target: ChainFile,
  child: ChainFile,
  parent: ChainFile,
  marker: string,
): Promise<void> {
  const what = volumeWhat(vol);
  try {
    await rebaseImage(child.path, parent.file); // D1 → D2
  } catch (err) {
    const now = (await readQcow2Header(child.path).catch(() => undefined))?.backingFile;
    if (now === target.file) {
      await removeFile(marker);
      await syncDir(vol.dir);
      throw new VoltError(
        `deleting snapshot '${snap}' of ${what} failed: ${errorLine(err)}; ` +
          "the snapshot and the volume are unchanged",
      );
    }
    if (now !== parent.file) {
      throw new VoltError(
        `deleting snapshot '${snap}' of ${what} failed: ${errorLine(err)}; ` +
          `run 'volt check ${vol.volid}'`,
      );
    }
    // The new backing name was written: the rebase is complete.
  }
  await syncFile(child.path);
  if (child.snap !== "current") await restoreTimes(child.path, child.stat);
  await Deno.remove(target.path); // D2 → D3
  await syncDir(vol.dir);
  await Deno.remove(marker); // D3 → done
  await syncDir(vol.dir);
}

async function commitPath(
  vol: SnapshotVolume,
  snap: string,
  target: ChainFile,
  child: ChainFile,
  marker: string,
  snapPath: string,
): Promise<void> {
  const what = volumeWhat(vol);
  if (child.size > target.size) {
    try {
      await resizeImage(marker, child.size);
    } catch (err) {
      // Nothing merged yet (a needed resize means no commit ever ran): give up cleanly.
      await removeFile(marker);
      await syncDir(vol.dir);
      throw new VoltError(
        `deleting snapshot '${snap}' of ${what} failed: ${errorLine(err)}; ` +
          "the snapshot and the volume are unchanged",
      );
    }
  }
  try {
    await commitImage(child.path); // D1 → D2
    if (child.size < target.size) await resizeImage(marker, child.size, true);
    await syncFile(marker);
  } catch (err) {
    throw new VoltError(
      `deleting snapshot '${snap}' of ${what} failed while merging '${child.file}' into it: ` +
        `${
          errorLine(err)
        }; the current image is intact but snapshot '${snap}' can no longer be used: ` +
        `run 'volt check --repair ${vol.volid}' to finish deleting it`,
    );
  }
  await Deno.chmod(marker, (child.stat.mode ?? 0o600) & 0o7777);
  await restoreTimes(marker, child.stat);
  await Deno.rename(marker, child.path); // D2 → D3
  await syncDir(vol.dir);
  await Deno.remove(snapPath); // D3 → done
  await syncDir(vol.dir);
}

/**
 * The snapshots of a chain volume, oldest first, then `current`. Sizes come from
 * `qemu-img info --backing-chain` (run only after every link was checked); a chain that qemu
 * sees differently is refused.
 */
export async function listChainSnapshots(vol: SnapshotVolume): Promise<SnapshotInfo[]> {
  const chain = await readChain(vol);
  const sizes = await qemuSizes(vol, chain);
  const volnameDir = vol.volid.slice(vol.storeid.length + 1, vol.volid.lastIndexOf("/"));
  const out: SnapshotInfo[] = [];
  const files = chain.files;
  let order = 0;
  for (let i = files.length - 1; i >= 0; i--) {
    const f = files[i];
    if (f.snap === undefined) continue;
    out.push({
      name: f.snap,
      order: ++order,
      file: f.path,
      volid: `${vol.storeid}:${volnameDir}/${f.file}`,
      parent: files[i + 1]?.snap,
      child: files[i - 1]?.snap,
      size: sizes[i],
      ctime: f.snap === "current" || !f.stat.mtime
        ? undefined
        : Math.floor(f.stat.mtime.getTime() / 1000),
    });
  }
  return out;
}

/** Virtual sizes as qemu reports them; throws when qemu's chain differs from ours. */
async function qemuSizes(vol: SnapshotVolume, chain: Chain): Promise<number[]> {
  const info = await backingChainInfo(chain.files[0].path);
  const names = info.map((x) => x.filename.slice(x.filename.lastIndexOf("/") + 1));
  const ours = chain.files.map((f) => f.path.slice(f.path.lastIndexOf("/") + 1));
  if (names.join("\n") !== ours.join("\n")) {
    throw new VoltError(
      `${volumeWhat(vol)}: qemu-img sees the chain ${names.join(" → ")}, volt reads ${
        ours.join(" → ")
      }: run 'volt check ${vol.volid}'`,
    );
  }
  return info.map((x) => x["virtual-size"]);
}

/** The volt snapshot names of the chain, oldest first. */
export async function chainSnapshotNames(vol: SnapshotVolume): Promise<string[]> {
  return chainSnapshots(await readChain(vol)).map((f) => f.snap!);
}
