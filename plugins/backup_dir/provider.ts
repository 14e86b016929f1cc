/**
 * The backup provider of the directory backup storage (`backup-dir`): the seed's example done
 * properly. Each VM backup is a directory `<path>/<vmid>/qemu-<epoch>/` with the guest and
 * firewall configuration, one qcow2 image per disk (an incremental one backed by the previous
 * backup's image of the disk, by relative path), the task log, and a checksummed manifest
 * written last. A container backup (`lxc-<epoch>/`, mechanism `directory`) holds the
 * configurations and one archive of the file system: `archive.tar` (GNU tar with Proxmox's
 * flags) or, with `lxc-backup-mode squashfs`, `archive.sqfs`. A backup is written in
 * `.tmp-<type>-<epoch>/` and renamed into place only in `backupCleanup(success = true)`; a
 * failed one is removed. See `docs/backup-providers.md`.
 *
 * Restoring a container: an `archive.tar` is handed out as it is (mechanism `tar`); an
 * `archive.sqfs` is unpacked with `unsquashfs` into `<path>/.tmp-restore-<vmid>-<pid>-<start>-<rnd>/`
 * (mechanism `directory`), removed again by `restoreContainerCleanup`. Unpacking rather than
 * mounting: a loop mount needs root, loop devices and the squashfs module, and a mount left by
 * a killed volt would make the directory impossible to remove; unpacking costs a second copy.
 * A volt killed with SIGKILL during such a restore leaves that directory behind; its name
 * carries the restore's pid and start time, and the next container restore from this storage
 * removes it once that process is gone (never one a running restore uses).
 *
 * @module
 */

import type { LogFunction, Storage } from "../api.ts";
import type {
  BackupProvider,
  BackupStats,
  ContainerBackupInfo,
  ContainerBackupMechanism,
  DeviceBackupStats,
  GuestType,
  IncrementalChoice,
  RestoreContainerInfo,
  RestoreContainerSource,
  RestoreDevice,
  RestoreMechanism,
  RestoreVolumeSource,
  VerifyReport,
  VmBackupInfo,
  VmBackupMechanism,
  VmVolume,
} from "../backup_api.ts";
import { VoltError } from "../../lib/errors.ts";
import {
  ARCHIVE_FILES,
  type ArchiveFormat,
  fileEntry,
  LOG_NAME,
  type Manifest,
  MANIFEST_VERSION,
  type ManifestArchive,
  type ManifestDevice,
  type ManifestFile,
  readManifest,
  syncDir,
  writeFileDurably,
  writeManifest,
} from "../../lib/backup/manifest.ts";
import { fileDigest } from "../../lib/backup/checksum.ts";
import { verifyBackupDir } from "../../lib/backup/verify.ts";
import {
  createContainerArchive,
  extractContainerArchive,
} from "../../lib/backup/container_archive.ts";
import { copyVolume } from "./copy_volume.ts";
import {
  backupVolname,
  guestDir,
  listGuestBackups,
  parseBackupVolname,
  readPreviousInfo,
  type StoredBackup,
  TEMP_PREFIX,
} from "./layout.ts";
import { lockGuest } from "./guest_lock.ts";
import { pathExists } from "../../lib/fs.ts";
import { faultPoint } from "../../lib/fault_point.ts";
import { processStart, stillRunning } from "../../lib/process_start.ts";

/** File names inside a backup. */
export const GUEST_CONFIG = "guest.conf";
/** The firewall configuration, when the guest has one. */
export const FIREWALL_CONFIG = "firewall.conf";

/** One guest's backup in progress. */
interface GuestBackup {
  vmid: number;
  type: GuestType;
  dirName: string;
  time: number;
  guestDir: string;
  tempDir: string;
  finalDir: string;
  lock: Disposable;
  previous?: StoredBackup;
  devices: Record<string, ManifestDevice>;
  stats: Record<string, DeviceBackupStats>;
  /** Checksums computed while later disks are copied. */
  hashes: Promise<ManifestFile>[];
  /** Containers: the archive written by `backupContainer`. */
  archive?: ManifestArchive;
  committed: boolean;
  failed: boolean;
}

