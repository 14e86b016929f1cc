/**
 * A backup job: volt plays the host's part (what vzdump and QEMU do in Proxmox VE) and calls
 * the backup provider in the order drawn in `docs/backup-providers.md`:
 *
 * ```
 * jobInit → backupInit → backupGetMechanism → backupVmQueryIncremental
 *   → (volt prepares the disks) → backupVm → (volt releases the disks)
 *   → backupCleanup(success) → (volt consumes the bitmaps, only on success)
 *   → backupHandleLogFile → jobCleanup
 * ```
 *
 * Every cleanup runs whenever its init was called, also when the provider threw, a source
 * went away, or the job was interrupted; a failing cleanup is logged and never hides the
 * first error. Dirty bitmaps are consumed only after `backupCleanup(success = true)` returned.
 *
 * @module
 */

import type { LogFunction } from "../../plugins/api.ts";
import type {
  BackupProvider,
  BackupStats,
  BitmapMode,
  IncrementalChoice,
  VmBackupMechanism,
} from "../../plugins/backup_api.ts";
import { errorLine, VoltError } from "../errors.ts";
import { InterruptedError } from "../signals.ts";
import type { Storages } from "../storage/storages.ts";
import { assertSafeVolname } from "../storage/volume_id.ts";
import { openBackupProvider } from "./open_provider.ts";
import {
  type DiskArg,
  type DiskSource,
  type PreparedDisk,
  prepareDisk,
  resolveDiskSource,
} from "./sources.ts";
import { TaskLog } from "./task_log.ts";

/** Options of {@link runBackupJob}. */
export interface BackupJobOptions {
  storages: Storages;
  /** The backup storage id. */
  storage: string;
  vmid: number;
  /** The disks, in the order given. */
  disks: DiskArg[];
  /** The guest configuration, stored byte for byte. */
  guestConfig: string;
  /** The firewall configuration, if the guest has one. */
  firewallConfig?: string;
  /** Read bandwidth limit in KiB/s. */
  bwlimitKiB?: number;
  /** `full`: ignore bitmaps, copy everything (a new bitmap is started). */
  mode?: "full" | "incremental";
  /** Dirty bitmap of NBD sources (`--bitmap`). */
  bitmap?: string;
  /** Messages for the user (also written to the task log). */
  log?: LogFunction;
  /** Progress of each device. */
  progress?: (device: string, done: number, total: number) => void;
  /** Fires on SIGINT/SIGTERM. */
  signal?: AbortSignal;
  /** Clock in milliseconds (tests). */
  now?: () => number;
}

/** One device of a finished job. */
export interface BackupJobDevice {
  device: string;
  size: number;
  bitmapMode: BitmapMode;
}

/** What a finished job did. */
export interface BackupJobResult {
  /** `storeid:archiveName`. */
  volid: string;
  stats: BackupStats;
  devices: BackupJobDevice[];
  /** Wall-clock seconds of the whole job. */
  seconds: number;
}

/**
 * Backs up one VM into a backup storage and resolves to the new backup's volume id and
 * statistics. Rejects with one line: the provider's message when a provider method threw,
 * the source's when a disk went away, {@link InterruptedError} when interrupted.
 *
 * @example
 * ```ts ignore
 * import { runBackupJob } from "./job.ts";
 * const r = await runBackupJob({ storages, storage: "backup", vmid: 100,
 *   disks: [{ device: "scsi0", source: "/srv/disk.qcow2" }], guestConfig: "memory: 512\n" });
 * console.log(r.volid);
 * ```
 */
