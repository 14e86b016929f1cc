/**
 * Restoring a VM backup through its provider (`docs/backup-providers.md`): new volumes are
 * allocated on the target storage, each disk is copied from what the provider makes readable
 * (after its backing chain was checked, so qemu never opens a file it should not), and the
 * guest configuration is written with its disk lines pointing at the new volumes. Any failure
 * frees every volume allocated so far and writes no configuration.
 *
 * Also the steps every restore shares: opening the backup ({@link openBackupForRestore}, which
 * says whether it is a VM or a container backup: containers are restored by
 * `container_restore.ts`) and writing the configurations ({@link writeRestoredConfigs}).
 *
 * @module
 */

import type { LogFunction } from "../../plugins/api.ts";
import type {
  BackupProvider,
  GuestType,
  RestoreMechanism,
  RestoreVolumeSource,
} from "../../plugins/backup_api.ts";
import { voltHome } from "../config/storage_config.ts";
import { errorLine, VoltError } from "../errors.ts";
import { InterruptedError } from "../signals.ts";
import type { Storages } from "../storage/storages.ts";
import { assertSafeBackupChain } from "./chain_guard.ts";
import { type RestoredDisk, rewriteGuestConfig } from "./guest_config.ts";
import { syncDir, writeFileDurably } from "./manifest.ts";
import { openBackupProvider } from "./open_provider.ts";
import { pathExists } from "../fs.ts";

/** A backup opened for restore: its provider, and how and as what it is restored. */
export interface OpenedBackup {
  /** The backup's volume id. */
  volid: string;
  /** Its volume name (without the storage). */
  volname: string;
  provider: BackupProvider;
  mechanism: RestoreMechanism;
  type: GuestType;
}

/**
 * Opens the backup `volid` through its storage's provider and asks it how the backup is
 * restored (`restoreGetMechanism`). Throws a {@link VoltError} when `volid` is not a backup
 * or the provider answers a type or mechanism that do not go together.
 */
export async function openBackupForRestore(
  storages: Storages,
  volid: string,
  log: LogFunction,
): Promise<OpenedBackup> {
  const b = await storages.volume(volid);
  if (b.name.vtype !== "backup") throw new VoltError(`'${volid}' is not a backup`);
  const provider = await openBackupProvider(b, log);
  const answer = await provider.restoreGetMechanism(b.volname);
  const { mechanism, type } = answer ?? {};
  const fits = type === "qemu"
    ? mechanism === "qemu-img"
    : type === "lxc" && (mechanism === "tar" || mechanism === "directory");
  if (!fits) {
    throw new VoltError(
      `the provider of '${volid}' says it is a '${String(type)}' backup restored with ` +
        `'${String(mechanism)}': volt restores qemu (qemu-img) and lxc (tar, directory) backups`,
    );
  }
  return { volid, volname: b.volname, provider, mechanism, type };
}

/** Where a restore writes the guest's configurations. */
export interface ConfigTargets {
  /** The guest configuration. */
  config: string;
  /** The firewall configuration, when the backup has one. */
  firewall?: string;
}

/**
 * Refuses (unless `force`) configuration files that exist: they belong to a guest.
 */
export async function checkConfigTargets(
  targets: ConfigTargets,
  vmid: number,
  force: boolean | undefined,
): Promise<void> {
  for (const p of [targets.config, targets.firewall]) {
    if (p !== undefined && !force && (await pathExists(p))) {
      throw new VoltError(
        `'${p}' exists (guest ${vmid} has a configuration): choose another vmid, or pass --force`,
      );
    }
  }
}

/**
 * Writes the guest configuration and the firewall configuration (if any) all or nothing:
 * both are first written durably beside their targets (`<target>.restoring`), then renamed
 * into place, the firewall first and the guest configuration last. A failure before the
 * renames removes the staged files and leaves existing configurations (`--force`) untouched;
 * a rename that fails removes the staged files not yet renamed.
 */
export async function writeRestoredConfigs(
  targets: ConfigTargets,
  guestConfig: string,
  firewallConfig: string | undefined,
): Promise<void> {
  const files: [string, string][] = [];
  if (targets.firewall !== undefined && firewallConfig !== undefined) {
    files.push([targets.firewall, firewallConfig]);
  }
  files.push([targets.config, guestConfig]);
  const staged: string[] = [];
  try {
    for (const [path, text] of files) {
      await Deno.mkdir(dirname(path), { recursive: true });
      staged.push(`${path}.restoring`);
      await writeFileDurably(staged.at(-1)!, new TextEncoder().encode(text));
    }
  } catch (err) {
    for (const s of staged) await Deno.remove(s).catch(() => {});
    throw err;
  }
  let renamed = 0;
  try {
    for (const [path] of files) {
      await Deno.rename(staged[renamed], path);
      renamed++;
      await syncDir(dirname(path));
    }
  } catch (err) {
    // Nothing staged stays behind, even when a rename fails half way.
    for (const s of staged.slice(renamed)) await Deno.remove(s).catch(() => {});
    throw err;
  }
}