/** Options of a directory backup storage that the provider reads. */
function option(storage: Storage, name: string, dflt: string): string {
  const v = storage.options[name];
  return typeof v === "string" ? v : dflt;
}

/** `lxc-backup-mode`: how container file systems are archived (default `tar`). */
function containerArchiveFormat(storage: Storage): ArchiveFormat {
  const mode = option(storage, "lxc-backup-mode", "tar");
  if (mode !== "tar" && mode !== "squashfs") {
    throw new VoltError(
      `storage '${storage.id}': lxc-backup-mode '${mode}' is not one of tar, squashfs`,
    );
  }
  return mode;
}

/**
 * The provider. One instance serves one job (`newBackupProvider` is called per command).
 *
 * @example
 * ```ts ignore
 * import { DirBackupProvider } from "./provider.ts";
 * const p = new DirBackupProvider({ id: "backup", type: "backup-dir", options: { path: "/srv/b" } },
 *   (level, msg) => console.error(level, msg));
 * ```
 */
export class DirBackupProvider implements BackupProvider {
  readonly providerName = "volt directory backup";
  readonly #storage: Storage;
  readonly #root: string;
  readonly #log: LogFunction;
  readonly #guests = new Map<number, GuestBackup>();

  constructor(storage: Storage, log: LogFunction) {
    this.#storage = storage;
    this.#root = String(storage.options.path).replace(/\/+$/, "") || "/";
    this.#log = log;
  }

  // ---- job ----

  jobInit(_startTime: number): Promise<void> {
    return Promise.resolve();
  }

  async jobCleanup(): Promise<void> {
    // A guest whose cleanup was never called (a host bug) must not keep its lock.
    for (const g of this.#guests.values()) {
      g.lock[Symbol.dispose]();
      await Deno.remove(g.tempDir, { recursive: true }).catch(() => {});
    }
    this.#guests.clear();
  }

  // ---- one guest ----

