/**
 * Removing backups from a directory backup storage (`volt free`, prune) without breaking the
 * backups that depend on them, and without a moment — even a crash — in which a remaining
 * backup cannot be restored.
 *
 * Removing a set S of one guest's backups (`volt free` removes one; {@link removeBackups}
 * takes several), under the guest's lock (`guest_lock.ts`):
 *
 * 0. Leftovers of interrupted operations (`.tmp-*`) are swept. Each member of S must exist
 *    and not be protected (nothing changes otherwise).
 * 1. Every kept backup R whose parent is in S is merged: its nearest kept ancestor K is found
 *    by walking up through S (none: R becomes a full backup). R is copied to
 *    `.tmp-merge-<R>/` (`cp --reflink=auto --sparse=always`: every file, notes, protection and
 *    log too), the copies and the images of S that R reads are checked against their
 *    manifests (a damaged backup is never blessed with fresh checksums), and each incremental
 *    image of the copy is rebased in qemu's SAFE mode onto K's image of the device
 *    (`../<K>/<dev>.qcow2`, relative as always), or onto nothing when a backup of S holds the
 *    device in full: `qemu-img rebase` writes into the copy every cluster where the old and
 *    the new backing chain differ, so the copy reads exactly as R did. The new manifest
 *    (parent K or none, kinds and backing names, new digests of the rebased images) is
 *    written last; everything is `fsync`ed.
 * 2. The copy and R are swapped in one atomic step (`renameat2(RENAME_EXCHANGE)`,
 *    `ffi/libc_rename.ts`); the guest directory is `fsync`ed. R's name always holds either
 *    the old or the merged backup, both complete and restoring the same disks. The old R,
 *    now in `.tmp-merge-<R>/`, is deleted.
 * 3. `previous-info` is deleted if it names a member of S (the disks' dirty bitmaps are
 *    relative to it, so the next backup must be a full one; a missing `previous-info` makes
 *    it so).
 * 4. The members of S, newest first (so a member never outlives its own parent), are renamed
 *    to `.tmp-delete-<X>/` (out of the listing at once) and deleted.
 *
 * Every state a crash can leave (each step is marked with a {@link faultPoint}, and
 * `tests/backup_removal_test.ts` kills volt at each one) is a set of complete backups, each
 * restoring exactly what it captured, and `volt verify`-clean, plus `.tmp-*` directories that
 * no backup refers to (the next backup or removal of the guest sweeps them). Running the
 * removal again finishes it. SIGINT/SIGTERM stop it between steps, with the same guarantee.
 *
 * Decisions:
 * - No exchange, no merge: on a file system without `RENAME_EXCHANGE` (NFS, CIFS) a backup
 *   others depend on is not removed (the error says so); a two-step rename would leave R's
 *   name empty between the steps. Backups nothing depends on are removed there as anywhere.
 * - A protected backup is refused; a protected backup R may be merged into (its content does
 *   not change, and its `protected` and `notes` files are carried over).
 * - A restore or verify running while R is exchanged may fail (a name vanished under it) but
 *   never reads wrong data: old R with its parents and merged R read the same.
 * - Container backups have no parent and no children: removal is steps 3–4 only.
 *
 * Layout: `docs/formats.md`, "Removing backups".
 *
 * @module
 */

import type { LogFunction } from "../api.ts";
import { VoltError } from "../../lib/errors.ts";
import { faultPoint } from "../../lib/fault_point.ts";
import { run } from "../../lib/run.ts";
import { formatBytes } from "../../lib/size.ts";
import { InterruptedError, withTermination } from "../../lib/signals.ts";
import { fileDigest } from "../../lib/backup/checksum.ts";
import { assertSafeBackupChain } from "../../lib/backup/chain_guard.ts";
import {
  fileEntry,
  LOG_NAME,
  type Manifest,
  type ManifestDevice,
  syncDir,
  writeManifest,
} from "../../lib/backup/manifest.ts";
import { exchangePaths, ExchangeUnsupportedError } from "../../ffi/libc_rename.ts";
import { isProtected } from "./attributes.ts";
import { lockGuest } from "./guest_lock.ts";
import {
  backupVolname,
  guestDir,
  listGuestBackups,
  parseBackupVolname,
  readPreviousInfo,
  type StoredBackup,
  TEMP_PREFIX,
} from "./layout.ts";

/**
 * The crash points of a removal (`VOLT_FAULT_POINT`, `lib/fault_point.ts`), in the order they
 * are reached; the first five repeat for each kept backup that is rewritten.
 */
