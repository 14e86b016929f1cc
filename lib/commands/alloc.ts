/**
 * `volt alloc <storage> <vmid> <filename|auto> <size>`: a new image or subvolume.
 *
 * @module
 */

import { type CommandSpec, stringOpt } from "../cli/command.ts";
import { parseSize } from "../size.ts";
import type { Storages } from "../storage/storages.ts";
import { parseVmid, storagesFromArgs } from "./common.ts";

/** Options of {@link runAlloc}. */
export interface AllocOptions {
  storage: string;
  vmid: number;
  /** File name, or undefined for the next free `vm-<vmid>-disk-<n>`. */
  name?: string;
  /** Bytes. */
  size: number;
  /** Image format; default: the name's extension, else the storage's `format`, else the plugin's default. */
  format?: string;
}

/** Allocates the volume and returns its volume id. */
export async function runAlloc(storages: Storages, options: AllocOptions): Promise<string> {
  const h = await storages.get(options.storage);
  const ext = options.name && /\.(raw|qcow2|vmdk|subvol)$/.exec(options.name)?.[1];
  const format = options.format ?? ext ?? (h.storage.options.format as string | undefined) ??
    h.plugin.formats?.default ?? "raw";
  const volname = await h.plugin.allocImage(
    h.storage,
    options.vmid,
    format,
    options.name,
    options.size,
  );
  return `${h.storage.id}:${volname}`;
}

/** `volt alloc`. */
export const allocCommand: CommandSpec = {
  name: "alloc",
  summary: "allocate a disk image or subvolume and print its volume id",
  args: "<storage> <vmid> <filename|auto> <size>",
  details:
    "Size in bytes or with K, M, G, T (binary). 'auto' takes the next free vm-<vmid>-disk-<n>.",
  positionals: [4, 4],
  options: {
    format: { type: "string", arg: "FORMAT", description: "raw, qcow2, vmdk or subvol" },
  },
  async run(args) {
    const [storage, vmid, name, size] = args.positionals;
    const storages = await storagesFromArgs(args);
    const volid = await runAlloc(storages, {
      storage,
      vmid: parseVmid(vmid),
      name: name === "auto" ? undefined : name,
      size: parseSize(size),
      format: stringOpt(args, "format"),
    });
    console.log(`successfully created '${volid}'`);
  },
};
