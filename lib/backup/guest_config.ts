/**
 * Rewriting a backed-up guest configuration for its restored disks. The configuration is
 * Proxmox's `qemu-server` format: `key: value` lines, then `[snapshot]`, `[PENDING]` or
 * `[special:…]` sections.
 *
 * - A disk line of a restored device (`scsi0: local:100/vm-100-disk-0.qcow2,size=32G,…`)
 *   gets the new volume id and size; its other options stay.
 * - A restored device without a line gets one.
 * - A disk line of a device that is not in the backup is commented out (it names a disk of
 *   the original guest), unless it is a CD-ROM or `none`.
 * - Sections after the main one and its `parent:` line are dropped: the snapshots they
 *   describe were not restored.
 *
 * Everything else is kept byte for byte, line endings included.
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
  const lines = config.split("\n");
  const out: string[] = [];
  const done = new Set<string>();
  let eol = "\n";
  for (const raw of lines) {
    const cr = raw.endsWith("\r");
    if (cr) eol = "\r\n";
    const line = cr ? raw.slice(0, -1) : raw;
    if (/^\s*\[/.test(line)) break; // Snapshot and pending sections: not restored.
    const m = /^([a-z][a-z0-9_-]*):\s?(.*)$/.exec(line);
    if (m && m[1] === "parent") continue;
    if (m && DISK_KEY.test(m[1])) {
      const key = m[1];
      const value = m[2];
      const disk = disks[key];
      if (disk) {
        done.add(key);
        const opts = value.split(",").slice(1);
        const withSize = opts.some((o) => o.startsWith("size="))
          ? opts.map((o) => (o.startsWith("size=") ? `size=${proxmoxSize(disk.size)}` : o))
          : opts;
        out.push(`${key}: ${[disk.volid, ...withSize].join(",")}${cr ? "\r" : ""}`);
        continue;
      }
      const keep = /(^|,)media=cdrom(,|$)/.test(value) || /^(none|cdrom)(,|$)/.test(value);
      out.push(keep ? raw : `#${raw}`);
      continue;
    }
    out.push(raw);
  }
  // The last element of split() is what followed the final newline: keep the file's ending.
  while (out.length > 0 && out[out.length - 1] === "") out.pop();
  for (const [key, disk] of Object.entries(disks)) {
    if (!done.has(key)) {
      out.push(`${key}: ${disk.volid},size=${proxmoxSize(disk.size)}${eol === "\r\n" ? "\r" : ""}`);
    }
  }
  return out.join("\n") + (out.length > 0 ? "\n" : "");
}