  async backupInit(
    vmid: number,
    type: GuestType,
    startTime: number,
  ): Promise<{ archiveName: string }> {
    if (type !== "qemu" && type !== "lxc") {
      throw new VoltError(`storage '${this.#storage.id}': unknown guest type '${String(type)}'`);
    }
    if (this.#guests.has(vmid)) throw new VoltError(`a backup of guest ${vmid} is already running`);
    const dir = guestDir(this.#root, vmid);
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    const lock = await lockGuest(dir, `backups of guest ${vmid} on '${this.#storage.id}'`);
    try {
      await this.#removeLeftovers(dir);
      const backups = await listGuestBackups(this.#root, vmid);
      // Two backups in the same second get consecutive times; names never collide.
      const time = Math.max(Math.floor(startTime), (backups.at(-1)?.time ?? -1) + 1);
      const dirName = `${type}-${time}`;
      const g: GuestBackup = {
        vmid,
        type,
        dirName,
        time,
        guestDir: dir,
        tempDir: `${dir}/${TEMP_PREFIX}${dirName}`,
        finalDir: `${dir}/${dirName}`,
        lock,
        devices: {},
        stats: {},
        hashes: [],
        committed: false,
        failed: false,
      };
      await Deno.mkdir(g.tempDir, { mode: 0o700 });
      this.#guests.set(vmid, g);
      return { archiveName: backupVolname(vmid, dirName) };
    } catch (err) {
      lock[Symbol.dispose]();
      throw err;
    }
  }

  /** Removes working directories of interrupted backups (safe: we hold the guest's lock). */
  async #removeLeftovers(dir: string): Promise<void> {
    for await (const e of Deno.readDir(dir)) {
      if (!e.name.startsWith(TEMP_PREFIX)) continue;
      this.#log("info", `removing '${e.name}', left by an interrupted backup or removal`);
      await Deno.remove(`${dir}/${e.name}`, { recursive: true });
    }
  }

  backupGetMechanism(
    _vmid: number,
    type: GuestType,
  ): Promise<VmBackupMechanism | ContainerBackupMechanism> {
    if (type === "lxc") return Promise.resolve("directory");
    const m = option(this.#storage, "vm-backup-mechanism", "nbd");
    return Promise.resolve(m === "file-handle" ? "file-handle" : "nbd");
  }

  async backupVmQueryIncremental(
    vmid: number,
    devices: Record<string, number>,
  ): Promise<Record<string, IncrementalChoice>> {
    const g = this.#guest(vmid);
    const out: Record<string, IncrementalChoice> = {};
    const incremental = option(this.#storage, "vm-backup-mode", "incremental") === "incremental";
    const info = incremental ? await readPreviousInfo(g.guestDir) : undefined;
    if (info) {
      const backups = await listGuestBackups(this.#root, vmid);
      g.previous = backups.find((b) => b.dirName === info.backup);
    }
    for (const [dev, size] of Object.entries(devices)) {
      const prev = g.previous?.manifest.devices[dev];
      out[dev] = prev && prev.size === size ? "use" : "new";
    }
    return out;
  }

  async backupVm(
    vmid: number,
    guestConfig: string,
    volumes: VmVolume[],
    info: VmBackupInfo,
  ): Promise<void> {
    const g = this.#guest(vmid);
    if (g.type !== "qemu") throw new VoltError(`the backup of guest ${vmid} is not a VM backup`);
    await this.#writeConfigs(g, guestConfig, info.firewallConfig);
    for (const vol of volumes) {
      const file = `${vol.device}.qcow2`;
      const base = g.previous?.manifest.devices[vol.device];
      const incremental = vol.bitmapMode === "reuse" && base !== undefined &&
        base.size === vol.size;
      const backingFile = incremental ? `../${g.previous!.dirName}/${file}` : undefined;
      this.#log(
        "info",
        `${vol.device}: ${
          incremental ? `incremental on ${g.previous!.dirName}` : "full"
        } backup of ${vol.size} bytes (bitmap: ${vol.bitmapMode})`,
      );
      const r = await copyVolume(vol, {
        target: `${g.tempDir}/${file}`,
        backingFile,
        bandwidthLimit: info.bandwidthLimit,
        progress: info.progress
          ? (done, total) => info.progress!(vol.device, done, total)
          : undefined,
        signal: info.signal,
      });
      g.devices[vol.device] = {
        file,
        size: vol.size,
        kind: r.kind,
        clusterSize: r.clusterSize,
        ...(backingFile !== undefined ? { backing: backingFile } : {}),
      };
      const { clusterSize: _, digest, ...stats } = r;
      g.stats[vol.device] = stats;
      // Most of the image was hashed during the copy; the rest is hashed while the next disk
      // is copied.
      const hash = digest.then((d) => ({ name: file, size: d.size, digest: d.digest }));
      hash.catch(() => {});
      g.hashes.push(hash);
    }
  }

  /**
   * Checks, before anything is written, that the storage's `lxc-backup-mode` can hold what is
   * asked (a squashfs image holds one tree: no extra sources). `backupUserId` is not used:
   * volt runs the archiver as itself (root), with numeric owners.
   */
  backupContainerPrepare(vmid: number, info: ContainerBackupInfo): Promise<void> {
    const g = this.#guest(vmid);
    if (g.type !== "lxc") {
      return Promise.reject(new VoltError(`the backup of guest ${vmid} is not a container backup`));
    }
    const format = containerArchiveFormat(this.#storage);
    const sources = info.sources ?? ["."];
    if (format === "squashfs" && !(sources.length === 1 && sources[0] === ".")) {
      return Promise.reject(
        new VoltError(
          `storage '${this.#storage.id}' (lxc-backup-mode squashfs) archives one tree, not ` +
            `${sources.join(", ")}: use lxc-backup-mode tar`,
        ),
      );
    }
    return Promise.resolve();
  }

  async backupContainer(
    vmid: number,
    guestConfig: string,
    excludePatterns: string[],
    info: ContainerBackupInfo,
  ): Promise<void> {
    const g = this.#guest(vmid);
    if (g.type !== "lxc") {
      throw new VoltError(`the backup of guest ${vmid} is not a container backup`);
    }
    await this.#writeConfigs(g, guestConfig, info.firewallConfig);
    const format = containerArchiveFormat(this.#storage);
    const file = ARCHIVE_FILES[format];
    this.#log("info", `archiving ${info.directory} (${format})`);
    const r = await createContainerArchive({
      format,
      directory: info.directory,
      target: `${g.tempDir}/${file}`,
      sources: info.sources,
      excludePatterns,
      bandwidthLimit: info.bandwidthLimit,
      signal: info.signal,
      log: (line) => this.#log("warn", line),
    });
    await Deno.chmod(`${g.tempDir}/${file}`, 0o600);
    g.archive = { file, format };
    this.#log("info", `${file}: ${r.size} bytes`);
  }

  /** guest.conf and firewall.conf, byte for byte. */
  async #writeConfigs(g: GuestBackup, guestConfig: string, firewallConfig?: string) {
    await writeFileDurably(`${g.tempDir}/${GUEST_CONFIG}`, new TextEncoder().encode(guestConfig));
    if (firewallConfig !== undefined) {
      await writeFileDurably(
        `${g.tempDir}/${FIREWALL_CONFIG}`,
        new TextEncoder().encode(firewallConfig),
      );
    }
  }

  async backupCleanup(
    vmid: number,
    _type: GuestType,
    success: boolean,
    info: { error?: string },
  ): Promise<{ stats: BackupStats }> {
    const g = this.#guests.get(vmid);
    if (!g) return { stats: { archiveSize: 0 } }; // backupInit failed: nothing to clean up.
    try {
      if (!success) {
        g.failed = true;
        await this.#discard(g, info.error);
        return { stats: { archiveSize: 0 } };
      }
      const archiveSize = await this.#commit(g);
      return { stats: g.type === "qemu" ? { archiveSize, devices: g.stats } : { archiveSize } };
    } finally {
      g.lock[Symbol.dispose]();
    }
  }

  async #discard(g: GuestBackup, error?: string): Promise<void> {
    await Promise.allSettled(g.hashes);
    await Deno.remove(g.tempDir, { recursive: true }).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    });
    this.#log(
      "info",
      `backup of guest ${g.vmid} failed${
        error ? ` (${error})` : ""
      }: removed its working directory`,
    );
  }

  /** Manifest, rename into place, `previous-info` (VMs). Returns the archive size. */
  async #commit(g: GuestBackup): Promise<number> {
    try {
      if (g.type === "qemu" && Object.keys(g.devices).length === 0) {
        throw new VoltError("the backup holds no disk");
      }
      if (g.type === "lxc" && !g.archive) throw new VoltError("the backup holds no archive");
      const files = await Promise.all(g.hashes);
      if (g.archive) files.push(await fileEntry(g.tempDir, g.archive.file));
      files.push(await fileEntry(g.tempDir, GUEST_CONFIG));
      try {
        files.push(await fileEntry(g.tempDir, FIREWALL_CONFIG));
      } catch (err) {
        if (!(await pathExists(`${g.tempDir}/${FIREWALL_CONFIG}`))) {
          // No firewall configuration: fine.
        } else throw err;
      }
      const incremental = Object.values(g.devices).some((d) => d.kind === "incremental");
      const manifest: Manifest = {
        format: "volt-backup",
        version: MANIFEST_VERSION,
        type: g.type,
        vmid: g.vmid,
        time: g.time,
        ...(incremental ? { parent: g.previous!.dirName } : {}),
        devices: g.devices,
        ...(g.archive ? { archive: g.archive } : {}),
        files,
      };
      await writeManifest(g.tempDir, manifest);
      await Deno.rename(g.tempDir, g.finalDir);
    } catch (err) {
      await Deno.remove(g.tempDir, { recursive: true }).catch(() => {});
      throw err;
    }
    // previous-info is about the VM disks' dirty bitmaps: a container backup leaves it alone.
    if (g.type === "qemu") await this.#recordPrevious(g);
    g.committed = true;
    let size = 0;
    for await (const e of Deno.readDir(g.finalDir)) {
      size += (await Deno.stat(`${g.finalDir}/${e.name}`)).size;
    }
    this.#log("info", `backup ${backupVolname(g.vmid, g.dirName)} committed (${size} bytes)`);
    return size;
  }

