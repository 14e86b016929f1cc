/**
 * The file-system steps of chain operations, each made durable before the next one starts:
 * a hard link, a rename over an existing name and an unlink are followed by an `fsync` of the
 * directory; a file qemu wrote is synced before it is renamed into place.
 *
 * @module
 */

import { VoltError } from "../errors.ts";

/** `fsync` of a directory, so that links, renames and unlinks in it survive a crash. */
export async function syncDir(dir: string): Promise<void> {
  using d = await Deno.open(dir, { read: true });
  await d.sync();
}

/** `fsync` of a file. */
export async function syncFile(path: string): Promise<void> {
  using f = await Deno.open(path, { read: true, write: true });
  await f.sync();
}

/**
 * Hard link `target` as `newPath` (which must not exist). Volume chains need hard links: the
 * error says so when the file system has none.
 */
export async function hardLink(target: string, newPath: string): Promise<void> {
  try {
    await Deno.link(target, newPath);
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists) {
      throw new VoltError(`'${newPath}' already exists`);
    }
    if (err instanceof Deno.errors.NotSupported || err instanceof Deno.errors.PermissionDenied) {
      throw new VoltError(
        `cannot hard link '${target}' as '${newPath}': volume chains need a file system with ` +
          `hard links (${(err as Error).message})`,
      );
    }
    throw err;
  }
}

/** Removes a file; a missing one is fine. */
export async function removeFile(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

/** `lstat`, or undefined when the path does not exist. */
export async function lstatOrUndefined(path: string): Promise<Deno.FileInfo | undefined> {
  try {
    return await Deno.lstat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
}

/** Sets a file's access and modification times back to those in `stat` (best effort). */
export async function restoreTimes(path: string, stat: Deno.FileInfo): Promise<void> {
  if (!stat.mtime) return;
  await Deno.utime(path, stat.atime ?? stat.mtime, stat.mtime).catch(() => {});
}
