/**
 * The persistent dirty bitmap volt keeps inside an offline qcow2 disk, one per backup storage
 * (as Proxmox keeps one per backup target): `volt-<storeid>`. A bitmap that qemu flags
 * `in-use` (the image was not closed cleanly) is inconsistent and treated as absent.
 *
 * @module
 */

import { run } from "../run.ts";

/** The bitmap name volt uses for a backup storage. */
export function bitmapName(storeid: string): string {
  return `volt-${storeid}`;
}

/** A persistent bitmap as `qemu-img info` reports it. */
export interface ImageBitmap {
  name: string;
  granularity: number;
  flags: string[];
}

/** The persistent bitmaps of a qcow2 image. */
export async function listBitmaps(image: string): Promise<ImageBitmap[]> {
  const { stdout } = await run("qemu-img", ["info", "-U", "-f", "qcow2", "--output=json", image]);
  const info = JSON.parse(stdout) as {
    "format-specific"?: { data?: { bitmaps?: ImageBitmap[] } };
  };
  return info["format-specific"]?.data?.bitmaps ?? [];
}

/** Whether `name` exists and is consistent (not flagged in-use). */
export async function hasUsableBitmap(image: string, name: string): Promise<boolean> {
  const b = (await listBitmaps(image)).find((x) => x.name === name);
  return b !== undefined && !b.flags.includes("in-use");
}

/**
 * Starts tracking from now: creates the bitmap, or empties it if it exists (an in-use one is
 * removed and created again).
 */
export async function resetBitmap(
  image: string,
  name: string,
  granularity?: number,
): Promise<void> {
  const existing = (await listBitmaps(image)).find((x) => x.name === name);
  if (existing && !existing.flags.includes("in-use")) {
    await run("qemu-img", ["bitmap", "-f", "qcow2", "--clear", image, name]);
    return;
  }
  if (existing) await run("qemu-img", ["bitmap", "-f", "qcow2", "--remove", image, name]);
  const args = ["bitmap", "-f", "qcow2", "--add"];
  if (granularity) args.push("-g", String(granularity));
  await run("qemu-img", [...args, image, name]);
}