export async function runBackupJob(o: BackupJobOptions): Promise<BackupJobResult> {
  const t0 = performance.now();
  const now = o.now ?? Date.now;
  const handle = await o.storages.get(o.storage);
  if (o.disks.length === 0) throw new VoltError("nothing to back up: give at least one --disk");
  const seen = new Set<string>();
  for (const d of o.disks) {
    if (seen.has(d.device)) throw new VoltError(`device '${d.device}' is given twice`);
    seen.add(d.device);
  }

  await using taskLog = await TaskLog.create();
  const log: LogFunction = (level, message) => {
    taskLog.write(level, message);
    o.log?.(level, message);
  };
  const sources: DiskSource[] = [];
  for (const d of o.disks) {
    sources.push(
      await resolveDiskSource(d, {
        storages: o.storages,
        bitmap: o.bitmap,
        warn: (m) => log("warn", m),
      }),
    );
  }
  const provider = await openBackupProvider(handle, log);
  const startTime = Math.floor(now() / 1000);
  log("info", `backup of guest ${o.vmid} to '${o.storage}' (${provider.providerName}) started`);

  let failure: unknown;
  const fail = (err: unknown) => {
    failure ??= err;
  };
  const warnCleanup = (what: string, err: unknown) =>
    log("warn", `${what} failed: ${errorLine(err)}`);
  let archiveName = "";
  let stats: BackupStats | undefined;
  const devices: BackupJobDevice[] = [];

  try {
    await provider.jobInit(startTime);
  } catch (err) {
    fail(err);
  }
  if (failure === undefined) {
    await guestBackup();
  }
  try {
    await provider.jobCleanup();
  } catch (err) {
    warnCleanup("jobCleanup", err);
  }

  if (failure !== undefined) {
    if (o.signal?.aborted) {
      throw new InterruptedError(`backup of guest ${o.vmid}`, String(o.signal.reason));
    }
    throw new VoltError(`backup of guest ${o.vmid} failed: ${errorLine(failure)}`, {
      cause: failure,
    });
  }
  return {
    volid: `${o.storage}:${archiveName}`,
    stats: stats!,
    devices,
    seconds: (performance.now() - t0) / 1000,
  };

  /** backupInit … backupHandleLogFile for the one guest. */
  async function guestBackup(): Promise<void> {
    let success = false;
    const prepared: PreparedDisk[] = [];
    let workDir: string | undefined;
    let initCalled = false;
    try {
      initCalled = true;
      const init = await provider.backupInit(o.vmid, "qemu", startTime);
      if (typeof init?.archiveName !== "string" || init.archiveName === "") {
        throw new VoltError("the provider's backupInit returned no archive name");
      }
      assertSafeVolname(init.archiveName);
      archiveName = init.archiveName;
      const mechanism = await provider.backupGetMechanism(o.vmid, "qemu");
      if (mechanism !== "nbd" && mechanism !== "file-handle") {
        throw new VoltError(
          `the provider asked for mechanism '${String(mechanism)}', which is not one for VMs`,
        );
      }
      const sizes = Object.fromEntries(sources.map((s) => [s.device, s.size]));
      const answer = await provider.backupVmQueryIncremental(o.vmid, sizes);
      workDir = await Deno.makeTempDir({ prefix: "volt-backup-" });
      for (const src of sources) {
        const choice: IncrementalChoice = o.mode === "full" ? "new" : answer?.[src.device] ?? "new";
        if (choice !== "new" && choice !== "use") {
          throw new VoltError(`the provider answered '${String(choice)}' for ${src.device}`);
        }
        o.signal?.throwIfAborted();
        const disk = await prepareDisk(src, {
          mechanism: mechanism as VmBackupMechanism,
          choice,
          storeid: o.storage,
          workDir,
          log,
        });
        prepared.push(disk);
        devices.push({ device: src.device, size: src.size, bitmapMode: disk.volume.bitmapMode });
      }
      await provider.backupVm(o.vmid, o.guestConfig, prepared.map((p) => p.volume), {
        firewallConfig: o.firewallConfig,
        bandwidthLimit: o.bwlimitKiB,
        progress: o.progress,
        signal: o.signal,
      });
      o.signal?.throwIfAborted();
      success = true;
    } catch (err) {
      fail(err);
    } finally {
      for (const p of prepared) {
        await p.release().catch((err) => warnCleanup("stopping an export", err));
      }
      if (workDir) await Deno.remove(workDir, { recursive: true }).catch(() => {});
    }
    if (initCalled) {
      try {
        const r = await provider.backupCleanup(o.vmid, "qemu", success, {
          ...(failure !== undefined ? { error: errorLine(failure) } : {}),
        });
        stats = r?.stats ?? { archiveSize: 0 };
      } catch (err) {
        if (success) {
          success = false;
          fail(err);
        } else warnCleanup("backupCleanup", err);
      }
    }
    // Only now, with the backup committed, may the changes be forgotten.
    for (const p of prepared) {
      const step = success ? p.commit() : p.abandon();
      await step.catch((err) =>
        warnCleanup(
          success ? "marking the dirty bitmap consumed" : "dropping the pending bitmap",
          err,
        )
      );
    }
    if (success) {
      log("info", `backup ${o.storage}:${archiveName} finished`);
    } else {
      // The user sees the error once, from the caller; the task log keeps it too.
      taskLog.write("err", `backup of guest ${o.vmid} failed: ${errorLine(failure)}`);
    }
    if (initCalled) {
      try {
        await provider.backupHandleLogFile(o.vmid, taskLog.path);
      } catch (err) {
        warnCleanup("backupHandleLogFile", err);
      }
    }
  }
}

/** Re-exported for commands that build the provider themselves. */
export type { BackupProvider };
