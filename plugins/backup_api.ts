/**
 * The backup provider API: what a backup storage implements so that volt can back guests up
 * into it and restore them. The shape is the one Proxmox VE merged
 * (`PVE::BackupProvider::Plugin::Base`), in camelCase; volt plays the host's part (what vzdump
 * and QEMU do in Proxmox). The lifecycle, guarantees and a guide: `docs/backup-providers.md`.
 *
 * A storage plugin opts in by listing the `backup-provider` feature and implementing
 * `newBackupProvider(storage, log)`.
 *
 * @module
 */

import type { LogFunction, Storage } from "./api.ts";

/** Guest types. */
export type GuestType = "qemu" | "lxc";

/** How the provider wants a VM's data: an NBD export, or a file handle (raw file or block device). */
export type VmBackupMechanism = "nbd" | "file-handle";
/** How the provider wants a container's data. */
export type ContainerBackupMechanism = "directory";

/** Per device: `new` — start a fresh bitmap (full copy); `use` — reuse it if it is valid (incremental). */
export type IncrementalChoice = "new" | "use";

/**
 * What the host did with a device's dirty bitmap: `none` — no bitmap, copy everything;
 * `new` — a bitmap was (re)created, copy everything, the next backup can be incremental;
 * `reuse` — the bitmap is valid since the previous backup, copy only dirty regions.
 */
export type BitmapMode = "none" | "new" | "reuse";

/** A dirty region of a device: byte offset and length. */
export interface DirtyRegion {
  /** Byte offset in the device. */
  offset: number;
  /** Length in bytes. */
  length: number;
}

/** One VM disk handed to {@link BackupProvider.backupVm}. */
export interface VmVolume {
  /** Device name, e.g. `scsi0`. */
  device: string;
  /** Virtual size in bytes. */
  size: number;
  bitmapMode: BitmapMode;
  /** `nbd` mechanism: where to read. */
  nbd?: {
    /** `nbd+unix:///<export>?socket=<path>`. */
    uri: string;
    socket: string;
    exportName: string;
    /** Dirty bitmap name (meta context `qemu:dirty-bitmap:<name>`) when bitmapMode is `reuse`. */
    bitmapName?: string;
  };
  /** `file-handle` mechanism: an open, readable file and the regions to copy. */
  fileHandle?: {
    file: Deno.FsFile;
    path: string;
    /**
     * Next region to copy, in ascending order; null at the end. Without a bitmap: the data
     * regions of a sparse file (holes read as zeros), or the whole device.
     */
    nextDirtyRegion(): Promise<DirtyRegion | null>;
  };
}

/** Extra facts for {@link BackupProvider.backupVm}. */
export interface VmBackupInfo {
  /** The guest's firewall configuration, byte for byte, if it has one. */
  firewallConfig?: string;
  /** Bandwidth limit in KiB/s (0 or undefined: none). */
  bandwidthLimit?: number;
  /** Progress callback the provider may call with bytes done and total for a device. */
  progress?: (device: string, done: number, total: number) => void;
  /** Fires when the job is cancelled (SIGINT/SIGTERM): stop and throw. */
  signal?: AbortSignal;
}

/**
 * What {@link BackupProvider.backupContainerPrepare} and
 * {@link BackupProvider.backupContainer} get (mechanism `directory`).
 */
export interface ContainerBackupInfo {
  /** The container's root file system, mounted or as a directory. */
  directory: string;
  /** Paths below `directory` to include, relative (`.`, `./mnt/data`); volt gives `["."]`. */
  sources: string[];
  /** The guest's firewall configuration, byte for byte, if it has one. */
  firewallConfig?: string;
  /** Bandwidth limit in KiB/s (0 or undefined: none). */
  bandwidthLimit?: number;
  /** Numeric uid the archive should be written as (unprivileged containers). */
  backupUserId?: number;
  /** Fires when the job is cancelled (SIGINT/SIGTERM): stop and throw. */
  signal?: AbortSignal;
}

