/**
 * A backup job: volt plays the host's part (what vzdump and QEMU do in Proxmox VE) and calls
 * the backup provider in the order drawn in `docs/backup-providers.md`:
 *
 * ```
 * jobInit → backupInit → backupGetMechanism
 *   VM:        → backupVmQueryIncremental → (volt prepares the disks) → backupVm
 *              → (volt releases the disks)
 *   container: → backupContainerPrepare (if the provider has it) → backupContainer
 *   → backupCleanup(success) → (VM: volt consumes the bitmaps, only on success)
 *   → backupHandleLogFile → jobCleanup
 * ```
 *
 * The lifecycle (inits, cleanups, task log, errors, interruption) is one piece of code; only
 * the part between `backupGetMechanism` and `backupCleanup` depends on the guest type
 * ({@link GuestData}). Every cleanup runs whenever its init was called, also when the provider
 * threw, a source went away, or the job was interrupted; a failing cleanup is logged and never
 * hides the first error. Dirty bitmaps are consumed only after `backupCleanup(success = true)`
 * returned. Containers have no bitmaps: each backup archives the whole tree.
 *
 * @module
 */

import type { LogFunction } from "../../plugins/api.ts";
import type {
  BackupProvider,
  BackupStats,
  BitmapMode,
  ContainerBackupInfo,
  GuestType,
  IncrementalChoice,
  VmBackupMechanism,
} from "../../plugins/backup_api.ts";
import { errorLine, VoltError } from "../errors.ts";
import { InterruptedError } from "../signals.ts";
import type { Storages } from "../storage/storages.ts";
import { assertSafeVolname } from "../storage/volume_id.ts";
import { tarExcludeArgs } from "./exclude_patterns.ts";
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
  /** `qemu` (default): a VM's `disks`; `lxc`: a container's `container` directory. */
  type?: GuestType;
  /** VMs: the disks, in the order given. */
  disks?: DiskArg[];
  /** Containers: what to archive. */
  container?: ContainerSource;
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

/** A container's file system for a backup (mechanism `directory`). */
export interface ContainerSource {
  /** The container's root file system: a mounted root or a plain directory. */
  directory: string;
  /** Paths below `directory` to archive (default `["."]`). */
  sources?: string[];
  /** vzdump exclude patterns: `/path` anchored at the container's root, others anywhere. */
  excludePatterns?: string[];
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
  /** The guest type backed up. */
  type: GuestType;
  stats: BackupStats;
  /** VMs: the disks; empty for a container. */
  devices: BackupJobDevice[];
  /** Wall-clock seconds of the whole job. */
  seconds: number;
}

/**
 * Backs up one guest (a VM's disks, or a container's directory) into a backup storage and
 * resolves to the new backup's volume id and statistics. Rejects with one line: the
 * provider's message when a provider method threw, the source's when a disk went away,
 * {@link InterruptedError} when interrupted. Bad input (no disk, a missing directory, a
 * provider that cannot back up containers) fails before any provider method is called.
 *
 * @example
 * ```ts ignore
 * import { runBackupJob } from "./job.ts";
 * const r = await runBackupJob({ storages, storage: "backup", vmid: 100,
 *   disks: [{ device: "scsi0", source: "/srv/disk.qcow2" }], guestConfig: "memory: 512\n" });
 * const ct = await runBackupJob({ storages, storage: "backup", vmid: 101, type: "lxc",
 *   container: { directory: "/srv/ct101", excludePatterns: ["/tmp/?*"] },
 *   guestConfig: "rootfs: local:101/subvol-101-disk-0.subvol\n" });
 * console.log(r.volid, ct.volid);
 * ```
 */