  /** Records the committed VM backup in `previous-info`; undoes the commit if that fails. */
  async #recordPrevious(g: GuestBackup): Promise<void> {
    try {
      await syncDir(g.guestDir);
      await writeFileDurably(
        `${g.guestDir}/previous-info`,
        new TextEncoder().encode(`${JSON.stringify({ backup: g.dirName })}\n`),
      );
    } catch (err) {
      // Not committed after all: take the backup back out of the listing.
      await Deno.rename(g.finalDir, g.tempDir).catch(() => {});
      await Deno.remove(g.tempDir, { recursive: true }).catch(() => {});
      throw err;
    }
  }

  async backupHandleLogFile(vmid: number, logPath: string): Promise<void> {
    const g = this.#guests.get(vmid);
    if (!g) return;
    this.#guests.delete(vmid);
    const data = await Deno.readFile(logPath);
    if (g.committed) {
      await writeFileDurably(`${g.finalDir}/${LOG_NAME}`, data);
    } else {
      // Nothing of a failed backup remains but its log, kept where no listing looks.
      await writeFileDurably(`${g.guestDir}/last-failed-backup.log`, data);
    }
  }

  #guest(vmid: number): GuestBackup {
    const g = this.#guests.get(vmid);
    if (!g) throw new VoltError(`internal error: no backup of guest ${vmid} was started`);
    return g;
  }

  // ---- restore ----

  /** Finished backups looked up by restore, by volume name (one command: no staleness). */
  readonly #storedCache = new Map<string, Promise<StoredBackup & { all: StoredBackup[] }>>();

  #stored(volname: string): Promise<StoredBackup & { all: StoredBackup[] }> {
    let found = this.#storedCache.get(volname);
    if (!found) {
      found = this.#lookup(volname);
      this.#storedCache.set(volname, found);
      found.catch(() => this.#storedCache.delete(volname));
    }
    return found;
  }

  async #lookup(volname: string): Promise<StoredBackup & { all: StoredBackup[] }> {
    const b = parseBackupVolname(volname);
    const all = await listGuestBackups(this.#root, b.vmid);
    const found = all.find((x) => x.dirName === b.dirName);
    if (!found) {
      const dir = `${guestDir(this.#root, b.vmid)}/${b.dirName}`;
      try {
        await readManifest(dir);
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) {
          throw new VoltError(`backup '${this.#storage.id}:${volname}' does not exist`);
        }
        throw new VoltError(`backup '${this.#storage.id}:${volname}': ${(err as Error).message}`);
      }
      throw new VoltError(`backup '${this.#storage.id}:${volname}' is not a finished backup`);
    }
    return { ...found, all };
  }

  async restoreGetMechanism(
    volname: string,
  ): Promise<{ mechanism: RestoreMechanism; type: GuestType }> {
    const b = await this.#stored(volname);
    if (b.manifest.type === "qemu") return { mechanism: "qemu-img", type: "qemu" };
    return { mechanism: b.manifest.archive!.format === "tar" ? "tar" : "directory", type: "lxc" };
  }

  /** A finished backup of the given type, or a clear error naming what it is instead. */
  async #storedOfType(volname: string, type: GuestType) {
    const b = await this.#stored(volname);
    if (b.manifest.type !== type) {
      throw new VoltError(
        `backup '${this.#storage.id}:${volname}' is a ${
          b.manifest.type === "lxc" ? "container" : "VM"
        } backup, not a ${type === "lxc" ? "container" : "VM"} backup`,
      );
    }
    return b;
  }

  archiveGetGuestConfig(volname: string): Promise<string> {
    return this.#readConfig(volname, GUEST_CONFIG).then((t) => t ?? "");
  }

  archiveGetFirewallConfig(volname: string): Promise<string | undefined> {
    return this.#readConfig(volname, FIREWALL_CONFIG);
  }

  /** A configuration file of the backup, checked against the manifest. */
  async #readConfig(volname: string, name: string): Promise<string | undefined> {
    const b = await this.#stored(volname);
    const entry = b.manifest.files.find((f) => f.name === name);
    if (!entry) return undefined;
    const path = `${b.dir}/${name}`;
    const digest = await fileDigest(path);
    if (digest.digest !== entry.digest || digest.size !== entry.size) {
      throw new VoltError(
        `backup '${this.#storage.id}:${volname}': ${name} does not match its checksum in the manifest`,
      );
    }
    const bytes = await Deno.readFile(path);
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      throw new VoltError(`backup '${this.#storage.id}:${volname}': ${name} is not UTF-8`);
    }
  }

  async restoreVmInit(volname: string): Promise<Record<string, RestoreDevice>> {
    const b = await this.#storedOfType(volname, "qemu");
    const out: Record<string, RestoreDevice> = {};
    for (const [dev, d] of Object.entries(b.manifest.devices)) out[dev] = { size: d.size };
    return out;
  }

  restoreVmCleanup(_volname: string): Promise<void> {
    return Promise.resolve();
  }

  async restoreVmVolumeInit(volname: string, device: string): Promise<RestoreVolumeSource> {
    const b = await this.#storedOfType(volname, "qemu");
    const d = b.manifest.devices[device];
    if (!d) {
      throw new VoltError(`backup '${this.#storage.id}:${volname}' has no device '${device}'`);
    }
    return {
      qemuImgPath: `${b.dir}/${d.file}`,
      format: "qcow2",
      chainRoot: guestDir(this.#root, b.vmid),
      maxChainDepth: b.all.length,
    };
  }

  restoreVmVolumeCleanup(_volname: string, _device: string): Promise<void> {
    return Promise.resolve();
  }

  /** Unpacked squashfs archives by volume name, removed by `restoreContainerCleanup`. */
  readonly #unpacked = new Map<string, string>();

  /**
   * `archive.tar`: its path (mechanism `tar`). `archive.sqfs`: unpacked into a private
   * directory on this storage (mode 0700, so no one else reaches the setuid files in it), whose
   * `rootfs` is handed out (mechanism `directory`).
   */
  async restoreContainerInit(
    volname: string,
    info: RestoreContainerInfo = {},
  ): Promise<RestoreContainerSource> {
    const b = await this.#storedOfType(volname, "lxc");
    const archive = b.manifest.archive!;
    const path = `${b.dir}/${archive.file}`;
    if (archive.format === "tar") return { tarPath: path };
    if (this.#unpacked.has(volname)) {
      throw new VoltError(`backup '${this.#storage.id}:${volname}' is already being restored`);
    }
    await this.#sweepKilledRestores();
    // Named by its restore (pid and start time), so the next restore knows when it is stale.
    const work = await Deno.makeTempDir({
      dir: this.#root,
      prefix: `${TEMP_PREFIX}restore-${b.vmid}-${Deno.pid}-${processStart("self") ?? 0}-`,
    });
    this.#unpacked.set(volname, work);
    await Deno.chmod(work, 0o700);
    const rootfs = `${work}/rootfs`;
    await Deno.mkdir(rootfs);
    this.#log("info", `unpacking ${archive.file}`);
    await extractContainerArchive(path, rootfs, {
      format: "squashfs",
      signal: info.signal,
      log: (line) => this.#log("warn", line),
    });
    faultPoint("restore-unpacked");
    return { archiveDirectory: rootfs };
  }

  /**
   * Removes the unpack directories of restores killed outright (kill -9: no cleanup ran).
   * One whose restore still runs, or whose name carries no pid (older volt), is left alone.
   */
  async #sweepKilledRestores(): Promise<void> {
    const stale = /^\.tmp-restore-\d+-(\d+)-(\d+)-/;
    for await (const e of Deno.readDir(this.#root)) {
      const m = stale.exec(e.name);
      if (!e.isDirectory || !m || stillRunning(Number(m[1]), Number(m[2]))) continue;
      this.#log("info", `removing '${e.name}', left by a restore that was killed (pid ${m[1]})`);
      await Deno.remove(`${this.#root}/${e.name}`, { recursive: true });
    }
  }

  async restoreContainerCleanup(volname: string): Promise<void> {
    const work = this.#unpacked.get(volname);
    if (work === undefined) return;
    this.#unpacked.delete(volname);
    await Deno.remove(work, { recursive: true });
  }

  // ---- verify ----

  async archiveVerify(volname: string): Promise<VerifyReport> {
    const b = parseBackupVolname(volname);
    const dir = `${guestDir(this.#root, b.vmid)}/${b.dirName}`;
    if (!(await pathExists(dir))) {
      throw new VoltError(`backup '${this.#storage.id}:${volname}' does not exist`);
    }
    return verifyBackupDir(dir, { guestDir: guestDir(this.#root, b.vmid), type: b.type });
  }
}
