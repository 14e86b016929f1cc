/**
 * `volt check`: what state a volume's chain is in, and `--repair` to bring an interrupted
 * operation to an end. The states and which way each is resolved follow the state machines in
 * `volume_chain.ts`:
 *
 * | found                                         | meaning                          | repair                    |
 * |-----------------------------------------------|----------------------------------|---------------------------|
 * | `.<volfile>.snapshot-<s>.tmp`                 | snapshot interrupted (C2)        | remove it (not taken)     |
 * | `.<volfile>.rollback-<s>.tmp`                 | rollback interrupted (R1)        | remove it (not rolled back) |
 * | `.<volfile>.delete-<s>.tmp`                   | deletion interrupted (D1–D3)     | finish the deletion       |
 * | `snap-<s>-<volfile>` hard link of a chain file, outside the chain | C1 or commit-path D3 | remove the link (data stays) |
 * | `snap-<s>-<volfile>` outside the chain        | not volt's doing                 | reported only             |
 * | a chain file that is not a volt snapshot      | foreign backing file             | reported only             |
 * | leaked clusters (`qemu-img check`)            | a qemu-img run was cut short     | `qemu-img check -r leaks` |
 * | corruptions, unsafe or broken chain           | —                                | reported only             |
 *
 * A rollback or snapshot that was cut short is undone rather than completed: the user saw it
 * fail, and undoing it loses nothing. A deletion is completed: once merging started, the
 * snapshot's file can no longer be trusted.
 *
 * @module
 */

import type { VolumeCheckProblem, VolumeCheckReport } from "../../plugins/api.ts";
import { errorLine } from "../errors.ts";
import { readQcow2Header } from "../qcow2/header.ts";
import {
  ChainError,
  type ChainFile,
  readChain,
  scanDirectory,
  type SnapshotVolume,
} from "./chain.ts";
import { lstatOrUndefined, removeFile, restoreTimes, syncDir } from "./fs_steps.ts";
import { backingChainInfo, checkImage } from "./qemu_img.ts";
import { finishDelete, withSnapshotLock } from "./volume_chain.ts";

/** Options of {@link checkVolume}. */
export interface CheckOptions {
  /** Resolve what can be resolved (see the table above). */
  repair?: boolean;
}

interface Found extends VolumeCheckProblem {
  fix?: () => Promise<void>;
}

/**
 * Checks (and with `repair`, repairs) a qcow2 volume: its chain, volt's leftovers beside it
 * and `qemu-img check` of every file. Holds the volume's lock.
 */
export function checkVolume(
  vol: SnapshotVolume,
  options: CheckOptions = {},
): Promise<VolumeCheckReport> {
  return withSnapshotLock(vol, async () => {
    const problems: VolumeCheckProblem[] = [];
    let d = await diagnose(vol);
    const done = new Set<string>();
    for (let round = 0; options.repair && round < 50; round++) {
      const next = d.problems.find((p) => p.fix);
      if (!next) break;
      const key = `${next.code}:${next.file ?? ""}`;
      if (done.has(key)) {
        next.repaired = false;
        next.repairError = "it came back after being repaired";
        break;
      }
      try {
        await next.fix!();
      } catch (err) {
        next.repaired = false;
        next.repairError = errorLine(err);
        break;
      }
      next.repaired = true;
      done.add(key);
      problems.push(strip(next));
      d = await diagnose(vol);
    }
    const remaining = d.problems;
    const chain = d.chain;
    const pending = remaining.some((p) => p.fix);
    if (chain && !pending) remaining.push(...await checkImages(chain, !!options.repair));
    for (const p of remaining) {
      if (options.repair && p.repaired === undefined && p.repair) p.repaired = false;
      problems.push(strip(p));
    }
    const ok = !problems.some((p) => p.severity === "error" && p.repaired !== true);
    return { volid: vol.volid, ok, problems };
  });
}

function strip(p: Found): VolumeCheckProblem {
  const { fix: _fix, ...rest } = p;
  return rest;
}

