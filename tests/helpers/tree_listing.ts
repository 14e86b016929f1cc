/**
 * Test helper: a listing of a directory tree with everything a container backup must keep,
 * so two trees compare with one `deepEqual`: per entry its path, type, numeric owner, mode
 * (with setuid/setgid/sticky), mtime (whole seconds: squashfs keeps no more), size, content
 * hash, whether it is sparse, symlink target, hard-link group, xattrs (`getfattr`) and POSIX
 * ACL (`getfacl`), from the Debian packages `attr` and `acl` that scripts/setup installs.
 *
 * The content hash reads only the data extents (`SEEK_DATA`), so a 1 GiB sparse file costs
 * what its data costs. It is the sha256 of the file's non-zero 4 KiB blocks, each preceded by
 * its offset (u64 LE), then the size: equal for equal contents, however the holes lie.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { dataExtents } from "../../lib/streams/extents.ts";
import { closeFd, O, openFd, preadFull } from "../../lib/streams/fd.ts";
import { isZero } from "../../lib/streams/sparse_writer.ts";
import { sh } from "./volt.ts";

/** One entry of a {@link treeListing}. */
export interface TreeEntry {
  /** Relative to the root, `.` for the root itself. */
  path: string;
  type: "file" | "dir" | "symlink" | "fifo" | "socket" | "char" | "block";
  uid: number;
  gid: number;
  /** Permission bits with setuid, setgid and sticky, in octal (`4755`). */
  mode: string;
  /** Modification time in whole seconds. */
  mtime: number;
  /** Files: size in bytes. */
  size?: number;
  /** Files: content hash (see the module doc). */
  content?: string;
  /** Files: fewer bytes allocated than the size. */
  sparse?: boolean;
  /** Symlinks: where they point. */
  target?: string;
  /** Files with other names in the tree: the first of those names (sorted). */
  hardLink?: string;
  /** Extended attributes other than ACLs, values in hex (`0x…`). */
  xattrs?: Record<string, string>;
  /** Extended POSIX ACL entries (`getfacl -n`), access and default; absent for plain modes. */
  acl?: string[];
}

/**
 * Lists the tree under `root`, sorted by path. Does not follow symlinks or cross into other
 * file systems' contents any differently than `lstat` does (it just walks directories).
 *
 * @example
 * ```ts
 * import { treeListing } from "./tree_listing.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(`${dir}/a`, "x");
 * const list = await treeListing(dir);
 * console.assert(list.map((e) => e.path).join() === ".,a");
 * ```
 */