/** Options of {@link runRestore}. */
export interface RestoreOptions {
  storages: Storages;
  /** The backup's volume id (`backup:backup/100/qemu-1700000000`). */
  backup: string;
  /** The backup already opened with {@link openBackupForRestore} (default: opened here). */
  opened?: OpenedBackup;
  /** The guest id to restore as. */
  vmid: number;
  /** The storage for the new volumes. */
  storage: string;
  /** Image format of the new volumes (default: the storage's). */
  format?: string;
  /** Where the guest configuration goes (default `$VOLT_HOME/qemu-server/<vmid>.conf`). */
  configOut?: string;
  /** Where the firewall configuration goes (default `$VOLT_HOME/firewall/<vmid>.fw`). */
  firewallOut?: string;
  /** Overwrite existing configuration files. */
  force?: boolean;
  log?: LogFunction;
  progress?: (device: string, done: number, total: number) => void;
  signal?: AbortSignal;
}

/** What a restore did. */
export interface RestoreResult {
  /** New volume id by device. */
  volumes: Record<string, string>;
  /** The guest configuration written. */
  config: string;
  /** The firewall configuration written, if the backup had one. */
  firewall?: string;
  /** Bytes of disk restored (virtual sizes). */
  bytes: number;
  seconds: number;
}

/**
 * Restores a VM backup as guest `vmid`. Rejects with one line and leaves nothing behind: no
 * volume, no configuration. A container backup is refused (see `runContainerRestore`).
 *
 * @example
 * ```ts ignore
 * import { runRestore } from "./restore.ts";
 * const r = await runRestore({ storages, backup: "backup:backup/100/qemu-1700000000",
 *   vmid: 200, storage: "local" });
 * console.log(r.volumes.scsi0, r.config);
 * ```
 */
export async function runRestore(o: RestoreOptions): Promise<RestoreResult> {
  const t0 = performance.now();
  const log: LogFunction = o.log ?? (() => {});
  const b = o.opened ?? await openBackupForRestore(o.storages, o.backup, log);
  const provider = b.provider;
  if (b.type !== "qemu") {
    throw new VoltError(
      `'${o.backup}' is a container backup, not a VM backup: restore it as a container`,
    );
  }
  const target = await o.storages.get(o.storage);
  const content = (target.storage.options.content as string[] | undefined) ??
    [...target.plugin.content.default];
  if (!content.includes("images")) {
    throw new VoltError(
      `storage '${o.storage}' does not hold disk images (content ${content.join(",")})`,
    );
  }
  const format = o.format ?? (target.storage.options.format as string | undefined) ??
    target.plugin.formats?.default ?? "raw";
  if (format !== "raw" && format !== "qcow2") {
    throw new VoltError(`restore writes raw or qcow2 volumes, not '${format}'`);
  }
  const guestConfig = await provider.archiveGetGuestConfig(b.volname);
  const firewallConfig = await provider.archiveGetFirewallConfig(b.volname);
  const home = voltHome();
  const configPath = o.configOut ?? `${home}/qemu-server/${o.vmid}.conf`;
  const firewallPath = firewallConfig === undefined
    ? undefined
    : o.firewallOut ?? `${home}/firewall/${o.vmid}.fw`;
  const targets: ConfigTargets = { config: configPath, firewall: firewallPath };
  await checkConfigTargets(targets, o.vmid, o.force);

  const allocated: string[] = [];
  const volumes: Record<string, string> = {};
  const disks: Record<string, RestoredDisk> = {};
  let bytes = 0;
  let failure: unknown;
  let initCalled = false;
  try {
    initCalled = true;
    const devices = await provider.restoreVmInit(b.volname);
    for (const device of Object.keys(devices).sort()) {
      const size = devices[device].size;
      if (!Number.isSafeInteger(size) || size <= 0) {
        throw new VoltError(`the provider reports size ${size} for ${device}`);
      }
      o.signal?.throwIfAborted();
      let volumeInit = false;
      try {
        volumeInit = true;
        const src = await provider.restoreVmVolumeInit(b.volname, device);
        const source = await checkedSource(src, device);
        const volname = await target.plugin.allocImage(
          target.storage,
          o.vmid,
          format,
          undefined,
          size,
        );
        const volid = `${o.storage}:${volname}`;
        allocated.push(volname);
        const dest = target.plugin.path(target.storage, volname);
        log("info", `${device}: restoring into ${volid}`);
        await convert(source, dest, format, {
          signal: o.signal,
          progress: o.progress
            ? (pct) => o.progress!(device, Math.round(size * pct / 100), size)
            : undefined,
        });
        o.progress?.(device, size, size);
        volumes[device] = volid;
        disks[device] = { volid, size };
        bytes += size;
      } finally {
        if (volumeInit) {
          await provider.restoreVmVolumeCleanup(b.volname, device).catch((err) =>
            log("warn", `restoreVmVolumeCleanup of ${device} failed: ${errorLine(err)}`)
          );
        }
      }
    }
    o.signal?.throwIfAborted();
    await writeRestoredConfigs(targets, rewriteGuestConfig(guestConfig, disks), firewallConfig);
  } catch (err) {
    failure = err;
  } finally {
    if (initCalled) {
      await provider.restoreVmCleanup(b.volname).catch((err) =>
        log("warn", `restoreVmCleanup failed: ${errorLine(err)}`)
      );
    }
  }
  if (failure !== undefined) {
    for (const volname of allocated.reverse()) {
      try {
        await target.plugin.freeImage(target.storage, volname);
      } catch (err) {
        log("warn", `could not free ${o.storage}:${volname}: ${errorLine(err)}`);
      }
    }
    if (o.signal?.aborted) {
      throw new InterruptedError(`restore of ${o.backup}`, String(o.signal.reason));
    }
    throw new VoltError(`restore of ${o.backup} failed: ${errorLine(failure)}`, { cause: failure });
  }
  return {
    volumes,
    config: configPath,
    ...(firewallPath !== undefined ? { firewall: firewallPath } : {}),
    bytes,
    seconds: (performance.now() - t0) / 1000,
  };
}