/** The structural state: chain, temporary files, stray snapshot files. */
async function diagnose(
  vol: SnapshotVolume,
): Promise<{ chain?: ChainFile[]; problems: Found[] }> {
  const problems: Found[] = [];
  let chain;
  try {
    chain = await readChain(vol);
  } catch (err) {
    const { temps } = await scanDirectory(vol, undefined).catch(() => ({ temps: [] }));
    const code = err instanceof ChainError ? `${err.kind}-chain` : "bad-chain";
    problems.push({ severity: "error", code, message: errorLine(err) });
    for (const t of temps) {
      problems.push({
        severity: "error",
        code: `unfinished-${t.op}`,
        file: t.file,
        message: `unfinished ${t.op} of snapshot '${t.snap}' ('${t.file}'); not repaired ` +
          "while the chain itself is unreadable",
      });
    }
    return { problems };
  }
  const { temps, strays } = await scanDirectory(vol, chain);
  for (const t of temps) {
    if (t.op === "delete") {
      problems.push({
        severity: "error",
        code: "unfinished-delete",
        file: t.file,
        message: `deletion of snapshot '${t.snap}' was interrupted ('${t.file}' is left)`,
        repair: `finish deleting snapshot '${t.snap}'`,
        fix: () => finishDelete(vol, t.snap),
      });
    } else {
      const word = t.op === "snapshot" ? `snapshot '${t.snap}'` : `rollback to '${t.snap}'`;
      problems.push({
        severity: "error",
        code: `unfinished-${t.op}`,
        file: t.file,
        message: `${word} was interrupted ('${t.file}' is left); the current image is intact`,
        repair: `remove '${t.file}' (the ${t.op} did not happen)`,
        fix: async () => {
          await removeFile(t.path);
          await syncDir(vol.dir);
        },
      });
    }
  }
  const deleting = temps.filter((t) => t.op === "delete");
  for (const s of strays) {
    if (deleting.some((t) => t.snap === s.snap)) continue; // Part of that deletion.
    if (s.linkOf) {
      problems.push({
        severity: "error",
        code: "leftover-link",
        file: s.file,
        message: `'${s.file}' is a leftover hard link of '${s.linkOf.file}' from an ` +
          "interrupted snapshot or deletion",
        repair: `remove the link '${s.file}' (the data stays in '${s.linkOf.file}')`,
        fix: async () => {
          const now = await lstatOrUndefined(s.path);
          if (now && now.ino === s.stat.ino) {
            await Deno.remove(s.path);
            await syncDir(vol.dir);
          }
        },
      });
    } else {
      problems.push({
        severity: "warning",
        code: "stray-snapshot-file",
        file: s.file,
        message: `'${s.file}' looks like a snapshot of this volume but is not in its chain: ` +
          "left alone (remove it by hand if it is not needed)",
      });
    }
  }
  for (const f of chain.files) {
    if (f.snap === undefined) {
      problems.push({
        severity: "warning",
        code: "foreign-file",
        file: f.file,
        message: `'${f.file}' in the backing chain is not a volt snapshot of this volume: ` +
          "left alone; rollback and delete refuse this chain",
      });
    }
  }
  if (vol.chain) {
    const h = await readQcow2Header(chain.files[0].path);
    if (h.snapshots > 0) {
      problems.push({
        severity: "warning",
        code: "internal-snapshots",
        file: chain.files[0].file,
        message: `the current image holds ${h.snapshots} internal qcow2 snapshot(s), which a ` +
          "volume-chain storage does not use",
      });
    }
  }
  return { chain: chain.files, problems };
}

/** `qemu-img info --backing-chain` against our reading, then `qemu-img check` of each file. */
async function checkImages(
  chain: ChainFile[],
  repair: boolean,
): Promise<Found[]> {
  const problems: Found[] = [];
  try {
    const info = await backingChainInfo(chain[0].path);
    const names = info.map((x) => x.filename.slice(x.filename.lastIndexOf("/") + 1)).join(" → ");
    const ours = chain.map((f) => f.path.slice(f.path.lastIndexOf("/") + 1)).join(" → ");
    if (names !== ours) {
      problems.push({
        severity: "error",
        code: "chain-mismatch",
        message: `qemu-img sees the chain ${names}, volt reads ${ours}`,
      });
    }
  } catch (err) {
    problems.push({ severity: "error", code: "check-failed", message: errorLine(err) });
  }
  for (const f of chain) {
    const r = await checkImage(f.path);
    if (!r.completed) {
      problems.push({
        severity: "error",
        code: "check-failed",
        file: f.file,
        message: `qemu-img check of '${f.file}' failed: ${r.error}`,
      });
      continue;
    }
    if (r.corruptions > 0) {
      problems.push({
        severity: "error",
        code: "corrupt-image",
        file: f.file,
        message: `'${f.file}' has ${r.corruptions} corruption(s): volt does not repair ` +
          `them; see 'qemu-img check -r all' (back the file up first)`,
      });
    }
    if (r.leaks > 0) {
      const p: Found = {
        severity: "warning",
        code: "leaked-clusters",
        file: f.file,
        message: `'${f.file}' has ${r.leaks} leaked cluster(s) (space only, data is intact)`,
        repair: "free them (qemu-img check -r leaks)",
      };
      if (repair) {
        const fixed = await checkImage(f.path, true);
        await restoreTimes(f.path, f.stat);
        p.repaired = fixed.completed && fixed.leaksFixed >= r.leaks;
        if (!p.repaired) p.repairError = fixed.error ?? "leaks remain";
      }
      problems.push(p);
    }
  }
  return problems;
}
