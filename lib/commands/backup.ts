/**
 * `volt backup <vmid> --storage S --disk scsi0=… [--disk …] --config guest.conf`: back up a
 * VM's disks into a backup storage through its provider (`lib/backup/job.ts`);
 * `volt backup <vmid> --type lxc --directory ROOTFS [--exclude PATTERN …] --config ct.conf`:
 * back up a container's file system.
 *
 * @module
 */

import {
  type CommandSpec,
  intOpt,
  listOpt,
  OUTPUT_FORMAT_OPTION,
  outputFormat,
  stringOpt,
} from "../cli/command.ts";
import { errorLine, UsageError, VoltError } from "../errors.ts";
import { formatKeep, runPrune } from "../backup/retention.ts";
import { tarExcludeArgs } from "../backup/exclude_patterns.ts";
import { type BackupJobResult, runBackupJob } from "../backup/job.ts";
import { ProgressPrinter } from "../backup/progress.ts";
import { parseDiskArg } from "../backup/sources.ts";
import { withTermination } from "../signals.ts";
import { formatBytes } from "../size.ts";
import { Storages } from "../storage/storages.ts";
import { parseVmid } from "./common.ts";

/**
 * Reads a configuration file as UTF-8 text, byte for byte (refusing anything else, so what
 * is stored is exactly what was given).
 */
export async function readConfigFile(path: string, what: string): Promise<string> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (err) {
    throw new VoltError(
      `${what} '${path}' ${
        err instanceof Deno.errors.NotFound
          ? "does not exist"
          : `cannot be read: ${(err as Error).message}`
      }`,
    );
  }
  if (bytes.length > 4 * 1024 * 1024) throw new VoltError(`${what} '${path}' is larger than 4 MiB`);
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new VoltError(`${what} '${path}' is not UTF-8 text`);
  }
}

/** The lines printed after a backup. */
export function backupSummary(r: BackupJobResult): string[] {
  const lines: string[] = [];
  let read = 0;
  let written = 0;
  for (const d of r.devices) {
    const s = r.stats.devices?.[d.device];
    if (!s) {
      lines.push(`${d.device}: ${formatBytes(d.size)} (bitmap ${d.bitmapMode})`);
      continue;
    }
    read += s.bytesRead;
    written += s.bytesWritten;
    const rate = s.seconds > 0 ? s.bytesRead / s.seconds : 0;
    lines.push(
      `${d.device}: ${s.kind}, read ${formatBytes(s.bytesRead)}, wrote ${
        formatBytes(s.bytesWritten)
      }` +
        `, zeros ${formatBytes(s.bytesZeroed)}, ${s.seconds.toFixed(1)} s, ${formatBytes(rate)}/s`,
    );
  }
  lines.push(
    `backup ${r.volid}: ${formatBytes(r.stats.archiveSize)} stored` +
      (r.stats.devices ? `, ${formatBytes(read)} read, ${formatBytes(written)} written` : "") +
      `, ${r.seconds.toFixed(1)} s`,
  );
  return lines;
}

/** Options that only one guest type takes. */
const VM_ONLY = ["disk", "mode", "bitmap"];
const CONTAINER_ONLY = ["directory", "exclude"];

/**
 * `--prune`: the storage's retention for the guest just backed up. Runs only after the backup
 * was committed and its bitmaps consumed, so nothing here can undo it; the new backup is
 * passed as `mustKeep`, and a failure is a warning (the backup succeeded; retention is
 * retried by the next `--prune` or `volt prune`).
 */
async function pruneAfterBackup(
  storages: Storages,
  storageId: string,
  vmid: number,
  type: "qemu" | "lxc",
  newVolid: string,
  say: (text: string) => void,
): Promise<void> {
  try {
    const r = await withTermination((signal) =>
      runPrune(storages, storageId, {
        vmid,
        type,
        mustKeep: [newVolid],
        signal,
        log: (level, message) => say(level === "info" ? message : `warning: ${message}`),
      })
    );
    say(
      `prune (${formatKeep(r.keep)}): ${r.removed.length} removed, ${
        r.decisions.length - r.removed.length
      } kept`,
    );
  } catch (err) {
    say(`warning: prune after the backup failed: ${errorLine(err)}; the backup ${newVolid} stands`);
  }
}