export async function runBackupJob(o: BackupJobOptions): Promise<BackupJobResult> {
  const t0 = performance.now();
  const now = o.now ?? Date.now;
  const type: GuestType = o.type ?? "qemu";
  if (type !== "qemu" && type !== "lxc") {
    throw new VoltError(`unknown guest type '${String(type)}': use qemu or lxc`);
  }
  const handle = await o.storages.get(o.storage);
  if (type === "qemu") checkDisks(o);
  const container = type === "lxc" ? await checkContainer(o) : undefined;

  await using taskLog = await TaskLog.create();
  const log: LogFunction = (level, message) => {
    taskLog.write(level, message);
    o.log?.(level, message);
  };
  const sources: DiskSource[] = [];
  for (const d of o.disks ?? []) {
    sources.push(
      await resolveDiskSource(d, {
        storages: o.storages,
        bitmap: o.bitmap,
        warn: (m) => log("warn", m),
      }),
    );
  }
  const provider = await openBackupProvider(handle, log);
  if (type === "lxc" && typeof provider.backupContainer !== "function") {
    throw new VoltError(
      `the provider of storage '${o.storage}' (${provider.providerName}) does not back up ` +
        "containers: it has no backupContainer",
    );
  }
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
  const data: GuestData = type === "qemu" ? vmData() : containerData();

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
    type,
    stats: stats!,
    devices,
    seconds: (performance.now() - t0) / 1000,
  };

  /** backupInit … backupHandleLogFile for the one guest. */
  async function guestBackup(): Promise<void> {
    let success = false;
    let initCalled = false;
    try {
      initCalled = true;
      const init = await provider.backupInit(o.vmid, type, startTime);
      if (typeof init?.archiveName !== "string" || init.archiveName === "") {
        throw new VoltError("the provider's backupInit returned no archive name");
      }
      assertSafeVolname(init.archiveName);
      archiveName = init.archiveName;
      const mechanism = await provider.backupGetMechanism(o.vmid, type);
      await data.run(String(mechanism));
      o.signal?.throwIfAborted();
      success = true;
    } catch (err) {
      fail(err);
    } finally {
      await data.release();
    }
    if (initCalled) {
      try {
        const r = await provider.backupCleanup(o.vmid, type, success, {
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
    await data.settle(success);
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

  /** A VM: disks exported (or opened) for backupVm, their dirty bitmaps settled afterwards. */
  function vmData(): GuestData {
    const prepared: PreparedDisk[] = [];
    let workDir: string | undefined;
    return {
      async run(mechanism) {
        if (mechanism !== "nbd" && mechanism !== "file-handle") {
          throw new VoltError(
            `the provider asked for mechanism '${mechanism}', which is not one for VMs`,
          );
        }
        const sizes = Object.fromEntries(sources.map((s) => [s.device, s.size]));
        const answer = await provider.backupVmQueryIncremental(o.vmid, sizes);
        workDir = await Deno.makeTempDir({ prefix: "volt-backup-" });
        for (const src of sources) {
          const choice: IncrementalChoice = o.mode === "full"
            ? "new"
            : answer?.[src.device] ?? "new";
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
      },
      async release() {
        for (const p of prepared) {
          await p.release().catch((err) => warnCleanup("stopping an export", err));
        }
        if (workDir) await Deno.remove(workDir, { recursive: true }).catch(() => {});
      },
      async settle(success) {
        for (const p of prepared) {
          const step = success ? p.commit() : p.abandon();
          await step.catch((err) =>
            warnCleanup(
              success ? "marking the dirty bitmap consumed" : "dropping the pending bitmap",
              err,
            )
          );
        }
      },
    };
  }

  /** A container: its directory handed to backupContainerPrepare and backupContainer. */
  function containerData(): GuestData {
    return {
      async run(mechanism) {
        if (mechanism !== "directory") {
          throw new VoltError(
            `the provider asked for mechanism '${mechanism}', which is not one for containers`,
          );
        }
        const c = container!;
        const info: ContainerBackupInfo = {
          directory: c.directory,
          sources: c.sources ?? ["."],
          firewallConfig: o.firewallConfig,
          bandwidthLimit: o.bwlimitKiB,
          signal: o.signal,
        };
        await provider.backupContainerPrepare?.(o.vmid, info);
        o.signal?.throwIfAborted();
        await provider.backupContainer!(o.vmid, o.guestConfig, c.excludePatterns ?? [], info);
      },
      release: () => Promise.resolve(),
      settle: () => Promise.resolve(),
    };
  }
}

/**
 * The part of one guest's backup that depends on its type: between backupGetMechanism and
 * backupCleanup (`run`), what must always be undone before backupCleanup (`release`), and
 * what happens only after it (`settle`: the VM's dirty bitmaps).
 */
interface GuestData {
  /** Checks the mechanism and hands the guest's data to the provider. */
  run(mechanism: string): Promise<void>;
  /** Always called after `run` (also when it threw), before backupCleanup. */
  release(): Promise<void>;
  /** After backupCleanup: `success` true when the backup was committed. */
  settle(success: boolean): Promise<void>;
}

/** A VM job needs disks, each device once. */
function checkDisks(o: BackupJobOptions): void {
  if (o.container !== undefined) throw new VoltError("a VM backup takes disks, not a directory");
  const disks = o.disks ?? [];
  if (disks.length === 0) throw new VoltError("nothing to back up: give at least one --disk");
  const seen = new Set<string>();
  for (const d of disks) {
    if (seen.has(d.device)) throw new VoltError(`device '${d.device}' is given twice`);
    seen.add(d.device);
  }
}

/**
 * A container job needs an existing directory, valid patterns and no disks. Returns the
 * source with an absolute directory (the provider may run its archiver from anywhere).
 */
async function checkContainer(o: BackupJobOptions): Promise<ContainerSource> {
  if ((o.disks ?? []).length > 0) {
    throw new VoltError("a container backup takes a directory, not disks");
  }
  const c = o.container;
  if (c === undefined || !c.directory) {
    throw new VoltError("nothing to back up: give the container's --directory");
  }
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(c.directory);
  } catch (err) {
    throw new VoltError(
      `container directory '${c.directory}' ${
        err instanceof Deno.errors.NotFound
          ? "does not exist"
          : `cannot be used: ${(err as Error).message}`
      }`,
    );
  }
  if (!st.isDirectory) {
    throw new VoltError(`container directory '${c.directory}' is not a directory`);
  }
  try {
    tarExcludeArgs(c.excludePatterns ?? []);
  } catch (err) {
    throw new VoltError((err as Error).message);
  }
  return {
    ...c,
    directory: c.directory.startsWith("/") ? c.directory : `${Deno.cwd()}/${c.directory}`,
  };
}

/** Re-exported for commands that build the provider themselves. */
export type { BackupProvider };
