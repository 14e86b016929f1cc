/**
 * Example storage plugin `flat`: raw disk images side by side in one directory. Small on
 * purpose: it shows every required member of the plugin API and nothing else. Load it with
 * `volt --plugin plugins/examples/flat.ts …` and a storage.cfg section
 *
 * ```
 * flat: scratch
 * 	path /srv/scratch
 * ```
 *
 * Walked through in docs/plugins.md.
 *
 * @module
 */

import type { Storage, StoragePlugin, VolumeInfo } from "../api.ts";

const NAME = /^(\d+)\/(vm-\1-disk-\d+\.raw)$/;

function dir(storage: Storage): string {
  return storage.options.path as string;
}

/** The `flat` storage type. */
export const plugin: StoragePlugin = {
  type: "flat",
  api: 1,
  description: "example: raw images in one flat directory",
  content: { supported: ["images"], default: ["images"] },
  formats: { supported: ["raw"], default: "raw" },
  options: {
    path: { type: "string", required: true, description: "the directory" },
  },

  parseVolname(volname) {
    const m = NAME.exec(volname);
    if (!m) {
      throw new TypeError(
        `invalid volume name '${volname}': expected <vmid>/vm-<vmid>-disk-<n>.raw`,
      );
    }
    return { vtype: "images", name: m[2], vmid: Number(m[1]), format: "raw" };
  },

  path(storage, volname) {
    return `${dir(storage)}/${this.parseVolname(volname).name}`;
  },

  async activateStorage(storage) {
    await Deno.mkdir(dir(storage), { recursive: true });
  },

  async status(storage) {
    try {
      await Deno.stat(dir(storage));
      return { active: true, total: 0, used: 0, avail: 0 };
    } catch {
      return { active: false, total: 0, used: 0, avail: 0 };
    }
  },

  async allocImage(storage, vmid, format, name, size) {
    if (format !== "raw") throw new Error(`flat storages hold raw images only, not ${format}`);
    for (let n = 0;; n++) {
      const file = name ?? `vm-${vmid}-disk-${n}.raw`;
      const volname = `${vmid}/${file}`;
      this.parseVolname(volname);
      try {
        // createNew makes the name ours atomically: no lock needed.
        using f = await Deno.open(`${dir(storage)}/${file}`, { write: true, createNew: true });
        await f.truncate(size);
        return volname;
      } catch (err) {
        if (name !== undefined || !(err instanceof Deno.errors.AlreadyExists)) throw err;
      }
    }
  },

  async freeImage(storage, volname) {
    await Deno.remove(this.path(storage, volname));
  },

  async listVolumes(storage, filter) {
    const out: VolumeInfo[] = [];
    for await (const e of Deno.readDir(dir(storage))) {
      const m = /^vm-(\d+)-disk-\d+\.raw$/.exec(e.name);
      if (!m || (filter.vmid !== undefined && Number(m[1]) !== filter.vmid)) continue;
      const st = await Deno.stat(`${dir(storage)}/${e.name}`);
      out.push({
        volid: `${storage.id}:${m[1]}/${e.name}`,
        format: "raw",
        size: st.size,
        used: (st.blocks ?? 0) * 512,
        vmid: Number(m[1]),
        content: "images",
        ctime: Math.floor((st.mtime?.getTime() ?? 0) / 1000),
      });
    }
    return out;
  },

  async volumeSizeInfo(storage, volname) {
    const st = await Deno.stat(this.path(storage, volname));
    return { format: "raw", size: st.size, used: (st.blocks ?? 0) * 512 };
  },
};
