/**
 * Reading a volume chain from its files, without letting qemu open anything first: every
 * link is read from the qcow2 header (`lib/qcow2/header.ts`) and checked with
 * `checkQcow2Links` before the next file is looked at. The chain is the truth; nothing else
 * records it.
 *
 * {@link scanVolume} adds what lies beside the chain in the volume's directory: volt's
 * temporary files (an operation that did not finish) and snapshot files of the volume that the
 * chain does not reference.
 *
 * @module
 */

import { VoltError } from "../errors.ts";
import { readQcow2Header } from "../qcow2/header.ts";
import { checkQcow2Links } from "../storage/image_size.ts";
import { assertInside } from "../storage/contained_path.ts";
import { type ChainOperation, parseTempFileName, snapNameOfFile } from "./names.ts";

/** A qcow2 volume whose snapshots live in a chain of files (or inside the file). */
export interface SnapshotVolume {
  /** `storeid:vmid/volfile`. */
  volid: string;
  /** Storage id. */
  storeid: string;
  /** Storage path: no file of the chain may resolve outside it. */
  root: string;
  /** Directory of the volume (`<root>/images/<vmid>`). */
  dir: string;
  /** File name of the volume (`vm-100-disk-0.qcow2`). */
  volfile: string;
  /** Image format (snapshots need qcow2). */
  format: string;
  /** Snapshots as volume chains (`snapshot-as-volume-chain`); else qcow2 internal snapshots. */
  chain: boolean;
  /** The storage's preallocation for new qcow2 overlays (`off`, `metadata`, …). */
  preallocation?: string;
}

/** One file of a chain. */
export interface ChainFile {
  /** File name when it is in the volume's directory, else the backing name as recorded. */
  file: string;
  /** Absolute path. */
  path: string;
  /** `current`, a snapshot name, or undefined for a file that is not a volt snapshot. */
  snap?: string;
  /** Backing file name as recorded in the header. */
  backing?: string;
  /** Virtual size in bytes (from the header). */
  size: number;
  stat: Deno.FileInfo;
}

/** The files of a chain, top (`current`) first. */
export interface Chain {
  files: ChainFile[];
}

const MAX_DEPTH = 1000;

/**
 * Why {@link readChain} refused a chain: `unsafe` (a link that could reach outside the storage:
 * nothing may touch it) or `broken` (a file missing, unreadable or not qcow2).
 */
export class ChainError extends VoltError {
  readonly kind: "unsafe" | "broken";
  constructor(kind: "unsafe" | "broken", message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ChainError";
    this.kind = kind;
  }
}

/** The path of a file in the volume's directory. */
export function volumeFile(vol: SnapshotVolume, file: string): string {
  return `${vol.dir}/${file}`;
}

/** `volume '<volid>'`, for messages. */
export function volumeWhat(vol: SnapshotVolume): string {
  return `volume '${vol.volid}'`;
}

/**
 * Reads the chain from the volume's file down to the file without a backing file. Refuses,
 * with a {@link ChainError} naming the file, as `unsafe`: a symlink, a protocol or `json:`
 * name, an external data file, a backing file that resolves outside the storage, a loop; as
 * `broken`: a missing volume or backing file, a file that is not qcow2.
 */
