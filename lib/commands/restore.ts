/**
 * `volt restore <backup-volid> <vmid> --storage <target>`: restore a VM backup into new
 * volumes and a guest configuration (`lib/backup/restore.ts`), or a container backup into a
 * new subvolume and a container configuration (`lib/backup/container_restore.ts`), whichever
 * the backup's provider says it is.
 *
 * @module
 */

import { type CommandSpec, OUTPUT_FORMAT_OPTION, outputFormat, stringOpt } from "../cli/command.ts";
import { UsageError, VoltError } from "../errors.ts";
import { ProgressPrinter } from "../backup/progress.ts";
import { openBackupForRestore, runRestore } from "../backup/restore.ts";
import { runContainerRestore } from "../backup/container_restore.ts";
import { withTermination } from "../signals.ts";
import { formatBytes } from "../size.ts";
import { parseVmid, storagesFromArgs } from "./common.ts";

/** `volt restore`. */
export const restoreCommand: CommandSpec = {
  name: "restore",
  summary: "restore a VM or container backup into new volumes and a guest configuration",
  args: "<backup-volid> <vmid> --storage STORAGE",
  details: `
A VM backup: allocates one new volume per backed-up disk on STORAGE, copies each disk
(qemu-img convert, after volt checked the backup's qcow2 chain: no file outside the guest's
backups is ever opened), and writes the guest configuration with its disk lines pointing at
the new volumes (default $VOLT_HOME/qemu-server/<vmid>.conf).
A container backup: allocates a subvolume on STORAGE (content rootdir, e.g. a dir storage's
images/<vmid>/subvol-<vmid>-disk-<n>.subvol), extracts the backup's tar archive into it (or
copies the directory the provider unpacked, e.g. from a squashfs image) keeping numeric
owners, modes, links, xattrs, ACLs and holes, and writes the configuration with its rootfs
line pointing at the new subvolume (default $VOLT_HOME/lxc/<vmid>.conf).
The firewall configuration, if backed up, goes to $VOLT_HOME/firewall/<vmid>.fw. If any step
fails, every new volume is freed and no configuration is written. Prints DEVICE=VOLID lines
(rootfs=VOLID for a container) on stdout.`,
  options: {
    storage: { type: "string", arg: "STORAGE", description: "where the new volumes go (required)" },
    format: { type: "string", arg: "raw|qcow2", description: "VMs: format of the new volumes" },
    "config-out": {
      type: "string",
      arg: "FILE",
      description: "write the guest configuration here",
    },
    "firewall-out": {
      type: "string",
      arg: "FILE",
      description: "write the firewall configuration here",
    },
    force: { type: "boolean", description: "overwrite existing configuration files" },
    ...OUTPUT_FORMAT_OPTION,
  },
  positionals: [2, 2],
  async run(args) {
    const json = outputFormat(args) === "json";
    const storage = stringOpt(args, "storage");
    if (storage === undefined) throw new UsageError("volt restore: --storage STORAGE is required");
    const format = stringOpt(args, "format");
    if (format !== undefined && format !== "raw" && format !== "qcow2") {
      throw new UsageError(`--format: '${format}' is not one of raw, qcow2`);
    }
    const vmid = parseVmid(args.positionals[1]);
    const storages = await storagesFromArgs(args);
    const printer = new ProgressPrinter();
    const encoder = new TextEncoder();
    const say = (text: string) => Deno.stderr.writeSync(encoder.encode(`${text}\n`));
    const backup = args.positionals[0];
    const log = (level: string, message: string) => {
      printer.end();
      say(level === "info" ? message : `warning: ${message}`);
    };
    const common = {
      storages,
      backup,
      vmid,
      storage,
      configOut: stringOpt(args, "config-out"),
      firewallOut: stringOpt(args, "firewall-out"),
      force: args.values.force === true,
      log,
    };
    const opened = await openBackupForRestore(storages, backup, log);
    if (opened.type === "lxc") {
      if (format !== undefined) {
        throw new VoltError(
          `--format is for VM backups: '${backup}' is a container backup, restored into a subvolume`,
        );
      }
      const r = await withTermination((signal) =>
        runContainerRestore({ ...common, opened, signal })
      );
      say(
        `restored ${backup} as container ${vmid}: rootfs ${r.rootfs} (${r.mechanism}), ` +
          `${r.seconds.toFixed(1)} s; configuration ${r.config}` +
          (r.firewall ? `, firewall ${r.firewall}` : ""),
      );
      if (json) console.log(JSON.stringify(r, null, 2));
      else console.log(`rootfs=${r.rootfs}`);
      return 0;
    }
    let r;
    try {
      r = await withTermination((signal) =>
        runRestore({
          ...common,
          opened,
          format,
          progress: (device, done, total) => printer.update(device, done, total),
          signal,
        })
      );
    } finally {
      printer.end();
    }
    say(
      `restored ${backup} as guest ${vmid}: ${Object.keys(r.volumes).length} disk(s), ` +
        `${formatBytes(r.bytes)}, ${r.seconds.toFixed(1)} s; configuration ${r.config}` +
        (r.firewall ? `, firewall ${r.firewall}` : ""),
    );
    if (json) console.log(JSON.stringify(r, null, 2));
    else for (const [dev, volid] of Object.entries(r.volumes)) console.log(`${dev}=${volid}`);
    return 0;
  },
};
