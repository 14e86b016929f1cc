/**
 * Keeping file access inside a storage: a path is accepted only if, with every symlink
 * resolved, it stays under the storage's root.
 *
 * @module
 */

import { VoltError } from "../errors.ts";

/**
 * Throws {@link VoltError} naming `what` when `path` (or, when it does not exist yet, its
 * nearest existing ancestor) resolves outside `root`. Catches a content directory that is a
 * symlink pointing elsewhere.
 *
 * @example
 * ```ts
 * import { assertInside } from "./contained_path.ts";
 * const root = Deno.makeTempDirSync();
 * assertInside(root, `${root}/images/100/x.raw`, "volume 'x'");
 * ```
 */
export function assertInside(root: string, path: string, what: string): void {
  let realRoot: string;
  try {
    realRoot = Deno.realPathSync(root);
  } catch {
    return; // Storage not there yet: activation reports it.
  }
  let probe = path;
  for (;;) {
    try {
      const real = Deno.realPathSync(probe);
      if (
        real !== realRoot && !real.startsWith(realRoot.endsWith("/") ? realRoot : `${realRoot}/`)
      ) {
        throw new VoltError(
          `${what}: '${path}' resolves to '${real}', outside the storage '${root}'`,
        );
      }
      return;
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      const cut = probe.lastIndexOf("/");
      if (cut <= 0) return;
      probe = probe.slice(0, cut);
    }
  }
}

/** Joins a storage root and a relative path. */
export function joinPath(root: string, rel: string): string {
  return root.endsWith("/") ? root + rel : `${root}/${rel}`;
}