/** What the backup of one device did, for the job summary (optional in {@link BackupStats}). */
export interface DeviceBackupStats {
  /** `full`: every allocated byte was copied; `incremental`: only the dirty ranges. */
  kind: "full" | "incremental";
  /** Virtual size of the device in bytes. */
  size: number;
  /** Bytes read from the source. */
  bytesRead: number;
  /** Data bytes written to the backup. */
  bytesWritten: number;
  /** Bytes stored as zeros (zero clusters, holes). */
  bytesZeroed: number;
  /** Size of the stored image file. */
  fileSize: number;
  /** Seconds the copy took. */
  seconds: number;
}

/** Statistics returned by {@link BackupProvider.backupCleanup}. */
export interface BackupStats {
  /** Bytes the backup occupies on the backup storage. */
  archiveSize: number;
  /** Per device, when the provider tracks it. */
  devices?: Record<string, DeviceBackupStats>;
}

/** How a backup is restored: VMs via `qemu-img`, containers via `tar` or `directory`. */
export type RestoreMechanism = "qemu-img" | "tar" | "directory";

/** One device of a VM backup. */
export interface RestoreDevice {
  /** Virtual size in bytes. */
  size: number;
}

/** What a VM volume restore reads. */
export interface RestoreVolumeSource {
  /** An absolute file path, or an NBD URI, that `qemu-img` (or volt's NBD engine) can read. */
  qemuImgPath: string;
  /**
   * Format of a file path: `qcow2` (default; its backing chain is checked before qemu opens
   * it) or `raw`. An NBD URI is always read as raw.
   */
  format?: "qcow2" | "raw";
  /**
   * Every link of a qcow2 chain must resolve inside this directory (default: the image's own
   * directory). The built-in provider gives the guest's backup directory.
   */
  chainRoot?: string;
  /** Longest backing chain accepted (default 1: no backing file). */
  maxChainDepth?: number;
}

/** One problem {@link BackupProvider.archiveVerify} found. */
export interface VerifyProblem {
  /** The file concerned, relative to the backup. */
  file?: string;
  /** One line for the user. */
  message: string;
}

/** The result of {@link BackupProvider.archiveVerify}. */
export interface VerifyReport {
  /** No problem found. */
  ok: boolean;
  /** In the order found; the first is the one `volt verify` reports. */
  problems: VerifyProblem[];
  /** What was checked, e.g. files and bytes hashed (for the summary). */
  checked: { files: number; bytes: number; images: number };
}

/** volt's addition to {@link BackupProvider.restoreContainerInit} (optional argument). */
export interface RestoreContainerInfo {
  /** Fires when the restore is cancelled (SIGINT/SIGTERM) while the init prepares the data. */
  signal?: AbortSignal;
}

/** What a container restore reads. */
export interface RestoreContainerSource {
  /** `tar` mechanism: a (possibly compressed) tar archive. */
  tarPath?: string;
  /** `directory` mechanism: a directory with the container's file system. */
  archiveDirectory?: string;
}

/**
 * A backup provider. volt calls its methods in the order drawn in docs/backup-providers.md.
 * Every `*Cleanup` method is called whenever its `*Init` was called, also after a failure.
 */
export interface BackupProvider {
  /** Shown in logs. */
  readonly providerName: string;

  // --- job ---
  /** A backup job starts (one or more guests). */
  jobInit(startTime: number): Promise<void>;
  /** The job ended, successfully or not. Always called after `jobInit`. */
  jobCleanup(): Promise<void>;

  // --- one guest ---
  /** A guest's backup starts; returns the archive name (the volume name without storage). */
  backupInit(vmid: number, type: GuestType, startTime: number): Promise<{ archiveName: string }>;
  /**
   * The guest's backup ended. `success` false: remove everything of this backup. Returns
   * statistics. Always called after `backupInit`; volt consumes dirty bitmaps only after this
   * returned with `success` true.
   */
  backupCleanup(
    vmid: number,
    type: GuestType,
    success: boolean,
    info: { error?: string },
  ): Promise<{ stats: BackupStats }>;
  /** Which mechanism to use for this guest. */
  backupGetMechanism(
    vmid: number,
    type: GuestType,
  ): Promise<VmBackupMechanism | ContainerBackupMechanism>;
  /** Keep the task log with the backup (called after `backupCleanup`, also after a failure). */
  backupHandleLogFile(vmid: number, logPath: string): Promise<void>;

