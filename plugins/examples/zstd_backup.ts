// Every provider method returns a promise; some here have nothing to wait for.
// deno-lint-ignore-file require-await

/**
 * Example backup storage `zstd-backup`, written to be read: the whole backup provider API
 * (`plugins/backup_api.ts`) in one small file, the running example of the guide in
 * `docs/backup-providers.md`. Every backup is a directory with one zstd stream per disk,
 * always full; a restore decompresses each disk into a scratch file that `qemu-img` reads.
 *
 * ```
 * <path>/<vmid>/qemu-<epoch>/
 *     guest.conf  firewall.conf    the configurations, byte for byte
 *     disks.json                   {"scsi0": <virtual size in bytes>, …}
 *     scsi0.raw.zst                the whole disk, raw, as one zstd stream (`zstd -d` it)
 *     task.log                     volt's log of the backup
 * ```
 *
 * What every provider must do, and this one shows: write into a private `.tmp-…` directory
 * that no listing shows, commit by renaming it in `backupCleanup(success = true)`, remove it
 * when `success` is false (a failure, or SIGINT/SIGTERM through `info.signal`), and undo in
 * each `*Cleanup` what its `*Init` made. Left out: incremental backups, locking, and sweeping
 * the `.tmp-…` directory a SIGKILLed volt leaves (the built-in provider does all three).
 *
 * Load it with `--plugin plugins/examples/zstd_backup.ts` and a storage.cfg section
 *
 * ```
 * zstd-backup: zbk
 * 	path /srv/zstd-backups
 * ```
 *
 * @module
 */

import type { LogFunction, Storage, StoragePlugin, VolumeInfo } from "../api.ts";
import type { BackupProvider, VmBackupInfo, VmVolume } from "../backup_api.ts";
import { copyNbd } from "../../lib/nbd/copy.ts";
import type { CallbackSink } from "../../lib/nbd/sink.ts";
import { pathExists } from "../../lib/fs.ts";
import { lastLine, run } from "../../lib/run.ts";

const VOLNAME = /^backup\/(\d+)\/(qemu-(\d+))$/;
const root = (storage: Storage) => String(storage.options.path);

/** `backup/<vmid>/qemu-<epoch>` → vmid and directory name; other names are refused. */
function parse(volname: string): { vmid: string; name: string } {
  const m = VOLNAME.exec(volname);
  if (!m) {
    throw new TypeError(`invalid volume name '${volname}': expected backup/<vmid>/qemu-<epoch>`);
  }
  return { vmid: m[1], name: m[2] };
}

/** The directory of a backup. */
function backupDir(storage: Storage, volname: string): string {
  const { vmid, name } = parse(volname);
  return `${root(storage)}/${vmid}/${name}`;
}

/** Files and bytes of a directory (its backup's size). */
async function dirSize(dir: string): Promise<number> {
  let size = 0;
  for await (const e of Deno.readDir(dir)) size += (await Deno.stat(`${dir}/${e.name}`)).size;
  return size;
}

/**
 * A sink for volt's NBD copy engine that pipes the disk into `zstd -o file`. The engine hands
 * over every range of the disk (data, or a run of zeros: `initiallyZero: false` asks for the
 * zeros too), roughly in ascending order; a stream needs them exactly in order, so a range that
 * arrives early waits in `early` until the ranges before it were written.
 */
