/**
 * Small file-system questions shared across volt.
 *
 * @module
 */

/**
 * Whether anything (file, directory, dangling symlink) exists at `path`. Only "not found"
 * answers false; any other error (permission, I/O) is thrown.
 *
 * @example
 * ```ts
 * import { pathExists } from "./fs.ts";
 * console.assert(await pathExists("/"));
 * ```
 */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}