export async function readChain(vol: SnapshotVolume): Promise<Chain> {
  const what = volumeWhat(vol);
  const files: ChainFile[] = [];
  const seen = new Set<string>();
  let path = volumeFile(vol, vol.volfile);
  let file = vol.volfile;
  let child: string | undefined;
  for (;;) {
    let stat: Deno.FileInfo;
    try {
      stat = await Deno.lstat(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      if (child === undefined) throw new ChainError("broken", `${what} does not exist`);
      throw new ChainError(
        "broken",
        `${what}: backing file '${file}' of '${child}' is missing: the chain is broken`,
      );
    }
    try {
      assertInside(vol.root, path, what);
    } catch (err) {
      throw new ChainError("unsafe", (err as Error).message);
    }
    if (stat.isSymlink) {
      throw new ChainError(
        "unsafe",
        `${what}: '${file}' in the chain is a symbolic link: refusing it`,
      );
    }
    if (!stat.isFile) {
      throw new ChainError("broken", `${what}: '${file}' in the chain is not a regular file`);
    }
    const key = `${stat.dev}:${stat.ino}`;
    if (seen.has(key) || files.length >= MAX_DEPTH) {
      throw new ChainError("unsafe", `${what}: the backing chain loops back to '${file}'`);
    }
    seen.add(key);
    let header;
    try {
      header = await readQcow2Header(path);
    } catch (err) {
      throw new ChainError("broken", `${what}: ${(err as Error).message}`);
    }
    let backing: string | undefined;
    try {
      backing = await checkQcow2Links(path, vol.root, `${what}: '${file}'`);
    } catch (err) {
      throw new ChainError("unsafe", (err as Error).message);
    }
    const inDir = path.slice(0, path.lastIndexOf("/")) === vol.dir;
    files.push({
      file,
      path,
      snap: inDir ? snapNameOfFile(vol.volfile, file) : undefined,
      backing,
      size: header.size,
      stat,
    });
    if (backing === undefined) break;
    if (header.backingFormat !== undefined && header.backingFormat !== "qcow2") {
      throw new ChainError(
        "broken",
        `${what}: backing file '${backing}' of '${file}' has format '${header.backingFormat}': ` +
          "volume chains are qcow2 only",
      );
    }
    const dir = path.slice(0, path.lastIndexOf("/"));
    child = file;
    path = backing.startsWith("/") ? backing : `${dir}/${backing}`;
    file = path.slice(0, path.lastIndexOf("/")) === vol.dir
      ? path.slice(path.lastIndexOf("/") + 1)
      : backing;
  }
  return { files };
}

/** A temporary file of an operation that did not finish. */
export interface TempFile {
  file: string;
  path: string;
  op: ChainOperation;
  snap: string;
  stat: Deno.FileInfo;
}

/** A snapshot file of the volume that the chain does not reference. */
export interface StrayFile {
  file: string;
  path: string;
  snap: string;
  stat: Deno.FileInfo;
  /** The chain file it is a hard link of, if any (a leftover of an interrupted operation). */
  linkOf?: ChainFile;
}

/** The chain and what lies beside it. */
export interface VolumeScan {
  chain: Chain;
  temps: TempFile[];
  strays: StrayFile[];
}

/** Does `a` name the same inode as `b`? */
export function sameFile(a: Deno.FileInfo, b: Deno.FileInfo): boolean {
  return a.ino !== null && a.ino === b.ino && a.dev === b.dev;
}

/**
 * The volume's temporary files and the snapshot files of the volume outside its chain.
 * `snap-<x>-<volfile>` is ambiguous when another volume's file name ends in `-<volfile>`; such
 * files are left to that volume.
 */
export async function scanDirectory(
  vol: SnapshotVolume,
  chain: Chain | undefined,
): Promise<{ temps: TempFile[]; strays: StrayFile[] }> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(vol.dir)) names.push(e.name);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  names.sort();
  const others = names.filter((n) =>
    n !== vol.volfile && n.endsWith(`-${vol.volfile}`) && !n.startsWith("snap-") &&
    /\.(qcow2|raw|vmdk)$/.test(n)
  );
  const inChain = new Set((chain?.files ?? []).map((f) => f.path));
  const temps: TempFile[] = [];
  const strays: StrayFile[] = [];
  for (const name of names) {
    const path = volumeFile(vol, name);
    const temp = parseTempFileName(vol.volfile, name);
    if (temp) {
      const stat = await Deno.lstat(path).catch(() => undefined);
      if (stat) temps.push({ file: name, path, ...temp, stat });
      continue;
    }
    const snap = snapNameOfFile(vol.volfile, name);
    if (snap === undefined || snap === "current" || inChain.has(path)) continue;
    if (others.some((o) => name.endsWith(`-${o}`))) continue; // Another volume's snapshot.
    const stat = await Deno.lstat(path).catch(() => undefined);
    if (!stat) continue;
    const linkOf = stat.isFile ? chain?.files.find((f) => sameFile(f.stat, stat)) : undefined;
    strays.push({ file: name, path, snap, stat, linkOf });
  }
  return { temps, strays };
}

/** Reads the chain (refusing an unsafe one) and scans the directory beside it. */
export async function scanVolume(vol: SnapshotVolume): Promise<VolumeScan> {
  const chain = await readChain(vol);
  return { chain, ...(await scanDirectory(vol, chain)) };
}

/** The volt snapshots of a chain, oldest first (foreign files and `current` left out). */
export function chainSnapshots(chain: Chain): ChainFile[] {
  return chain.files.filter((f) => f.snap !== undefined && f.snap !== "current").reverse();
}