  // --- VMs ---
  /** For each device (name → size), whether to start a new bitmap or use the existing one. */
  backupVmQueryIncremental(
    vmid: number,
    devices: Record<string, number>,
  ): Promise<Record<string, IncrementalChoice>>;
  /** Back up the VM: its configuration and every volume. */
  backupVm(
    vmid: number,
    guestConfig: string,
    volumes: VmVolume[],
    info: VmBackupInfo,
  ): Promise<void>;

  // --- containers (optional: a provider without backupContainer backs up VMs only) ---
  /** Prepare a container backup (e.g. hand the working area to `backupUserId`). */
  backupContainerPrepare?(vmid: number, info: ContainerBackupInfo): Promise<void>;
  /**
   * Back up a container: its configuration and `info.directory` without what
   * `excludePatterns` match (vzdump's: `/path` anchored at the container's root, anything
   * else at any depth).
   */
  backupContainer?(
    vmid: number,
    guestConfig: string,
    excludePatterns: string[],
    info: ContainerBackupInfo,
  ): Promise<void>;

  // --- restore ---
  /** How the backup `volname` (the volume name without storage) is restored, and its guest type. */
  restoreGetMechanism(volname: string): Promise<{ mechanism: RestoreMechanism; type: GuestType }>;
  /** The guest configuration stored with the backup, byte for byte. */
  archiveGetGuestConfig(volname: string): Promise<string>;
  /** The firewall configuration stored with the backup, if there is one. */
  archiveGetFirewallConfig(volname: string): Promise<string | undefined>;
  /** Devices in the backup and their sizes. */
  restoreVmInit(volname: string): Promise<Record<string, RestoreDevice>>;
  /** The restore ended, successfully or not. Always called after `restoreVmInit`. */
  restoreVmCleanup(volname: string): Promise<void>;
  /** Make one device readable; volt checks and copies it, then calls the cleanup. */
  restoreVmVolumeInit(volname: string, device: string): Promise<RestoreVolumeSource>;
  /** Always called after `restoreVmVolumeInit` of the same device. */
  restoreVmVolumeCleanup(volname: string, device: string): Promise<void>;
  /**
   * Make a container backup readable: `tarPath` for the `tar` mechanism, `archiveDirectory`
   * for `directory`. Required (with its cleanup) to restore containers.
   */
  restoreContainerInit?(
    volname: string,
    info?: RestoreContainerInfo,
  ): Promise<RestoreContainerSource>;
  /** Always called after `restoreContainerInit`. */
  restoreContainerCleanup?(volname: string): Promise<void>;

  // --- volt's addition (optional) ---
  /**
   * Checks a stored backup (checksums, image consistency, chain) without changing it; used by
   * `volt verify`. Resolves to a report; rejects only when the check itself cannot run.
   */
  archiveVerify?(volname: string): Promise<VerifyReport>;
}

/** A storage plugin with the `backup-provider` feature has this method. */
export interface BackupProviderFactory {
  newBackupProvider(storage: Storage, log: LogFunction): BackupProvider | Promise<BackupProvider>;
}

/** Methods every backup provider must have (checked when a provider is created). */
export const REQUIRED_PROVIDER_METHODS: readonly string[] = [
  "jobInit",
  "jobCleanup",
  "backupInit",
  "backupCleanup",
  "backupGetMechanism",
  "backupHandleLogFile",
  "backupVmQueryIncremental",
  "backupVm",
  "restoreGetMechanism",
  "archiveGetGuestConfig",
  "archiveGetFirewallConfig",
  "restoreVmInit",
  "restoreVmCleanup",
  "restoreVmVolumeInit",
  "restoreVmVolumeCleanup",
];