export const REMOVAL_FAULT_POINTS = [
  /** `.tmp-merge-<R>/` created, empty. */
  "backup-remove:merge-started",
  /** R's files copied into it. */
  "backup-remove:copied",
  /** The first image of the copy rebased. */
  "backup-remove:rebased",
  /** The copy complete: new manifest written, everything synced. */
  "backup-remove:merge-written",
  /** The copy swapped in as R; the old R in `.tmp-merge-<R>/`. */
  "backup-remove:exchanged",
  /** The old R deleted. */
  "backup-remove:old-copy-removed",
  /** `previous-info` (naming a removed backup) deleted. */
  "backup-remove:previous-info-removed",
  /** A removed backup renamed to `.tmp-delete-<X>/`. */
  "backup-remove:renamed",
  /** Its first file deleted. */
  "backup-remove:partly-deleted",
] as const;

/** One of {@link REMOVAL_FAULT_POINTS}. */
export type RemovalFaultPoint = typeof REMOVAL_FAULT_POINTS[number];

function crashPoint(name: RemovalFaultPoint): void {
  faultPoint(name);
}

/** Options of {@link removeBackups}. */
export interface RemoveBackupsOptions {
  /** The storage's id, for messages (`backup`). */
  storageId: string;
  /** Progress and warnings (`merging qemu-X into qemu-C …`). */
  log?: LogFunction;
  /** Stops the removal between steps (it then throws `InterruptedError`). */
  signal?: AbortSignal;
}

/** A kept backup rewritten because its parent was removed. */
export interface MergedBackup {
  /** `qemu-<epoch>` of the rewritten backup. */
  backup: string;
  /** The removed backups merged into it, nearest first. */
  merged: string[];
  /** Its parent now; absent when it became a full backup. */
  parent?: string;
}

/** What {@link removeBackups} did. */
export interface RemovalResult {
  /** The removed backups' directory names, in the order removed (newest first). */
  removed: string[];
  /** The backups rewritten to stand without them. */
  rewritten: MergedBackup[];
}

/** How one kept backup is merged. */
interface MergePlan {
  target: StoredBackup;
  /** The removed ancestors, nearest first, down to the kept ancestor or the first full one. */
  merged: StoredBackup[];
  /** The nearest kept ancestor; undefined when no device stays incremental. */
  parent?: string;
  /** Per incremental device of the target: its new backing name (undefined: full). */
  backing: Map<string, string | undefined>;
  /** Per incremental device: the images of removed backups whose data moves into it. */
  sources: Map<string, { backup: StoredBackup; file: string }[]>;
}

const noLog: LogFunction = () => {};

/**
 * `volt free` of a backup-dir volume: removes the backup `volname` (merging it into the
 * backups based on it), stopping cleanly on SIGINT/SIGTERM. Progress on stderr.
 */
export async function freeBackup(storageId: string, root: string, volname: string): Promise<void> {
  const b = parseBackupVolname(volname);
  const encoder = new TextEncoder();
  const log: LogFunction = (level, message) => {
    const line = level === "info"
      ? message
      : `volt: ${level === "warn" ? "warning" : "error"}: ${message}`;
    Deno.stderr.writeSync(encoder.encode(`${line}\n`));
  };
  await withTermination((signal) =>
    removeBackups(root, b.vmid, [b.dirName], { storageId, log, signal })
  );
}

/**
 * Removes the backups `names` (`qemu-<epoch>`, `lxc-<epoch>`) of guest `vmid` in the storage
 * at `root`, merging them into the kept backups based on them (see the module doc). Refuses,
 * changing nothing, a name that does not exist, a protected backup, or a chain it cannot
 * merge (damaged, or a file system without atomic exchange).
 *
 * @example
 * ```ts ignore
 * import { removeBackups } from "./remove_backup.ts";
 * const r = await removeBackups("/srv/backup", 100, ["qemu-1700000000"], { storageId: "backup" });
 * console.log(r.rewritten.map((m) => `${m.backup} now on ${m.parent ?? "nothing"}`));
 * ```
 */
