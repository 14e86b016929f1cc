/**
 * Rewriting a backed-up guest configuration for its restored volumes. The configuration is
 * Proxmox's `qemu-server` or `lxc` format: `key: value` lines, then `[snapshot]`, `[PENDING]`
 * or `[special:…]` sections.
 *
 * VMs ({@link rewriteGuestConfig}):
 * - A disk line of a restored device (`scsi0: local:100/vm-100-disk-0.qcow2,size=32G,…`)
 *   gets the new volume id and size; its other options stay.
 * - A restored device without a line gets one.
 * - A disk line of a device that is not in the backup is commented out (it names a disk of
 *   the original guest), unless it is a CD-ROM or `none`.
 *
 * Containers ({@link rewriteContainerConfig}):
 * - The `rootfs:` line gets the new subvolume; its other options (`size=`, `quota=`, …) stay.
 *   Without one, a `rootfs:` line is added.
 * - `mpN:` lines that name a storage volume and `unusedN:` lines are commented out: they name
 *   volumes of the original container (what a backed-up mount point held is in the archive,
 *   so it was restored into the new root file system). Bind mounts (`mp0: /srv/x,mp=/x`) and
 *   device mounts (`/dev/…`) stay.
 *
 * Both: sections after the main one and its `parent:` line are dropped (the snapshots they
 * describe were not restored). Everything else is kept byte for byte, line endings included.
 *
 * @module
 */

/** A disk key: `ide0`, `sata1`, `scsi2`, `virtio3`, `efidisk0`, `tpmstate0`, `unused0`. */
const DISK_KEY = /^(?:ide|sata|scsi|virtio|efidisk|tpmstate|unused)\d+$/;

/** A restored disk. */
export interface RestoredDisk {
  /** Its new volume id. */
  volid: string;
  /** Virtual size in bytes. */
  size: number;
}

/**
 * A size as Proxmox writes it: the largest of T, G, M, K that divides it, else bytes.
 *
 * @example
 * ```ts
 * import { proxmoxSize } from "./guest_config.ts";
 * console.assert(proxmoxSize(32 * 2 ** 30) === "32G" && proxmoxSize(1536) === "1536");
 * ```
 */
export function proxmoxSize(bytes: number): string {
  for (
    const [unit, n] of [["T", 2 ** 40], ["G", 2 ** 30], ["M", 2 ** 20], ["K", 2 ** 10]] as const
  ) {
    if (bytes >= n && bytes % n === 0) return `${bytes / n}${unit}`;
  }
  return String(bytes);
}

/**
 * The configuration for the restored guest.
 *
 * @example
 * ```ts
 * import { rewriteGuestConfig } from "./guest_config.ts";
 * const out = rewriteGuestConfig("memory: 512\nscsi0: local:100/vm-100-disk-0.raw,size=4G,discard=on\n",
 *   { scsi0: { volid: "local:200/vm-200-disk-0.raw", size: 4 * 2 ** 30 } });
 * console.assert(out === "memory: 512\nscsi0: local:200/vm-200-disk-0.raw,size=4G,discard=on\n");
 * ```
 */
export function rewriteGuestConfig(config: string, disks: Record<string, RestoredDisk>): string {
  const done = new Set<string>();
  return rewriteMainSection(config, (key, value, raw) => {
    if (!DISK_KEY.test(key)) return raw;
    const disk = disks[key];
    if (disk) {
      done.add(key);
      const opts = value.split(",").slice(1);
      const withSize = opts.some((o) => o.startsWith("size="))
        ? opts.map((o) => (o.startsWith("size=") ? `size=${proxmoxSize(disk.size)}` : o))
        : opts;
      return `${key}: ${[disk.volid, ...withSize].join(",")}`;
    }
    const keep = /(^|,)media=cdrom(,|$)/.test(value) || /^(none|cdrom)(,|$)/.test(value);
    return keep ? raw : `#${raw}`;
  }, () =>
    Object.entries(disks).filter(([key]) => !done.has(key))
      .map(([key, disk]) => `${key}: ${disk.volid},size=${proxmoxSize(disk.size)}`));
}

/** A container mount point or unused volume key: `mp0`, `unused1`. */
const CONTAINER_VOLUME_KEY = /^(?:mp|unused)\d+$/;

/**
 * The configuration for a restored container whose root file system is now `rootfs` (a
 * volume id).
 *
 * @example
 * ```ts
 * import { rewriteContainerConfig } from "./guest_config.ts";
 * const out = rewriteContainerConfig(
 *   "arch: amd64\nrootfs: local:100/subvol-100-disk-0.subvol,size=8G\nmp0: local:100/x.subvol,mp=/d\n",
 *   "local:200/subvol-200-disk-0.subvol",
 * );
 * console.assert(out === "arch: amd64\nrootfs: local:200/subvol-200-disk-0.subvol,size=8G\n" +
 *   "#mp0: local:100/x.subvol,mp=/d\n");
 * ```
 */
export function rewriteContainerConfig(config: string, rootfs: string): string {
  let seen = false;
  return rewriteMainSection(config, (key, value, raw) => {
    if (key === "rootfs") {
      seen = true;
      return `rootfs: ${[rootfs, ...value.split(",").slice(1)].join(",")}`;
    }
    if (!CONTAINER_VOLUME_KEY.test(key)) return raw;
    const volume = value.split(",")[0];
    // Bind mounts and devices are host paths, not volumes of the original container.
    const hostPath = key.startsWith("mp") && volume.startsWith("/");
    return hostPath ? raw : `#${raw}`;
  }, () => (seen ? [] : [`rootfs: ${rootfs}`]));
}

/**
 * Walks the main section of a configuration: `line` maps each `key: value` line (without its
 * `\r`) to its replacement, `parent:` and everything from the first `[section]` on are
 * dropped, and `append` gives lines to add at the end. Line endings (`\n` or `\r\n`) are kept.
 */
function rewriteMainSection(
  config: string,
  line: (key: string, value: string, raw: string) => string,
  append: () => string[],
): string {
  const out: string[] = [];
  let crlf = false;
  for (const raw of config.split("\n")) {
    const cr = raw.endsWith("\r");
    if (cr) crlf = true;
    const text = cr ? raw.slice(0, -1) : raw;
    if (/^\s*\[/.test(text)) break; // Snapshot and pending sections: not restored.
    const m = /^([a-z][a-z0-9_.-]*):\s?(.*)$/.exec(text);
    if (m && m[1] === "parent") continue;
    out.push(m ? `${line(m[1], m[2], text)}${cr ? "\r" : ""}` : raw);
  }
  // The last element of split() is what followed the final newline, and blank lines before a
  // dropped section go too: the file ends with one newline.
  while (out.length > 0 && /^\r?$/.test(out[out.length - 1])) out.pop();
  for (const extra of append()) out.push(`${extra}${crlf ? "\r" : ""}`);
  return out.join("\n") + (out.length > 0 ? "\n" : "");
}