function zstdSink(file: string, size: number): CallbackSink {
  let zstd: Deno.ChildProcess | undefined; // started by the first write
  let input: WritableStreamDefaultWriter<Uint8Array>;
  const early = new Map<number, Uint8Array | number>();
  let next = 0; // the offset zstd reads next
  const zeros = new Uint8Array(1 << 20);
  const start = () => {
    zstd ??= new Deno.Command("zstd", {
      args: ["-q", "-3", `--stream-size=${size}`, "-o", file],
      stdin: "piped",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    input ??= zstd.stdin.getWriter();
  };
  const put = async (offset: number, part: Uint8Array | number) => {
    start();
    early.set(offset, part);
    for (let p = early.get(next); p !== undefined; p = early.get(next)) {
      early.delete(next);
      if (typeof p !== "number") await input.write(p);
      for (let left = typeof p === "number" ? p : 0; left > 0; left -= zeros.length) {
        await input.write(zeros.subarray(0, Math.min(left, zeros.length)));
      }
      next += typeof p === "number" ? p : p.length;
    }
  };
  return {
    initiallyZero: false,
    // `data` is the engine's buffer, valid only until we return: keep a copy.
    writeData: (offset, data) => put(offset, data.slice()),
    writeZeroes: (offset, length) => put(offset, length),
    async finish() {
      start();
      await input.close();
      const out = await zstd!.output();
      if (!out.success) {
        throw new Error(`zstd failed: ${lastLine(new TextDecoder().decode(out.stderr))}`);
      }
      if (next !== size) throw new Error(`only ${next} of ${size} bytes reached zstd`);
    },
    async abort() {
      if (!zstd) return;
      try {
        zstd.kill("SIGKILL");
      } catch { /* it had exited */ }
      await input.abort().catch(() => {});
      await zstd.output().catch(() => {});
    },
  };
}

/** The provider: volt creates one per command (`newBackupProvider`). */
class ZstdBackupProvider implements BackupProvider {
  readonly providerName = "example zstd backups";
  #storage: Storage;
  #log: LogFunction;
  /** Backups in progress, by guest. */
  #work = new Map<number, { temp: string; final: string; committed?: boolean }>();
  #restoreDir?: string;

  constructor(storage: Storage, log: LogFunction) {
    this.#storage = storage;
    this.#log = log;
  }

  // ---- backup: jobInit → backupInit → … → backupCleanup → backupHandleLogFile → jobCleanup

  async jobInit() {}
  async jobCleanup() {}

  /** Claims a name (the next free second if `qemu-<startTime>` is taken) and a work directory. */
  async backupInit(vmid: number, _type: string, startTime: number) {
    const guest = `${root(this.#storage)}/${vmid}`;
    await Deno.mkdir(guest, { recursive: true });
    for (let time = startTime;; time++) {
      const name = `qemu-${time}`;
      if (await pathExists(`${guest}/${name}`)) continue;
      try {
        await Deno.mkdir(`${guest}/.tmp-${name}`); // fails if another backup claimed it
      } catch (err) {
        if (err instanceof Deno.errors.AlreadyExists) continue;
        throw err;
      }
      this.#work.set(vmid, { temp: `${guest}/.tmp-${name}`, final: `${guest}/${name}` });
      return { archiveName: `backup/${vmid}/${name}` };
    }
  }

  async backupGetMechanism() {
    return "nbd" as const; // read the disks through volt's NBD engine
  }

  /** Always full: a new bitmap for every disk, i.e. volt copies everything. */
  async backupVmQueryIncremental(_vmid: number, devices: Record<string, number>) {
    return Object.fromEntries(Object.keys(devices).map((d) => [d, "new" as const]));
  }

  async backupVm(vmid: number, guestConfig: string, volumes: VmVolume[], info: VmBackupInfo) {
    const { temp } = this.#work.get(vmid)!;
    await Deno.writeTextFile(`${temp}/guest.conf`, guestConfig);
    if (info.firewallConfig !== undefined) {
      await Deno.writeTextFile(`${temp}/firewall.conf`, info.firewallConfig);
    }
    const sizes: Record<string, number> = {};
    for (const vol of volumes) {
      // The whole disk (ranges "allocated", whatever the bitmap), at most bandwidthLimit KiB/s;
      // info.signal stops the copy, which then rejects: volt calls backupCleanup(false).
      await copyNbd({
        source: { uri: vol.nbd!.uri },
        ranges: "allocated",
        sink: zstdSink(`${temp}/${vol.device}.raw.zst`, vol.size),
        bwlimitKiB: info.bandwidthLimit,
        onProgress: (p) => info.progress?.(vol.device, p.bytesDone, p.bytesTotal),
        signal: info.signal,
      });
      sizes[vol.device] = vol.size;
    }
    await Deno.writeTextFile(`${temp}/disks.json`, JSON.stringify(sizes) + "\n");
  }

  /** Commits by renaming the work directory into place, or removes it. */
  async backupCleanup(vmid: number, _type: string, success: boolean, info: { error?: string }) {
    const w = this.#work.get(vmid);
    if (!w) return { stats: { archiveSize: 0 } }; // backupInit failed before claiming anything
    if (!success) {
      await Deno.remove(w.temp, { recursive: true }).catch(() => {});
      this.#log("info", `backup failed (${info.error}): removed ${w.temp}`);
      return { stats: { archiveSize: 0 } };
    }
    await Deno.rename(w.temp, w.final);
    w.committed = true;
    return { stats: { archiveSize: await dirSize(w.final) } };
  }

  /** Keeps the task log with a committed backup; a failed backup leaves nothing. */
  async backupHandleLogFile(vmid: number, logPath: string) {
    const w = this.#work.get(vmid);
    this.#work.delete(vmid);
    if (w?.committed) await Deno.copyFile(logPath, `${w.final}/task.log`);
  }

  // ---- restore: restoreVmInit → (restoreVmVolumeInit → volt copies → …VolumeCleanup)* → restoreVmCleanup

  /** The backup's directory; a clear error when it does not exist. */
  async #dir(volname: string): Promise<string> {
    const dir = backupDir(this.#storage, volname);
    if (!(await pathExists(`${dir}/disks.json`))) {
      throw new Error(`backup '${this.#storage.id}:${volname}' does not exist`);
    }
    return dir;
  }

  async restoreGetMechanism(volname: string) {
    await this.#dir(volname);
    return { mechanism: "qemu-img" as const, type: "qemu" as const };
  }

  async archiveGetGuestConfig(volname: string) {
    return await Deno.readTextFile(`${await this.#dir(volname)}/guest.conf`);
  }

  async archiveGetFirewallConfig(volname: string) {
    const file = `${await this.#dir(volname)}/firewall.conf`;
    return (await pathExists(file)) ? await Deno.readTextFile(file) : undefined;
  }

  /** The devices and sizes; makes a scratch directory for the decompressed disks. */
  async restoreVmInit(volname: string) {
    const sizes = JSON.parse(await Deno.readTextFile(`${await this.#dir(volname)}/disks.json`));
    this.#restoreDir = await Deno.makeTempDir({ dir: root(this.#storage), prefix: ".restore-" });
    return Object.fromEntries(
      Object.entries(sizes).map(([d, size]) => [d, { size: size as number }]),
    );
  }

  /** Decompresses one disk into a raw file (sparse: zstd's default for a file) for qemu-img. */
  async restoreVmVolumeInit(volname: string, device: string) {
    const [src, raw] = [
      `${await this.#dir(volname)}/${device}.raw.zst`,
      `${this.#restoreDir}/${device}.raw`,
    ];
    await run("zstd", ["-q", "-d", "-o", raw, src]);
    return { qemuImgPath: raw, format: "raw" as const };
  }

  async restoreVmVolumeCleanup(_volname: string, device: string) {
    await Deno.remove(`${this.#restoreDir}/${device}.raw`).catch(() => {});
  }

  async restoreVmCleanup() {
    if (this.#restoreDir) await Deno.remove(this.#restoreDir, { recursive: true });
    this.#restoreDir = undefined;
  }

  // ---- verify (optional): `volt verify` runs it

  /** `zstd -t` on every stream: its frames and content checksum. */
  async archiveVerify(volname: string) {
    const dir = await this.#dir(volname);
    const devices = Object.keys(JSON.parse(await Deno.readTextFile(`${dir}/disks.json`)));
    const problems = [];
    let bytes = 0;
    for (const file of devices.map((device) => `${device}.raw.zst`)) {
      const r = await run("zstd", ["-q", "-t", `${dir}/${file}`], { allowFailure: true });
      if (r.code !== 0) problems.push({ file, message: `${file}: ${lastLine(r.stderr)}` });
      else bytes += (await Deno.stat(`${dir}/${file}`)).size;
    }
    const n = devices.length;
    return { ok: problems.length === 0, problems, checked: { files: n, bytes, images: n } };
  }
}

/** The `zstd-backup` storage type: the storage half (list, remove, sizes) of the example. */
export const plugin: StoragePlugin = {
  type: "zstd-backup",
  api: 1,
  description: "example: full VM backups as one zstd stream per disk",
  content: { supported: ["backup"], default: ["backup"] },
  options: { path: { type: "string", required: true, description: "the directory" } },
  features: ["backup-provider"],

  parseVolname(volname) {
    const { vmid, name } = parse(volname);
    return { vtype: "backup", name, vmid: Number(vmid), format: "zstd" };
  },
  path: (storage, volname) => backupDir(storage, volname),
  activateStorage: (storage) => Deno.mkdir(root(storage), { recursive: true }),
  status: async () => ({ active: true, total: 0, used: 0, avail: 0 }), // not tracked
  allocImage: () => Promise.reject(new Error("zstd-backup storages hold backups only")),
  /** Out of the listing at once (rename to a `.tmp-` name), then removed. */
  async freeImage(storage, volname) {
    const dir = backupDir(storage, volname);
    const doomed = dir.replace(/\/(qemu-\d+)$/, "/.tmp-delete-$1");
    await Deno.rename(dir, doomed);
    await Deno.remove(doomed, { recursive: true });
  },
  async listVolumes(storage, filter) {
    if (filter.content && !filter.content.includes("backup")) return [];
    const out: VolumeInfo[] = [];
    for await (const g of Deno.readDir(root(storage))) {
      if (!/^\d+$/.test(g.name)) continue;
      if (filter.vmid !== undefined && Number(g.name) !== filter.vmid) continue;
      for await (const b of Deno.readDir(`${root(storage)}/${g.name}`)) {
        const m = /^qemu-(\d+)$/.exec(b.name); // `.tmp-…`: unfinished, not listed
        if (!m) continue;
        const size = await dirSize(`${root(storage)}/${g.name}/${b.name}`);
        out.push({
          volid: `${storage.id}:backup/${g.name}/${b.name}`,
          format: "zstd",
          size,
          used: size,
          vmid: Number(g.name),
          content: "backup",
          subtype: "qemu",
          ctime: Number(m[1]),
        });
      }
    }
    return out;
  },
  volumeSizeInfo: async (storage, volname) => {
    const size = await dirSize(backupDir(storage, volname));
    return { format: "zstd", size, used: size };
  },
  newBackupProvider: (storage, log) => new ZstdBackupProvider(storage, log),
};