/** A source qemu-img may open: an NBD URI, or a file whose chain was checked. */
interface CheckedSource {
  path: string;
  format: "qcow2" | "raw";
}

async function checkedSource(src: RestoreVolumeSource, device: string): Promise<CheckedSource> {
  const p = src?.qemuImgPath;
  if (typeof p !== "string" || p === "") {
    throw new VoltError(`the provider gave no path for ${device}`);
  }
  if (/^nbds?(\+(unix|tcp|vsock))?:\/\//.test(p)) return { path: p, format: "raw" };
  if (!p.startsWith("/")) {
    throw new VoltError(`the provider gave '${p}' for ${device}: not an absolute path or NBD URI`);
  }
  if (/^[a-z][a-z0-9+.-]*:/i.test(p) || p.startsWith("json:")) {
    throw new VoltError(`the provider gave '${p}' for ${device}: a protocol or json: name`);
  }
  const format = src.format ?? "qcow2";
  if (format === "raw") {
    const st = await Deno.stat(p).catch(() => undefined);
    if (!st?.isFile) throw new VoltError(`${device}: '${p}' is not a regular file`);
    return { path: p, format };
  }
  // Walk the whole chain from the headers before qemu sees any of it.
  await assertSafeBackupChain(p, {
    root: src.chainRoot ?? dirname(p),
    maxDepth: Math.max(1, src.maxChainDepth ?? 1),
  });
  return { path: p, format: "qcow2" };
}

/** `qemu-img convert` into an allocated volume, with progress and cancellation. */
async function convert(
  src: CheckedSource,
  dest: string,
  format: string,
  o: { signal?: AbortSignal; progress?: (percent: number) => void },
): Promise<void> {
  const args = ["convert", "-p", "-n", "-f", src.format, "-O", format];
  if (await readsAsZero(dest, format)) args.push("--target-is-zero");
  args.push(src.path, dest);
  const child = new Deno.Command("qemu-img", {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: o.signal,
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of child.stdout) {
    pending += decoder.decode(chunk, { stream: true });
    const all = [...pending.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)];
    if (all.length > 0) {
      o.progress?.(Number(all[all.length - 1][1]));
      pending = pending.slice(all[all.length - 1].index! + all[all.length - 1][0].length);
    }
  }
  const status = await child.status;
  if (!status.success) {
    const msg = (await stderr).trim().split("\n").filter(Boolean).at(-1) ?? `exit ${status.code}`;
    if (o.signal?.aborted) throw new VoltError("qemu-img convert was interrupted");
    throw new VoltError(`qemu-img convert failed: ${msg}`);
  }
}

/** Whether a freshly allocated volume reads as zeros (so qemu-img can skip zero ranges). */
async function readsAsZero(path: string, format: string): Promise<boolean> {
  try {
    if (format === "raw") {
      const st = await Deno.stat(path);
      return st.isFile && (st.blocks ?? 1) === 0;
    }
    const out = await new Deno.Command("qemu-img", {
      args: ["map", "-f", "qcow2", "--output=json", path],
      stdout: "piped",
      stderr: "null",
    }).output();
    if (!out.success) return false;
    const map = JSON.parse(new TextDecoder().decode(out.stdout)) as {
      data: boolean;
      zero: boolean;
    }[];
    return map.every((e) => !e.data || e.zero);
  } catch {
    return false;
  }
}

function dirname(path: string): string {
  return path.slice(0, path.lastIndexOf("/")) || "/";
}
