/**
 * The `qemu-img` calls of snapshot handling, one function each, so that every step of an
 * operation names exactly one program run. Callers have checked every file of the chain with
 * {@link readChain} (`./chain.ts`) before qemu opens any of it.
 *
 * @module
 */

import { VoltError } from "../errors.ts";
import { lastLine, run } from "../run.ts";

/** Cluster layout of every overlay, as Proxmox creates them. */
export const OVERLAY_OPTIONS = "extended_l2=on,cluster_size=128k";

/**
 * Creates the qcow2 overlay `path` on top of `backing` (a name relative to the overlay's
 * directory), `size` bytes, with the storage's preallocation.
 */
export async function createOverlay(
  path: string,
  backing: string,
  size: number,
  preallocation?: string,
): Promise<void> {
  const opts = preallocation && preallocation !== "off"
    ? `${OVERLAY_OPTIONS},preallocation=${preallocation}`
    : OVERLAY_OPTIONS;
  await run("qemu-img", [
    "create",
    "-q",
    "-f",
    "qcow2",
    "-F",
    "qcow2",
    "-b",
    backing,
    "-o",
    opts,
    path,
    String(size),
  ]);
}

/**
 * Writes the data of `path` into its backing file. The top image is left as it is (`-d`): the
 * caller replaces it.
 */
export async function commitImage(path: string): Promise<void> {
  await run("qemu-img", ["commit", "-q", "-d", "-f", "qcow2", "-t", "writeback", path]);
}

/**
 * Safe rebase of `path` onto `backing` (relative to its directory): copies what differs, then
 * rewrites the header. Until the header is written, the image still reads through its old
 * backing file with the same content.
 */
export async function rebaseImage(path: string, backing: string): Promise<void> {
  await run("qemu-img", [
    "rebase",
    "-q",
    "-f",
    "qcow2",
    "-t",
    "writeback",
    "-F",
    "qcow2",
    "-b",
    backing,
    path,
  ]);
}

/** Sets the virtual size of a qcow2 image (`shrink` allows making it smaller). */
export async function resizeImage(path: string, size: number, shrink = false): Promise<void> {
  const args = ["resize", "-q", "-f", "qcow2"];
  if (shrink) args.push("--shrink");
  await run("qemu-img", [...args, path, String(size)]);
}

/** One image of `qemu-img info --backing-chain --output=json`. */
export interface QemuImageInfo {
  filename: string;
  format: string;
  "virtual-size": number;
  "actual-size"?: number;
  "backing-filename"?: string;
  "full-backing-filename"?: string;
  snapshots?: QemuInternalSnapshot[];
}

/** An internal snapshot as `qemu-img info --output=json` reports it. */
export interface QemuInternalSnapshot {
  id: string;
  name: string;
  "date-sec": number;
  "vm-state-size": number;
}

/** `qemu-img info --backing-chain --output=json -U`: the chain as qemu sees it, top first. */
export async function backingChainInfo(path: string): Promise<QemuImageInfo[]> {
  const { stdout } = await run("qemu-img", [
    "info",
    "--backing-chain",
    "--output=json",
    "-U",
    "-f",
    "qcow2",
    path,
  ]);
  const parsed = parseJson(stdout, "qemu-img info");
  return (Array.isArray(parsed) ? parsed : [parsed]) as QemuImageInfo[];
}

/** `qemu-img info --output=json -U` of one image (its backing file is not opened). */
export async function imageInfo(path: string): Promise<QemuImageInfo> {
  const { stdout } = await run("qemu-img", ["info", "--output=json", "-U", "-f", "qcow2", path]);
  return parseJson(stdout, "qemu-img info") as QemuImageInfo;
}

/** What `qemu-img check` found. */
export interface ImageCheck {
  /** The check ran to the end. */
  completed: boolean;
  corruptions: number;
  leaks: number;
  /** Leaked clusters fixed (with `repairLeaks`). */
  leaksFixed: number;
  /** qemu-img's message when the check could not run. */
  error?: string;
}

/**
 * `qemu-img check` of one qcow2 file; with `repairLeaks`, `-r leaks` (frees leaked clusters,
 * the only repair that cannot change what the image reads).
 */
export async function checkImage(path: string, repairLeaks = false): Promise<ImageCheck> {
  const args = ["check", "--output=json", "-f", "qcow2"];
  if (repairLeaks) args.push("-r", "leaks");
  const r = await run("qemu-img", [...args, path], { allowFailure: true });
  let json: Record<string, number> | undefined;
  try {
    json = JSON.parse(r.stdout) as Record<string, number>;
  } catch {
    json = undefined;
  }
  if (!json || (r.code !== 0 && r.code !== 2 && r.code !== 3)) {
    return {
      completed: false,
      corruptions: 0,
      leaks: 0,
      leaksFixed: 0,
      error: lastLine(r.stderr) || `qemu-img check exited with ${r.code}`,
    };
  }
  return {
    completed: true,
    corruptions: json.corruptions ?? 0,
    leaks: json.leaks ?? 0,
    leaksFixed: json["leaks-fixed"] ?? 0,
  };
}

/** `qemu-img snapshot -c|-a|-d <name>`: internal snapshots of a qcow2 file. */
export async function internalSnapshot(
  action: "create" | "apply" | "delete",
  path: string,
  name: string,
): Promise<void> {
  const flag = { create: "-c", apply: "-a", delete: "-d" }[action];
  // `qemu-img snapshot` has no -f: the format is probed, and the caller has read the qcow2 header.
  await run("qemu-img", ["snapshot", "-q", flag, name, path]);
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new VoltError(`${what} printed something that is not JSON`);
  }
}
