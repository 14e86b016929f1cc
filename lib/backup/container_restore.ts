/**
 * Restoring a container backup through its provider (`docs/backup-providers.md`): a new
 * subvolume is allocated on the target storage (`allocImage(…, "subvol", …)`, a directory
 * `images/<vmid>/subvol-<vmid>-disk-<n>.subvol` on a `dir` storage), the container's files
 * are put into it, and the guest configuration is written to `$VOLT_HOME/lxc/<vmid>.conf`
 * with its `rootfs:` line pointing at the new subvolume.
 *
 * - Mechanism `tar`: the provider gives a tar archive (`tarPath`, possibly compressed);
 *   volt extracts it with Proxmox's tar flags (numeric owners, permissions with setuid,
 *   ACLs, xattrs, sparse files), as `pct restore` does.
 * - Mechanism `directory`: the provider gives a directory (`archiveDirectory`); volt copies
 *   it with `cp --archive --sparse=always` (numeric owners, modes, timestamps, symlinks,
 *   hard links, every xattr and ACL, holes).
 *
 * `restoreContainerCleanup` runs whenever `restoreContainerInit` was called. Any failure
 * (or an interruption) frees the new subvolume and writes no configuration.
 *
 * @module
 */

import type { LogFunction } from "../../plugins/api.ts";
import { voltHome } from "../config/storage_config.ts";
import { errorLine, VoltError } from "../errors.ts";
import { InterruptedError } from "../signals.ts";
import type { Storages } from "../storage/storages.ts";
import { ArchiverProcess } from "./archiver_process.ts";
import { detectArchiveFormat, extractContainerArchive } from "./container_archive.ts";
import { rewriteContainerConfig } from "./guest_config.ts";
import {
  checkConfigTargets,
  type ConfigTargets,
  openBackupForRestore,
  type OpenedBackup,
  writeRestoredConfigs,
} from "./restore.ts";

/** Options of {@link runContainerRestore}. */
export interface ContainerRestoreOptions {
  storages: Storages;
  /** The backup's volume id (`backup:backup/100/lxc-1700000000`). */
  backup: string;
  /** The backup already opened with `openBackupForRestore` (default: opened here). */
  opened?: OpenedBackup;
  /** The guest id to restore as. */
  vmid: number;
  /** The storage for the new subvolume (content `rootdir`, format `subvol`). */
  storage: string;
  /** Where the guest configuration goes (default `$VOLT_HOME/lxc/<vmid>.conf`). */
  configOut?: string;
  /** Where the firewall configuration goes (default `$VOLT_HOME/firewall/<vmid>.fw`). */
  firewallOut?: string;
  /** Overwrite existing configuration files. */
  force?: boolean;
  log?: LogFunction;
  signal?: AbortSignal;
}

/** What a container restore did. */
export interface ContainerRestoreResult {
  /** The new root file system's volume id. */
  rootfs: string;
  /** How the files came: extracted from a tar archive, or copied from a directory. */
  mechanism: "tar" | "directory";
  /** The guest configuration written. */
  config: string;
  /** The firewall configuration written, if the backup had one. */
  firewall?: string;
  seconds: number;
}

/**
 * Restores a container backup as container `vmid`. Rejects with one line and leaves nothing
 * behind: no subvolume, no configuration. A VM backup is refused.
 *
 * @example
 * ```ts ignore
 * import { runContainerRestore } from "./container_restore.ts";
 * const r = await runContainerRestore({ storages, backup: "backup:backup/100/lxc-1700000000",
 *   vmid: 200, storage: "local" });
 * console.log(r.rootfs, r.config);
 * ```
 */