/** `volt backup`. */
export const backupCommand: CommandSpec = {
  name: "backup",
  summary:
    "back up a VM's disks (full or incremental) or a container's files into a backup storage",
  args: "<vmid> (--disk DEVICE=SOURCE [--disk …] | --type lxc --directory DIR) --config FILE",
  details: `
VMs (--type qemu, the default): SOURCE is an NBD URI (nbd+unix:///EXPORT?socket=PATH, e.g. a
running VM's NBD export), an offline disk image (a path ending in .qcow2, .raw or .img, or a
volume id such as local:100/vm-100-disk-0.qcow2), or a block device; add ',format=raw|qcow2'
when the name does not say. For an offline qcow2 volt keeps a dirty bitmap volt-<storage> in
the image, so the next backup to the same storage copies only what changed; it is marked
consumed only after the backup was committed. For NBD sources, --bitmap names the export's
dirty bitmap (its owner resets it after a successful backup).
Containers (--type lxc): DIR is the container's root file system (a stopped container's
rootfs, or a snapshot of it), handed to the provider with the 'directory' mechanism; the
directory backup storage archives it with tar (numeric owners, ACLs, xattrs, sparse files,
one file system) or, with lxc-backup-mode squashfs, mksquashfs. --exclude takes vzdump's
patterns: one starting with '/' is anchored at the container's root (/var/log), any other
matches at any depth (*.tmp, cache); lost+found is never archived. A container backup is
always complete: there are no bitmaps.
--prune applies the storage's prune-backups to this guest's backups once the new backup is
committed (as 'volt prune STORAGE --vmid N --type T'). The new backup is never removed, and
a failing prune only warns: the backup stands, its bitmap is consumed, the exit code is 0.
Prints the new backup's volume id on stdout; progress and a summary go to stderr.`,
  options: {
    type: {
      type: "string",
      arg: "qemu|lxc",
      description: "the guest type: a VM's disks (qemu, default) or a container's directory (lxc)",
    },
    storage: {
      type: "string",
      arg: "STORAGE",
      description: "the backup storage (default: backup)",
      default: "backup",
    },
    disk: {
      type: "string",
      multiple: true,
      arg: "DEVICE=SOURCE",
      description: "VMs: a disk to back up (repeatable)",
    },
    directory: {
      type: "string",
      arg: "DIR",
      description: "containers: the root file system to back up",
    },
    exclude: {
      type: "string",
      multiple: true,
      arg: "PATTERN",
      description: "containers: leave out what PATTERN matches (/x: at the root; x: anywhere)",
    },
    config: {
      type: "string",
      arg: "FILE",
      description:
        "the guest configuration, stored byte for byte (here not the storage configuration)",
    },
    "storage-config": {
      type: "string",
      arg: "FILE",
      description: "storage configuration (default: $VOLT_CONFIG, /etc/volt/storage.cfg, built-in)",
    },
    firewall: { type: "string", arg: "FILE", description: "the guest's firewall configuration" },
    bwlimit: { type: "string", arg: "KiB/s", description: "limit the read bandwidth" },
    mode: {
      type: "string",
      arg: "full|incremental",
      description: "VMs: full ignores dirty bitmaps (default: incremental where possible)",
    },
    bitmap: { type: "string", arg: "NAME", description: "VMs: dirty bitmap of the NBD sources" },
    prune: {
      type: "boolean",
      description: "after a successful backup, prune the guest's backups (storage's prune-backups)",
    },
    ...OUTPUT_FORMAT_OPTION,
  },
  positionals: [1, 1],
  async run(args) {
    const format = outputFormat(args);
    const vmid = parseVmid(args.positionals[0]);
    const type = stringOpt(args, "type") ?? "qemu";
    if (type !== "qemu" && type !== "lxc") {
      throw new UsageError(`--type: '${type}' is not one of qemu, lxc`);
    }
    const given = (name: string) => args.values[name] !== undefined;
    for (const name of type === "qemu" ? CONTAINER_ONLY : VM_ONLY) {
      if (given(name)) {
        throw new UsageError(
          `volt backup: --${name} is for ${
            type === "qemu" ? "containers (--type lxc)" : "VMs (--type qemu)"
          }`,
        );
      }
    }
    const disks = listOpt(args, "disk").map(parseDiskArg);
    if (type === "qemu" && disks.length === 0) {
      throw new UsageError("volt backup: give at least one --disk DEVICE=SOURCE");
    }
    const directory = stringOpt(args, "directory");
    if (type === "lxc" && directory === undefined) {
      throw new UsageError("volt backup: --type lxc needs --directory DIR (the container's root)");
    }
    const excludePatterns = listOpt(args, "exclude");
    try {
      tarExcludeArgs(excludePatterns);
    } catch (err) {
      throw new UsageError(`--exclude: ${(err as Error).message}`);
    }
    const configPath = stringOpt(args, "config");
    if (configPath === undefined) throw new UsageError("volt backup: --config FILE is required");
    const mode = stringOpt(args, "mode");
    if (mode !== undefined && mode !== "full" && mode !== "incremental") {
      throw new UsageError(`--mode: '${mode}' is not one of full, incremental`);
    }
    const firewallPath = stringOpt(args, "firewall");
    const guestConfig = await readConfigFile(configPath, "guest configuration");
    const firewallConfig = firewallPath === undefined
      ? undefined
      : await readConfigFile(firewallPath, "firewall configuration");
    const bwlimitKiB = intOpt(args, "bwlimit");
    // `--config` is the guest's configuration here, as in the issue's command line.
    const storages = await Storages.open({
      configPath: stringOpt(args, "storage-config"),
      pluginPaths: listOpt(args, "plugin"),
    });
    const storageId = stringOpt(args, "storage") ?? "backup";
    const printer = new ProgressPrinter();
    const encoder = new TextEncoder();
    const say = (text: string) => Deno.stderr.writeSync(encoder.encode(`${text}\n`));
    let result: BackupJobResult;
    try {
      result = await withTermination((signal) =>
        runBackupJob({
          storages,
          storage: storageId,
          vmid,
          type,
          ...(type === "qemu"
            ? { disks }
            : { container: { directory: directory!, excludePatterns } }),
          guestConfig,
          firewallConfig,
          bwlimitKiB,
          mode: mode as "full" | "incremental" | undefined,
          bitmap: stringOpt(args, "bitmap"),
          log: (level, message) => {
            printer.end();
            say(
              level === "info" ? message : `${level === "warn" ? "warning" : "error"}: ${message}`,
            );
          },
          progress: (device, done, total) => printer.update(device, done, total),
          signal,
        })
      );
    } finally {
      printer.end();
    }
    for (const line of backupSummary(result)) say(line);
    if (args.values.prune === true) {
      await pruneAfterBackup(storages, storageId, vmid, type, result.volid, say);
    }
    if (format === "json") console.log(JSON.stringify(result, null, 2));
    else console.log(result.volid);
    return 0;
  },
};