export async function removeBackups(
  root: string,
  vmid: number,
  names: string[],
  options: RemoveBackupsOptions,
): Promise<RemovalResult> {
  const log = options.log ?? noLog;
  const dir = guestDir(root, vmid);
  const volid = (name: string) => `${options.storageId}:${backupVolname(vmid, name)}`;
  const wanted = [...new Set(names)];
  /** Backups whose earlier removal was interrupted after step 4 began: only leftovers remain. */
  const finishing = new Set<string>();
  for (const name of wanted) {
    parseBackupVolname(backupVolname(vmid, name)); // A plain backup name, nothing else.
    if (await isDirectory(`${dir}/${name}`)) continue;
    if (!(await isDirectory(`${dir}/${TEMP_PREFIX}delete-${name}`))) {
      throw new VoltError(`volume '${volid(name)}' does not exist`);
    }
    finishing.add(name);
  }
  using _lock = await lockOrInterrupt(dir, `backups of guest ${vmid} on '${options.storageId}'`, {
    signal: options.signal,
    what: `removal of ${volid(wanted[0])}`,
  });
  await sweepLeftovers(dir, log);

  // Under the lock: what exists now.
  const doomed = wanted.filter((name) => !finishing.has(name));
  const all = await listGuestBackups(root, vmid, (d, why) => {
    log("warn", `'${d}' is not a backup (${why}); leaving it alone`);
  });
  const byName = new Map(all.map((b) => [b.dirName, b]));
  const removeSet = new Set(doomed);
  for (const name of doomed) {
    if (!(await isDirectory(`${dir}/${name}`))) {
      throw new VoltError(`volume '${volid(name)}' does not exist`);
    }
    if (await isProtected(`${dir}/${name}`)) {
      throw new VoltError(
        `backup '${volid(name)}' is protected: unprotect it first with 'volt protect ${
          volid(name)
        } 0'`,
      );
    }
  }
  const plans = all
    .filter((b) =>
      !removeSet.has(b.dirName) && b.manifest.parent !== undefined &&
      removeSet.has(b.manifest.parent)
    )
    .map((b) => planMerge(b, byName, removeSet, volid));

  const result: RemovalResult = { removed: [...finishing], rewritten: [] };
  for (const plan of plans) {
    interruptible(options.signal, volid(doomed[0]));
    await mergeInto(dir, all.length, plan, { ...options, log }, volid);
    result.rewritten.push({
      backup: plan.target.dirName,
      merged: plan.merged.map((m) => m.dirName),
      ...(plan.parent !== undefined ? { parent: plan.parent } : {}),
    });
  }

  // Nothing kept refers to the doomed backups any more.
  const previous = await readPreviousInfo(dir);
  if (previous && removeSet.has(previous.backup)) {
    await Deno.remove(`${dir}/previous-info`);
    await syncDir(dir);
    crashPoint("backup-remove:previous-info-removed");
    log("info", `the next backup of guest ${vmid} will be a full one (${previous.backup} removed)`);
  }
  // Newest first: a doomed backup never outlives its parent (a crash between two keeps a
  // restorable chain).
  const order = doomed.map((name) => ({
    name,
    time: parseBackupVolname(backupVolname(vmid, name)).time,
  }))
    .sort((a, b) => b.time - a.time);
  for (const { name } of order) {
    interruptible(options.signal, volid(name));
    await deleteBackupDir(dir, name);
    result.removed.push(name);
  }
  return result;
}

/** Works out how `target` stands without the backups in `removeSet`. */
function planMerge(
  target: StoredBackup,
  byName: Map<string, StoredBackup>,
  removeSet: Set<string>,
  volid: (name: string) => string,
): MergePlan {
  // The removed ancestors, nearest first, and the first kept one.
  const chain: StoredBackup[] = [];
  let up = target.manifest.parent;
  while (up !== undefined && removeSet.has(up)) {
    const a = byName.get(up);
    if (!a) {
      throw new VoltError(
        `cannot merge ${up} into ${target.dirName}: ${up} is not a readable backup ` +
          `(see 'volt verify ${volid(target.dirName)}')`,
      );
    }
    chain.push(a);
    up = a.manifest.parent;
  }
  const backing = new Map<string, string | undefined>();
  const sources = new Map<string, { backup: StoredBackup; file: string }[]>();
  let used = 0;
  for (const [dev, d] of Object.entries(target.manifest.devices)) {
    if (d.kind !== "incremental") continue;
    const from: { backup: StoredBackup; file: string }[] = [];
    let newBacking: string | undefined;
    for (const [i, a] of chain.entries()) {
      const ad = a.manifest.devices[dev];
      if (!ad || ad.size !== d.size) {
        throw new VoltError(
          `cannot merge ${a.dirName} into ${target.dirName}: ${a.dirName} has no ${dev} of ` +
            `${d.size} bytes; the chain is damaged (see 'volt verify ${volid(target.dirName)}')`,
        );
      }
      from.push({ backup: a, file: ad.file });
      used = Math.max(used, i + 1);
      if (ad.kind === "full") break;
      if (i === chain.length - 1) newBacking = `../${up}/${d.file}`;
    }
    backing.set(dev, newBacking);
    sources.set(dev, from);
  }
  const keepsParent = [...backing.values()].some((b) => b !== undefined);
  return {
    target,
    merged: chain.slice(0, Math.max(used, 1)),
    ...(keepsParent ? { parent: up } : {}),
    backing,
    sources,
  };
}

