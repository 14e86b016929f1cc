/**
 * Before any image that came from a backup storage is opened by qemu, walk its whole backing
 * chain ourselves, reading only qcow2 headers, and refuse it unless every link is a plain
 * qcow2 file inside the guest's backup directory. A crafted image could otherwise make
 * `qemu-img` read `/etc/passwd`, another guest's backup, a `json:{…}` pseudo-file or an
 * external data file. (The seed's example skips this; its own comment says a real
 * implementation must not.)
 *
 * @module
 */

import { VoltError } from "../errors.ts";
import { readQcow2Header } from "../qcow2/header.ts";

/** Limits of {@link assertSafeBackupChain}. */
export interface ChainGuardOptions {
  /** Every link must resolve (symlinks too) inside this directory. */
  root: string;
  /** Longest chain accepted: the number of backups of the guest. */
  maxDepth: number;
}

/** Lexically normalizes an absolute path (`.`, `..`, repeated slashes). */
export function normalizePath(path: string): string {
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") out.pop();
    else out.push(part);
  }
  return `/${out.join("/")}`;
}

function inside(root: string, path: string): boolean {
  const r = root.endsWith("/") ? root : `${root}/`;
  return path.startsWith(r);
}

/**
 * Checks the chain that starts at `image` and returns its files, top first. Throws
 * {@link VoltError} naming the offending file for: a link that is not qcow2, a backing file
 * given as a protocol or `json:` name, an absolute backing path, a backing file outside
 * `root` (lexically or through a symlink), a backing format other than qcow2, an external data
 * file, encryption, a loop, or a chain longer than `maxDepth`.
 */
export async function assertSafeBackupChain(
  image: string,
  options: ChainGuardOptions,
): Promise<string[]> {
  let realRoot: string;
  try {
    realRoot = await Deno.realPath(options.root);
  } catch {
    throw new VoltError(`backup directory '${options.root}' does not exist`);
  }
  const chain: string[] = [];
  const seen = new Set<string>();
  const root = normalizePath(options.root);
  let current = normalizePath(image);
  /** Where `current` resolves; refuses a path outside the root, missing, or through a symlink out. */
  const resolve = async (path: string, refuse: (why: string) => VoltError, label: string) => {
    if (!inside(root, path)) throw refuse(`${label} is outside the guest's backup directory`);
    let real: string;
    try {
      real = await Deno.realPath(path);
    } catch {
      throw refuse(`${label} does not exist`);
    }
    if (!inside(realRoot, real)) {
      throw refuse(`${label} resolves to '${real}', outside the guest's backup directory`);
    }
    return real;
  };
  let real = await resolve(
    current,
    (why) => new VoltError(`unsafe backup image '${current}': ${why}; refusing to read it`),
    "the image",
  );
  for (;;) {
    const refuse = (why: string) =>
      new VoltError(`unsafe backup image '${current}': ${why}; refusing to read it`);
    if (seen.has(real)) throw refuse("its backing chain loops");
    seen.add(real);
    if (chain.length >= options.maxDepth) {
      throw refuse(`backing chain deeper than the ${options.maxDepth} backups of this guest`);
    }
    const st = await Deno.stat(real);
    if (!st.isFile) throw refuse("not a regular file");
    let h;
    try {
      h = await readQcow2Header(real);
    } catch (err) {
      throw refuse((err as Error).message.replace(/^.*?: /, ""));
    }
    if (h.dataFile !== undefined) throw refuse(`it uses an external data file '${h.dataFile}'`);
    if (h.cryptMethod !== 0) throw refuse("it is encrypted");
    chain.push(current);
    const b = h.backingFile;
    if (b === undefined) return chain;
    if (/^[a-z][a-z0-9+.-]*:/i.test(b) || b.startsWith("json:")) {
      throw refuse(`its backing file '${b}' is a protocol or json: name`);
    }
    if (b.startsWith("/")) throw refuse(`its backing file '${b}' is an absolute path`);
    if (h.backingFormat !== undefined && h.backingFormat !== "qcow2") {
      throw refuse(`its backing file has format '${h.backingFormat}', not qcow2`);
    }
    const next = normalizePath(`${current.slice(0, current.lastIndexOf("/"))}/${b}`);
    real = await resolve(next, refuse, `its backing file '${b}'`);
    current = next;
  }
}