export async function runContainerRestore(
  o: ContainerRestoreOptions,
): Promise<ContainerRestoreResult> {
  const t0 = performance.now();
  const log: LogFunction = o.log ?? (() => {});
  const b = o.opened ?? await openBackupForRestore(o.storages, o.backup, log);
  if (b.type !== "lxc" || (b.mechanism !== "tar" && b.mechanism !== "directory")) {
    throw new VoltError(`'${o.backup}' is a VM backup, not a container backup: restore it as a VM`);
  }
  const mechanism = b.mechanism;
  const provider = b.provider;
  if (
    typeof provider.restoreContainerInit !== "function" ||
    typeof provider.restoreContainerCleanup !== "function"
  ) {
    throw new VoltError(
      `the provider of '${o.backup}' (${provider.providerName}) does not restore containers: ` +
        "it lacks restoreContainerInit or restoreContainerCleanup",
    );
  }
  const target = await o.storages.get(o.storage);
  const content = (target.storage.options.content as string[] | undefined) ??
    [...target.plugin.content.default];
  if (!content.includes("rootdir")) {
    throw new VoltError(
      `storage '${o.storage}' does not hold container file systems (content ${
        content.join(",")
      }): choose one with content rootdir`,
    );
  }
  if (!target.plugin.formats?.supported.includes("subvol")) {
    throw new VoltError(
      `storage '${o.storage}' (type ${target.storage.type}) cannot hold subvolumes ` +
        "(format subvol): choose e.g. a dir storage",
    );
  }
  const guestConfig = await provider.archiveGetGuestConfig(b.volname);
  const firewallConfig = await provider.archiveGetFirewallConfig(b.volname);
  const home = voltHome();
  const targets: ConfigTargets = {
    config: o.configOut ?? `${home}/lxc/${o.vmid}.conf`,
    ...(firewallConfig !== undefined
      ? { firewall: o.firewallOut ?? `${home}/firewall/${o.vmid}.fw` }
      : {}),
  };
  await checkConfigTargets(targets, o.vmid, o.force);

  let volname: string | undefined;
  let volid = "";
  let failure: unknown;
  let initCalled = false;
  try {
    initCalled = true;
    const src = await provider.restoreContainerInit(b.volname, { signal: o.signal });
    o.signal?.throwIfAborted();
    const from = mechanism === "tar"
      ? await checkedTar(src?.tarPath)
      : await checkedDirectory(src?.archiveDirectory);
    volname = await target.plugin.allocImage(target.storage, o.vmid, "subvol", undefined, 0);
    volid = `${o.storage}:${volname}`;
    const dest = target.plugin.path(target.storage, volname);
    log("info", `rootfs: restoring into ${volid} (${mechanism})`);
    const archiver = { signal: o.signal, log: (line: string) => log("warn", line) };
    if (mechanism === "tar") await extractContainerArchive(from, dest, archiver);
    else await copyTree(from, dest, archiver);
    o.signal?.throwIfAborted();
    await writeRestoredConfigs(targets, rewriteContainerConfig(guestConfig, volid), firewallConfig);
  } catch (err) {
    failure = err;
  } finally {
    if (initCalled) {
      await provider.restoreContainerCleanup(b.volname).catch((err) =>
        log("warn", `restoreContainerCleanup failed: ${errorLine(err)}`)
      );
    }
  }
  if (failure !== undefined) {
    if (volname !== undefined) {
      try {
        await target.plugin.freeImage(target.storage, volname);
      } catch (err) {
        log("warn", `could not free ${volid}: ${errorLine(err)}`);
      }
    }
    if (o.signal?.aborted) {
      throw new InterruptedError(`restore of ${o.backup}`, String(o.signal.reason));
    }
    throw new VoltError(`restore of ${o.backup} failed: ${errorLine(failure)}`, { cause: failure });
  }
  return {
    rootfs: volid,
    mechanism,
    config: targets.config,
    ...(targets.firewall !== undefined ? { firewall: targets.firewall } : {}),
    seconds: (performance.now() - t0) / 1000,
  };
}

/** The provider's `tarPath`: an absolute path of a regular file that is a tar archive. */
async function checkedTar(path: unknown): Promise<string> {
  const p = await checkedPath(path, "tarPath", "isFile", "a regular file");
  if ((await detectArchiveFormat(p)) !== "tar") {
    throw new VoltError(`the provider gave tarPath '${p}', which is not a tar archive`);
  }
  return p;
}

/** The provider's `archiveDirectory`: an absolute path of a directory. */
function checkedDirectory(path: unknown): Promise<string> {
  return checkedPath(path, "archiveDirectory", "isDirectory", "a directory");
}

async function checkedPath(
  path: unknown,
  field: string,
  kind: "isFile" | "isDirectory",
  what: string,
): Promise<string> {
  if (typeof path !== "string" || path === "") {
    throw new VoltError(`the provider gave no ${field} for the container`);
  }
  if (!path.startsWith("/") || /[\0\n]/.test(path)) {
    throw new VoltError(`the provider gave ${field} '${path}': not an absolute path`);
  }
  const st = await Deno.stat(path).catch(() => undefined);
  if (!st?.[kind]) throw new VoltError(`the provider gave ${field} '${path}': not ${what}`);
  return path;
}

/**
 * Copies the tree `from` into the existing, empty directory `to` (which takes `from`'s owner,
 * mode and times), keeping everything a container needs: `cp --archive` (numeric owners,
 * modes with setuid, timestamps, symlinks, hard links, xattrs, ACLs) with holes kept.
 */
async function copyTree(
  from: string,
  to: string,
  o: { signal?: AbortSignal; log?: (line: string) => void },
): Promise<void> {
  const args = ["--archive", "--sparse=always", "--no-target-directory", "--", from, to];
  await ArchiverProcess.spawn("cp", args, {
    what: `copying ${from} into ${to}`,
    signal: o.signal,
    log: o.log,
  }).wait();
}