/** Steps 1 and 2 of the module doc for one kept backup. */
async function mergeInto(
  dir: string,
  backupCount: number,
  plan: MergePlan,
  options: RemoveBackupsOptions & { log: LogFunction },
  volid: (name: string) => string,
): Promise<void> {
  const { target } = plan;
  const log = options.log;
  const work = `${dir}/${TEMP_PREFIX}merge-${target.dirName}`;
  const sizes: string[] = [];
  for (const [dev, from] of plan.sources) {
    let bytes = 0;
    for (const s of from) bytes += (await Deno.stat(`${s.backup.dir}/${s.file}`)).size;
    sizes.push(`${dev}: ${formatBytes(bytes)}`);
  }
  const outcome = plan.parent !== undefined ? `now based on ${plan.parent}` : "now a full backup";
  log(
    "info",
    `merging ${plan.merged.map((m) => m.dirName).join(", ")} into ${target.dirName} (${
      sizes.join(", ") || "no disk"
    }): ${target.dirName} is ${outcome}`,
  );
  try {
    await Deno.mkdir(work, { mode: 0o700 });
    crashPoint("backup-remove:merge-started");
    await copyBackupFiles(target.dir, work, options.signal);
    crashPoint("backup-remove:copied");
    await checkAgainstManifest(work, target, volid);
    const checked = new Set<string>();
    for (const from of plan.sources.values()) {
      for (const s of from) {
        const path = `${s.backup.dir}/${s.file}`;
        if (checked.has(path)) continue;
        checked.add(path);
        await checkFile(s.backup, s.file, path, volid);
      }
    }
    const devices: Record<string, ManifestDevice> = { ...target.manifest.devices };
    const files = new Map(target.manifest.files.map((f) => [f.name, f]));
    for (const [dev, newBacking] of plan.backing) {
      const d = target.manifest.devices[dev];
      const image = `${work}/${d.file}`;
      // Before qemu opens anything: the copy's chain is what the manifests say.
      await assertSafeBackupChain(image, { root: dir, maxDepth: Math.max(1, backupCount) });
      await run(
        "qemu-img",
        newBacking === undefined
          ? ["rebase", "-q", "-f", "qcow2", "-b", "", image]
          : ["rebase", "-q", "-f", "qcow2", "-F", "qcow2", "-b", newBacking, image],
        { signal: options.signal },
      );
      crashPoint("backup-remove:rebased");
      const { backing: _, ...rest } = d;
      devices[dev] = newBacking === undefined
        ? { ...rest, kind: "full" }
        : { ...rest, kind: "incremental", backing: newBacking };
      files.set(d.file, await fileEntry(work, d.file, { signal: options.signal }));
    }
    const { parent: _, ...base } = target.manifest;
    const manifest: Manifest = {
      ...base,
      ...(plan.parent !== undefined ? { parent: plan.parent } : {}),
      devices,
      files: [...files.values()],
    };
    await appendLog(
      work,
      `${new Date().toISOString()} info: ${
        plan.merged.map((m) => m.dirName).join(", ")
      } removed and merged into this backup; it is ${outcome}\n`,
    );
    await syncTree(work);
    await writeManifest(work, manifest);
    crashPoint("backup-remove:merge-written");
    interruptible(options.signal, volid(plan.merged[0].dirName));
    try {
      exchangePaths(work, target.dir);
    } catch (err) {
      if (err instanceof ExchangeUnsupportedError) {
        throw new VoltError(
          `cannot merge ${plan.merged[0].dirName} into ${target.dirName}: the file system of ` +
            `'${dir}' cannot exchange two directories atomically (${err.message}); remove the ` +
            "backups based on it first",
          { cause: err },
        );
      }
      throw err;
    }
  } catch (err) {
    await Deno.remove(work, { recursive: true }).catch(() => {});
    if (options.signal?.aborted) {
      throw new InterruptedError(
        `removal of ${volid(plan.merged[0].dirName)}`,
        String(options.signal.reason),
      );
    }
    throw err;
  }
  await syncDir(dir);
  crashPoint("backup-remove:exchanged");
  // The old backup, now in the working directory; a leftover is swept later.
  await Deno.remove(work, { recursive: true }).catch((err) => {
    log("warn", `could not remove '${work}' (removed by the next backup): ${err.message}`);
  });
  crashPoint("backup-remove:old-copy-removed");
}