export async function treeListing(root: string): Promise<TreeEntry[]> {
  root = root.replace(/(.)\/+$/, "$1");
  const entries: TreeEntry[] = [];
  const inodes = new Map<string, string[]>();
  const walk = async (rel: string) => {
    const abs = rel === "." ? root : `${root}/${rel}`;
    const info = await Deno.lstat(abs);
    const entry: TreeEntry = {
      path: rel,
      type: typeOf(info),
      uid: info.uid ?? -1,
      gid: info.gid ?? -1,
      mode: ((info.mode ?? 0) & 0o7777).toString(8).padStart(4, "0"),
      mtime: Math.floor((info.mtime?.getTime() ?? 0) / 1000),
    };
    entries.push(entry);
    if (info.isFile) {
      entry.size = info.size;
      entry.content = contentHash(abs, info.size);
      entry.sparse = (info.blocks ?? 0) * 512 < info.size;
      if ((info.nlink ?? 1) > 1) {
        const key = `${info.dev}:${info.ino}`;
        inodes.set(key, [...(inodes.get(key) ?? []), rel]);
      }
    } else if (info.isSymlink) {
      entry.target = await Deno.readLink(abs);
    } else if (info.isDirectory) {
      const names: string[] = [];
      for await (const e of Deno.readDir(abs)) names.push(e.name);
      for (const name of names.sort()) await walk(rel === "." ? name : `${rel}/${name}`);
    }
  };
  await walk(".");

  const byPath = new Map(entries.map((e) => [e.path, e]));
  for (const paths of inodes.values()) {
    if (paths.length < 2) continue;
    const first = [...paths].sort()[0];
    for (const p of paths) byPath.get(p)!.hardLink = first;
  }
  for (const [path, xattrs] of await readXattrs(root)) byPath.get(path)!.xattrs = xattrs;
  for (const [path, acl] of await readAcls(root)) byPath.get(path)!.acl = acl;
  return entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

function typeOf(info: Deno.FileInfo): TreeEntry["type"] {
  if (info.isFile) return "file";
  if (info.isDirectory) return "dir";
  if (info.isSymlink) return "symlink";
  if (info.isFifo) return "fifo";
  if (info.isSocket) return "socket";
  if (info.isCharDevice) return "char";
  if (info.isBlockDevice) return "block";
  throw new Error("unknown file type");
}

const BLOCK = 4096;

/** Hash of the non-zero 4 KiB blocks with their offsets, then the size; holes are skipped. */
function contentHash(path: string, size: number): string {
  const hash = createHash("sha256");
  const fd = openFd(path, O.RDONLY);
  try {
    const buf = new Uint8Array(1 << 20);
    const offset = new DataView(new ArrayBuffer(8));
    let next = 0; // first block not hashed yet
    for (const extent of dataExtents(fd, 0, size)) {
      if (!extent.data) continue;
      const end = extent.offset + extent.length;
      let pos = Math.max(next, Math.floor(extent.offset / BLOCK) * BLOCK);
      while (pos < end) {
        const n = preadFull(fd, buf.subarray(0, Math.min(buf.length, end - pos)), pos);
        if (n === 0) break;
        for (let i = 0; i < n; i += BLOCK) {
          const block = buf.subarray(i, Math.min(n, i + BLOCK));
          if (isZero(block)) continue;
          offset.setBigUint64(0, BigInt(pos + i), true);
          hash.update(new Uint8Array(offset.buffer));
          hash.update(block);
        }
        pos += Math.ceil(n / BLOCK) * BLOCK;
      }
      next = pos;
    }
    offset.setBigUint64(0, BigInt(size), true);
    hash.update(new Uint8Array(offset.buffer));
  } finally {
    closeFd(fd);
  }
  return hash.digest("hex");
}

/** `getfattr` output blocks: `# file: <path>` then lines, one block per file. */
function* fileBlocks(text: string, root: string): Generator<[string, string[]]> {
  for (const block of text.split(/\n(?=# file: )/)) {
    const lines = block.split("\n").filter((l) => l.length > 0);
    const head = lines.shift();
    if (!head?.startsWith("# file: ")) continue;
    const abs = unescape(head.slice("# file: ".length));
    const rel = abs === root ? "." : abs.startsWith(`${root}/`) ? abs.slice(root.length + 1) : "";
    if (rel) yield [rel, lines.filter((l) => !l.startsWith("#"))];
  }
}

/** getfattr/getfacl escape unusual bytes in names as `\ooo` and `\` as `\\`. */
function unescape(name: string): string {
  return name.replace(
    /\\(\\|[0-7]{3})/g,
    (_, s: string) => s === "\\" ? "\\" : String.fromCharCode(parseInt(s, 8)),
  );
}

async function readXattrs(root: string): Promise<Map<string, Record<string, string>>> {
  const out = await sh("getfattr", [
    "--absolute-names",
    "--recursive",
    "--physical",
    "--no-dereference",
    "--dump",
    "--match=-",
    "--encoding=hex",
    root,
  ]);
  const result = new Map<string, Record<string, string>>();
  for (const [path, lines] of fileBlocks(out, root)) {
    const xattrs: Record<string, string> = {};
    for (const line of lines) {
      const eq = line.indexOf("=");
      const name = eq < 0 ? line : line.slice(0, eq);
      if (name.startsWith("system.posix_acl_")) continue; // in `acl`
      xattrs[name] = eq < 0 ? "" : line.slice(eq + 1);
    }
    if (Object.keys(xattrs).length > 0) result.set(path, xattrs);
  }
  return result;
}

async function readAcls(root: string): Promise<Map<string, string[]>> {
  const out = await sh("getfacl", [
    "--absolute-names",
    "--recursive",
    "--physical",
    "--numeric",
    "--skip-base",
    root,
  ]);
  return new Map(fileBlocks(out, root));
}
