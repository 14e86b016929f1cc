// Every provider method returns a promise; here some have nothing to wait for.
// deno-lint-ignore-file require-await

/**
 * Example backup storage `raw-backup`: every backup is a directory of raw disk files, always
 * full. Small on purpose: it shows the whole backup provider API (`plugins/backup_api.ts`)
 * and the least a provider must do: work in a private directory, commit by renaming in
 * `backupCleanup(success)`, remove everything on failure. Load it with
 * `volt backup … --plugin plugins/examples/raw_backup.ts` and a storage.cfg section
 *
 * ```
 * raw-backup: rawbk
 * 	path /srv/raw-backups
 * ```
 *
 * Layout: `<path>/<vmid>/qemu-<epoch>/{guest.conf,firewall.conf,<device>.raw}`. The lifecycle
 * it follows is drawn in docs/backup-providers.md.
 *
 * @module
 */

import type { LogFunction, Storage, StoragePlugin, VolumeInfo } from "../api.ts";
import type { BackupProvider, RestoreDevice, VmBackupInfo, VmVolume } from "../backup_api.ts";
import { copyNbd } from "../../lib/nbd/copy.ts";
import { rawSink } from "../../lib/nbd/sink.ts";

const NAME = /^backup\/(\d+)\/(qemu-\d+)$/;

function root(storage: Storage): string {
  return storage.options.path as string;
}

function parse(volname: string): { vmid: number; dir: string } {
  const m = NAME.exec(volname);
  if (!m) {
    throw new TypeError(`invalid volume name '${volname}': expected backup/<vmid>/qemu-<epoch>`);
  }
  return { vmid: Number(m[1]), dir: `${m[1]}/${m[2]}` };
}

/** The provider: one instance per volt command. */
class RawBackupProvider implements BackupProvider {
  readonly providerName = "example raw backups";
  #root: string;
  #log: LogFunction;
  #work = new Map<number, { temp: string; final: string }>();

  constructor(storage: Storage, log: LogFunction) {
    this.#root = root(storage);
    this.#log = log;
  }

  async jobInit() {}
  async jobCleanup() {}

  async backupInit(vmid: number, _type: string, startTime: number) {
    const final = `${this.#root}/${vmid}/qemu-${startTime}`;
    const temp = `${this.#root}/${vmid}/.tmp-qemu-${startTime}`;
    await Deno.mkdir(temp, { recursive: true });
    this.#work.set(vmid, { temp, final });
    return { archiveName: `backup/${vmid}/qemu-${startTime}` };
  }

  async backupGetMechanism() {
    return "nbd" as const;
  }

  async backupVmQueryIncremental(_vmid: number, devices: Record<string, number>) {
    return Object.fromEntries(Object.keys(devices).map((d) => [d, "new" as const]));
  }

  async backupVm(vmid: number, guestConfig: string, volumes: VmVolume[], info: VmBackupInfo) {
    const { temp } = this.#work.get(vmid)!;
    await Deno.writeTextFile(`${temp}/guest.conf`, guestConfig);
    if (info.firewallConfig !== undefined) {
      await Deno.writeTextFile(`${temp}/firewall.conf`, info.firewallConfig);
    }
    for (const vol of volumes) {
      await copyNbd({
        source: { uri: vol.nbd!.uri },
        sink: rawSink(`${temp}/${vol.device}.raw`, { sync: true }),
        bwlimitKiB: info.bandwidthLimit,
        onProgress: (p) => info.progress?.(vol.device, p.bytesDone, p.bytesTotal),
        signal: info.signal,
      });
    }
  }

  async backupCleanup(vmid: number, _type: string, success: boolean) {
    const w = this.#work.get(vmid);
    if (!w) return { stats: { archiveSize: 0 } };
    if (!success) {
      await Deno.remove(w.temp, { recursive: true }).catch(() => {});
      return { stats: { archiveSize: 0 } };
    }
    await Deno.rename(w.temp, w.final);
    let archiveSize = 0;
    for await (const e of Deno.readDir(w.final)) {
      archiveSize += (await Deno.stat(`${w.final}/${e.name}`)).size;
    }
    return { stats: { archiveSize } };
  }

  async backupHandleLogFile(vmid: number, logPath: string) {
    const w = this.#work.get(vmid);
    this.#work.delete(vmid);
    if (w) this.#log("info", `task log of guest ${vmid} left at ${logPath} (not kept)`);
  }

  async restoreGetMechanism() {
    return { mechanism: "qemu-img" as const, type: "qemu" as const };
  }

  async archiveGetGuestConfig(volname: string) {
    return await Deno.readTextFile(`${this.#root}/${parse(volname).dir}/guest.conf`);
  }

  async archiveGetFirewallConfig(volname: string) {
    return await Deno.readTextFile(`${this.#root}/${parse(volname).dir}/firewall.conf`)
      .catch(() => undefined);
  }

  async restoreVmInit(volname: string) {
    const dir = `${this.#root}/${parse(volname).dir}`;
    const out: Record<string, RestoreDevice> = {};
    for await (const e of Deno.readDir(dir)) {
      if (e.name.endsWith(".raw")) {
        out[e.name.slice(0, -4)] = { size: (await Deno.stat(`${dir}/${e.name}`)).size };
      }
    }
    return out;
  }

  async restoreVmCleanup() {}

  async restoreVmVolumeInit(volname: string, device: string) {
    return {
      qemuImgPath: `${this.#root}/${parse(volname).dir}/${device}.raw`,
      format: "raw" as const,
    };
  }

  async restoreVmVolumeCleanup() {}
}

/** The `raw-backup` storage type. */
export const plugin: StoragePlugin = {
  type: "raw-backup",
  api: 1,
  description: "example: full VM backups as raw files",
  content: { supported: ["backup"], default: ["backup"] },
  options: { path: { type: "string", required: true, description: "the directory" } },
  features: ["backup-provider"],

  parseVolname(volname) {
    const { vmid } = parse(volname);
    return { vtype: "backup", name: volname.split("/")[2], vmid, format: "raw" };
  },
  path: (storage, volname) => `${root(storage)}/${parse(volname).dir}`,
  async activateStorage(storage) {
    await Deno.mkdir(root(storage), { recursive: true });
  },
  async status() {
    return { active: true, total: 0, used: 0, avail: 0 };
  },
  allocImage() {
    return Promise.reject(new Error("raw-backup storages hold backups only"));
  },
  async freeImage(storage, volname) {
    await Deno.remove(`${root(storage)}/${parse(volname).dir}`, { recursive: true });
  },
  async listVolumes(storage, filter) {
    const out: VolumeInfo[] = [];
    for await (const g of Deno.readDir(root(storage))) {
      if (!/^\d+$/.test(g.name) || (filter.vmid !== undefined && Number(g.name) !== filter.vmid)) {
        continue;
      }
      for await (const b of Deno.readDir(`${root(storage)}/${g.name}`)) {
        const m = /^qemu-(\d+)$/.exec(b.name);
        if (!m) continue; // .tmp-…: not finished
        out.push({
          volid: `${storage.id}:backup/${g.name}/${b.name}`,
          format: "raw",
          size: 0,
          used: 0,
          vmid: Number(g.name),
          content: "backup",
          subtype: "qemu",
          ctime: Number(m[1]),
        });
      }
    }
    return out;
  },
  async volumeSizeInfo() {
    return { format: "raw", size: 0, used: 0 };
  },
  newBackupProvider: (storage, log) => new RawBackupProvider(storage, log),
};