/** Copies every file of the backup in `from` into `to` (sparse, shared extents if possible). */
async function copyBackupFiles(from: string, to: string, signal?: AbortSignal): Promise<void> {
  const names: string[] = [];
  for await (const e of Deno.readDir(from)) {
    const st = await Deno.lstat(`${from}/${e.name}`);
    if (!st.isFile) {
      throw new VoltError(
        `'${from}/${e.name}' is not a regular file: a backup holds only files (see 'volt verify')`,
      );
    }
    names.push(`${from}/${e.name}`);
  }
  if (names.length === 0) return;
  await run(
    "cp",
    ["--reflink=auto", "--sparse=always", "--preserve=mode,timestamps", "--", ...names, `${to}/`],
    { signal },
  );
}

/** Every file the manifest lists, in the copy `work`, matches it. */
async function checkAgainstManifest(
  work: string,
  b: StoredBackup,
  volid: (name: string) => string,
): Promise<void> {
  for (const f of b.manifest.files) await checkFile(b, f.name, `${work}/${f.name}`, volid);
}

/** The file `path` (a copy of, or the file `name` of backup `b`) matches b's manifest. */
async function checkFile(
  b: StoredBackup,
  name: string,
  path: string,
  volid: (name: string) => string,
): Promise<void> {
  const entry = b.manifest.files.find((f) => f.name === name);
  let d;
  try {
    d = await fileDigest(path);
  } catch (err) {
    throw new VoltError(`backup '${volid(b.dirName)}': ${name}: ${(err as Error).message}`);
  }
  if (!entry || d.size !== entry.size || d.digest !== entry.digest) {
    throw new VoltError(
      `backup '${volid(b.dirName)}': ${name} does not match its checksum in the manifest; ` +
        `not merging a damaged backup (see 'volt verify ${volid(b.dirName)}')`,
    );
  }
}

/** Appends a line to the backup log in `dir` (creating it). */
async function appendLog(dir: string, line: string): Promise<void> {
  using f = await Deno.open(`${dir}/${LOG_NAME}`, { append: true, create: true, mode: 0o600 });
  await f.write(new TextEncoder().encode(line));
}

/** `fsync` of every file in `dir`, then of `dir`. */
async function syncTree(dir: string): Promise<void> {
  for await (const e of Deno.readDir(dir)) {
    using f = await Deno.open(`${dir}/${e.name}`, { read: true });
    await f.sync();
  }
  await syncDir(dir);
}

/** Step 4: out of the listing at once, then deleted file by file. */
async function deleteBackupDir(dir: string, name: string): Promise<void> {
  const doomed = `${dir}/${TEMP_PREFIX}delete-${name}`;
  await Deno.rename(`${dir}/${name}`, doomed);
  await syncDir(dir);
  crashPoint("backup-remove:renamed");
  let first = true;
  for await (const e of Deno.readDir(doomed)) {
    await Deno.remove(`${doomed}/${e.name}`, { recursive: true });
    if (first) crashPoint("backup-remove:partly-deleted");
    first = false;
  }
  await Deno.remove(doomed);
  await syncDir(dir);
}

/** Removes the working directories of interrupted backups and removals (under the lock). */
async function sweepLeftovers(dir: string, log: LogFunction): Promise<void> {
  const leftovers = (await Array.fromAsync(Deno.readDir(dir)))
    .filter((e) => e.name.startsWith(TEMP_PREFIX)).map((e) => e.name);
  for (const name of leftovers) {
    log("info", `removing '${name}', left by an interrupted backup or removal`);
    await Deno.remove(`${dir}/${name}`, { recursive: true });
  }
  if (leftovers.length > 0) await syncDir(dir);
}

/** The guest's lock, given up when `signal` fires first. */
async function lockOrInterrupt(
  dir: string,
  what: string,
  options: { signal?: AbortSignal; what: string },
): Promise<Disposable> {
  const locking = lockGuest(dir, what);
  const signal = options.signal;
  if (!signal) return await locking;
  let onAbort = () => {};
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(new InterruptedError(options.what, String(signal.reason)));
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    return await Promise.race([locking, aborted]);
  } catch (err) {
    locking.then((l) => l[Symbol.dispose](), () => {});
    throw err;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

function interruptible(signal: AbortSignal | undefined, volid: string): void {
  if (signal?.aborted) throw new InterruptedError(`removal of ${volid}`, String(signal.reason));
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.lstat(path)).isDirectory;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}
