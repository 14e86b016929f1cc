/**
 * Size facts of an image file, without letting qemu open anything unsafe: a qcow2's backing
 * file and external data file are read from its header first and must stay inside the storage.
 *
 * @module
 */

import type { VolumeSize } from "../../plugins/api.ts";
import { VoltError } from "../errors.ts";
import { readQcow2Header } from "../qcow2/header.ts";
import { run } from "../run.ts";
import { assertInside } from "./contained_path.ts";
import { vmdkParent } from "./vmdk_parent.ts";

/** Bytes allocated on disk for a file (`st_blocks * 512`). */
export function allocatedBytes(stat: Deno.FileInfo): number {
  return stat.blocks !== null ? stat.blocks * 512 : stat.size;
}

/**
 * Refuses a qcow2 whose backing file or data file could reach outside `root`: a protocol or
 * `json:` name, an external data file, or a path that resolves outside. Returns the backing
 * file name (as recorded) when there is one.
 */
export async function checkQcow2Links(
  path: string,
  root: string,
  what: string,
): Promise<string | undefined> {
  const h = await readQcow2Header(path).catch((err) => {
    throw new VoltError(`${what}: ${(err as Error).message}`);
  });
  if (h.dataFile !== undefined) {
    throw new VoltError(`${what}: uses an external data file '${h.dataFile}': refusing to open it`);
  }
  const b = h.backingFile;
  if (b === undefined) return undefined;
  if (/^[a-z][a-z0-9+.-]*:/i.test(b)) {
    throw new VoltError(
      `${what}: backing file '${b}' is a protocol or json: name: refusing to open it`,
    );
  }
  const dir = path.slice(0, path.lastIndexOf("/"));
  const target = b.startsWith("/") ? b : `${dir}/${b}`;
  try {
    assertInside(root, target, what);
  } catch {
    throw new VoltError(
      `${what}: backing file '${b}' points outside the storage: refusing to open it`,
    );
  }
  if (b.split("/").includes("..")) {
    throw new VoltError(`${what}: backing file '${b}' contains '..': refusing to open it`);
  }
  return b;
}

/**
 * Virtual size and usage of an image. raw: file size rounded up to 512 bytes (as `qemu-img
 * info` reports it); qcow2/vmdk: `qemu-img info --output=json` after the safety checks;
 * subvol: size 0, usage from `du`.
 */
export async function imageSize(
  path: string,
  format: string,
  root: string,
  what: string,
): Promise<VolumeSize> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) throw new VoltError(`${what} does not exist`);
    throw err;
  }
  if (format === "subvol") {
    if (!stat.isDirectory) throw new VoltError(`${what}: '${path}' is not a directory`);
    const { stdout } = await run("du", ["-s", "-B1", "-x", path]);
    return { format, size: 0, used: Number(stdout.split(/\s/)[0]) || 0 };
  }
  if (!stat.isFile) throw new VoltError(`${what}: '${path}' is not a regular file`);
  if (format !== "qcow2" && format !== "vmdk") {
    return { format, size: Math.ceil(stat.size / 512) * 512, used: allocatedBytes(stat) };
  }
  let backing: string | undefined;
  if (format === "qcow2") backing = await checkQcow2Links(path, root, what);
  else await assertPlainVmdk(path, what);
  const { stdout } = await run("qemu-img", ["info", "-U", "-f", format, "--output=json", path]);
  const info = JSON.parse(stdout) as { "virtual-size": number; "actual-size"?: number };
  return {
    format,
    size: info["virtual-size"],
    used: info["actual-size"] ?? allocatedBytes(stat),
    backing,
  };
}

/**
 * Only monolithic sparse vmdk files (magic `KDMV`) that name no parent are opened: a text
 * descriptor or a `parentFileNameHint` would make qemu open other files.
 */
async function assertPlainVmdk(path: string, what: string): Promise<void> {
  let parent: string | undefined;
  try {
    parent = await vmdkParent(path);
  } catch {
    throw new VoltError(
      `${what}: not a monolithic sparse vmdk (a descriptor file may name other files): refusing to open it`,
    );
  }
  if (parent !== undefined) {
    throw new VoltError(`${what} names a parent image '${parent}': refusing to read it`);
  }
}
