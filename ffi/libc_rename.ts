/**
 * Exchanging two directory entries atomically (`renameat2` with `RENAME_EXCHANGE`): both
 * names exist before, during and after the call, each naming the other's file or directory
 * afterwards. Deno's `rename` cannot do this. Used to replace a backup directory by its
 * rewritten copy so that a crash never leaves the backup's name empty.
 *
 * Linux (glibc 2.28 or later; the kernel call exists since 3.15). Not every file system
 * supports the flag: ext4, xfs, btrfs, tmpfs and f2fs do; NFS and CIFS do not and fail with
 * `EINVAL` — see {@link ExchangeUnsupportedError}.
 *
 * @module
 */

import { errno, OsCallError } from "./libc.ts";

const SYMBOLS = {
  // int renameat2 (int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
  //                unsigned int flags);
  renameat2: { parameters: ["i32", "buffer", "i32", "buffer", "u32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** `AT_FDCWD`: relative paths are relative to the working directory. */
const AT_FDCWD = -100;
/** `renameat2` flag: swap the two names. */
const RENAME_EXCHANGE = 2;
/** errno values meaning "this file system or kernel cannot exchange". */
const UNSUPPORTED = new Set([22, /* EINVAL */ 38, /* ENOSYS */ 95 /* EOPNOTSUPP */]);

let loaded: Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] | undefined;

function sym(): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] {
  loaded ??= Deno.dlopen("libc.so.6", SYMBOLS).symbols;
  return loaded;
}

/** The file system (or kernel) of the paths cannot exchange two names atomically. */
export class ExchangeUnsupportedError extends OsCallError {
  constructor(op: string, code: number) {
    super(op, code);
    this.name = "ExchangeUnsupportedError";
  }
}

const encoder = new TextEncoder();

/**
 * Swaps the names `a` and `b` (files or directories, on one file system) in one atomic step.
 * Throws {@link ExchangeUnsupportedError} when the file system or kernel cannot (`EINVAL`,
 * `ENOSYS`, `EOPNOTSUPP`), {@link OsCallError} for any other failure (`ENOENT`: one is missing,
 * `EXDEV`: different file systems). Not durable by itself: `fsync` the parent directory.
 *
 * @example
 * ```ts
 * import { exchangePaths } from "./libc_rename.ts";
 * const d = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(`${d}/a`, "A");
 * Deno.writeTextFileSync(`${d}/b`, "B");
 * exchangePaths(`${d}/a`, `${d}/b`);
 * console.assert(Deno.readTextFileSync(`${d}/a`) === "B");
 * Deno.removeSync(d, { recursive: true });
 * ```
 */
export function exchangePaths(a: string, b: string): void {
  const r = sym().renameat2(
    AT_FDCWD,
    encoder.encode(`${a}\0`),
    AT_FDCWD,
    encoder.encode(`${b}\0`),
    RENAME_EXCHANGE,
  );
  if (r === 0) return;
  const code = errno();
  const op = `renameat2(RENAME_EXCHANGE) '${a}' <-> '${b}'`;
  if (UNSUPPORTED.has(code)) throw new ExchangeUnsupportedError(op, code);
  throw new OsCallError(op, code);
}
