/**
 * Container archives for the directory backup mechanism: a container's root file system
 * written to one file and read back, with the archivers Proxmox uses.
 *
 * - `tar`: GNU tar with Proxmox's flags ({@link COMMON_TAR_FLAGS}: one file system, numeric
 *   owners, permissions including setuid, sparse files, POSIX ACLs, `user.*` and
 *   `security.capability` xattrs), hard links and symlinks as tar keeps them. Extracted with
 *   the same flags, as `pct restore` does.
 * - `squashfs`: `mksquashfs` (`-no-exports -xattrs -one-file-system`), extracted with
 *   `unsquashfs`. Keeps owners, modes, setuid, symlinks, hard links, sparse files and the
 *   `user.*`, `trusted.*` and `security.*` xattrs, but NOT POSIX ACLs: squashfs has no place
 *   for `system.posix_acl_*` (mksquashfs says "Unrecognised xattr prefix" and goes on). A file
 *   with an ACL comes back with its plain mode bits, whose group bits are the ACL's mask. Use
 *   `tar` for containers that rely on ACLs.
 *
 * Exclude patterns follow vzdump (see `exclude_patterns.ts`); `lost+found` is never archived,
 * as in the seed's directory provider. A bandwidth limit (KiB/s) pipes tar's output through a
 * throttle; mksquashfs writes its file itself, so it is paused (`SIGSTOP`) whenever the
 * archive has grown faster than the limit (looked at every 25 ms). An `AbortSignal` kills the
 * archiver; a failed or interrupted archive is removed. Any non-zero exit fails, also tar's 1
 * ("file changed as we read it"): archive a stopped container or a snapshot.
 *
 * @module
 */

import { VoltError } from "../errors.ts";
import { COMMON_TAR_FLAGS } from "../streams/tar.ts";
import { ArchiverProcess, interruption } from "./archiver_process.ts";
import { mksquashfsExcludeArgs, tarExcludeArgs } from "./exclude_patterns.ts";
import { RateLimiter, SYSTEM_CLOCK, throttleStream } from "./throttle.ts";

/** How a container's file system is archived (`lxc-backup-mode`). */
export type ContainerArchiveFormat = "tar" | "squashfs";

/** Options for {@link createContainerArchive}. */
export interface CreateContainerArchiveOptions {
  format: ContainerArchiveFormat;
  /** The container's root directory. */
  directory: string;
  /** The archive file to write. It must not exist. */
  target: string;
  /**
   * Paths below `directory` to archive (default `["."]`), e.g. `["." , "./mnt/data"]` to
   * include a mount point that `--one-file-system` would skip. tar only: a squashfs archive
   * holds exactly one tree.
   */
  sources?: readonly string[];
  /** vzdump exclude patterns: `/path` anchored at the root, anything else at any depth. */
  excludePatterns?: readonly string[];
  /** Bandwidth limit in KiB/s; 0 or absent: none. */
  bandwidthLimit?: number;
  /** Stops the archiver; the partial archive is removed. */
  signal?: AbortSignal;
  /** Gets the archiver's warnings, one line each (`tar: …`, `mksquashfs: …`). */
  log?: (line: string) => void;
}

/** What {@link createContainerArchive} wrote. */
export interface ContainerArchiveResult {
  format: ContainerArchiveFormat;
  /** Size of the archive file in bytes. */
  size: number;
}

/**
 * Writes the tree under `directory` (minus the excluded paths) into a new archive file.
 * Throws a {@link VoltError} naming what failed (one line), after removing the partial file.
 *
 * @example
 * ```ts
 * import { createContainerArchive } from "./container_archive.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(`${dir}/hello`, "hi");
 * const target = `${Deno.makeTempDirSync()}/archive.tar`;
 * const { size } = await createContainerArchive({ format: "tar", directory: dir, target });
 * console.assert(size > 0);
 * ```
 */
export async function createContainerArchive(
  options: CreateContainerArchiveOptions,
): Promise<ContainerArchiveResult> {
  const { format, directory, target } = options;
  const sources = options.sources ?? ["."];
  const limit = options.bandwidthLimit ?? 0;
  const what = `archiving ${directory} into ${target}`;
  if (format !== "tar" && format !== "squashfs") {
    throw new TypeError(`unknown container archive format '${format}': use tar or squashfs`);
  }
  if (!(limit >= 0) || !Number.isFinite(limit)) {
    throw new RangeError(`bandwidth limit must be a non-negative number of KiB/s, not ${limit}`);
  }
  checkSources(format, sources);
  await assertDirectory(directory, "container directory");

  let file: Deno.FsFile;
  try {
    file = await Deno.open(target, { createNew: true, write: true });
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists) {
      throw new VoltError(`${what} failed: '${target}' already exists`);
    }
    throw new VoltError(`${what} failed: cannot create '${target}': ${(err as Error).message}`);
  }
  try {
    if (format === "tar") await writeTar(options, sources, limit, file, what);
    else {
      file.close();
      await writeSquashfs(options, limit, what);
    }
    return { format, size: (await Deno.stat(target)).size };
  } catch (err) {
    await Deno.remove(target).catch(() => {});
    throw err;
  }
}

/** tar: into the file directly, or through a throttle when there is a bandwidth limit. */
async function writeTar(
  o: CreateContainerArchiveOptions,
  sources: readonly string[],
  limit: number,
  file: Deno.FsFile,
  what: string,
): Promise<void> {
  const args = [
    "--create",
    `--file=${limit > 0 ? "-" : o.target}`,
    ...COMMON_TAR_FLAGS,
    "--warning=no-file-ignored",
    `--directory=${o.directory}`,
    ...tarExcludeArgs(o.excludePatterns ?? []),
    "--",
    ...sources,
  ];
  if (limit === 0) {
    file.close();
    await ArchiverProcess.spawn("tar", args, { what, signal: o.signal, log: o.log }).wait();
    return;
  }
  let tar: ArchiverProcess;
  try {
    tar = ArchiverProcess.spawn("tar", args, {
      what,
      stdout: "piped",
      signal: o.signal,
      log: o.log,
    });
  } catch (err) {
    file.close();
    throw err;
  }
  try {
    // pipeTo closes the file at the end and on errors.
    await tar.stdout.pipeThrough(throttleStream(limit, { signal: o.signal })).pipeTo(file.writable);
  } catch (err) {
    tar.kill();
    await tar.done();
    if (o.signal?.aborted) throw interruption(what, o.signal);
    throw new VoltError(`${what} failed: writing '${o.target}': ${(err as Error).message}`, {
      cause: err,
    });
  }
  await tar.wait();
}

/** mksquashfs: writes the file itself; paused while it is ahead of the bandwidth limit. */
async function writeSquashfs(
  o: CreateContainerArchiveOptions,
  limit: number,
  what: string,
): Promise<void> {
  const args = [
    o.directory,
    o.target,
    "-noappend",
    "-no-exports",
    "-xattrs",
    "-one-file-system",
    "-quiet",
    "-no-progress",
    ...mksquashfsExcludeArgs(o.excludePatterns ?? []), // must be last
  ];
  const mksquashfs = ArchiverProcess.spawn("mksquashfs", args, {
    what,
    signal: o.signal,
    log: o.log,
  });
  if (limit > 0) await holdToLimit(mksquashfs, o.target, limit * 1024);
  await mksquashfs.wait();
}

const POLL_MS = 25;

/**
 * Until `proc` exits: every {@link POLL_MS} ms, looks how much `path` has grown and pauses
 * the process for as long as it is ahead of `bytesPerSecond`.
 */
async function holdToLimit(proc: ArchiverProcess, path: string, bytesPerSecond: number) {
  const limiter = new RateLimiter(bytesPerSecond);
  const stop = new AbortController();
  const exited = proc.done().then(() => stop.abort());
  let seen = 0;
  try {
    while (!proc.exited) {
      await SYSTEM_CLOCK.sleep(POLL_MS, stop.signal);
      const size = (await Deno.stat(path).catch(() => ({ size: seen }))).size;
      const wait = limiter.delayFor(Math.max(0, size - seen));
      seen = Math.max(seen, size);
      if (wait <= 0 || proc.exited) continue;
      proc.pause();
      try {
        await SYSTEM_CLOCK.sleep(wait, stop.signal);
      } finally {
        proc.resume();
      }
    }
  } catch {
    // The process exited (or was killed) while we waited.
  } finally {
    stop.abort();
    await exited;
  }
}

/** Options for {@link extractContainerArchive}. */
export interface ExtractContainerArchiveOptions {
  /** Default: recognized from the file's first bytes ({@link detectArchiveFormat}). */
  format?: ContainerArchiveFormat;
  /** Stops the archiver; what was extracted so far stays in the target. */
  signal?: AbortSignal;
  /** Gets the archiver's warnings, one line each. */
  log?: (line: string) => void;
}

/**
 * Extracts a container archive into the existing directory `target`, keeping numeric owners,
 * modes (setuid too), symlinks, hard links, xattrs, ACLs (tar only) and holes. A tar archive
 * may be compressed (gzip, zstd, xz, bzip2, lzop: GNU tar recognizes them), so a vzdump
 * `.tar.zst` extracts too. Throws a {@link VoltError} naming what failed.
 *
 * @example
 * ```ts
 * import { createContainerArchive, extractContainerArchive } from "./container_archive.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(`${dir}/hello`, "hi");
 * const target = `${Deno.makeTempDirSync()}/archive.sqfs`;
 * await createContainerArchive({ format: "squashfs", directory: dir, target });
 * const out = Deno.makeTempDirSync();
 * await extractContainerArchive(target, out);
 * console.assert(Deno.readTextFileSync(`${out}/hello`) === "hi");
 * ```
 */
export async function extractContainerArchive(
  archive: string,
  target: string,
  options: ExtractContainerArchiveOptions = {},
): Promise<void> {
  const what = `extracting ${archive} into ${target}`;
  await assertDirectory(target, "restore target");
  const format = options.format ?? await detectArchiveFormat(archive);
  const run = {
    what,
    signal: options.signal,
    log: options.log,
    leftBehind: "the target directory holds a partial tree",
  };
  if (format === "tar") {
    const args = ["--extract", `--file=${archive}`, ...COMMON_TAR_FLAGS, `--directory=${target}`];
    await ArchiverProcess.spawn("tar", args, run).wait();
  } else {
    const args = ["-quiet", "-no-progress", "-xattrs", "-force", "-dest", target, archive];
    await ArchiverProcess.spawn("unsquashfs", args, run).wait();
  }
}

/** First bytes of the archive formats we recognize. */
const MAGIC: [ContainerArchiveFormat, number, number[]][] = [
  ["squashfs", 0, [0x68, 0x73, 0x71, 0x73]], // "hsqs"
  ["tar", 257, [0x75, 0x73, 0x74, 0x61, 0x72]], // "ustar" (POSIX and GNU headers)
  ["tar", 0, [0x28, 0xb5, 0x2f, 0xfd]], // zstd
  ["tar", 0, [0x1f, 0x8b]], // gzip
  ["tar", 0, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]], // xz
  ["tar", 0, [0x42, 0x5a, 0x68]], // bzip2
  ["tar", 0, [0x89, 0x4c, 0x5a, 0x4f]], // lzop
];

/**
 * Whether `path` is a squashfs image or a (possibly compressed) tar archive, from its first
 * bytes. Throws a {@link VoltError} for anything else.
 *
 * @example
 * ```ts
 * import { createContainerArchive, detectArchiveFormat } from "./container_archive.ts";
 * const target = `${Deno.makeTempDirSync()}/archive.tar`;
 * await createContainerArchive({ format: "tar", directory: Deno.makeTempDirSync(), target });
 * console.assert(await detectArchiveFormat(target) === "tar");
 * ```
 */
export async function detectArchiveFormat(path: string): Promise<ContainerArchiveFormat> {
  const head = new Uint8Array(512);
  let n = 0;
  try {
    using file = await Deno.open(path, { read: true });
    while (n < head.length) {
      const got = await file.read(head.subarray(n));
      if (got === null) break;
      n += got;
    }
  } catch (err) {
    throw new VoltError(`cannot read archive '${path}': ${(err as Error).message}`);
  }
  for (const [format, offset, bytes] of MAGIC) {
    if (offset + bytes.length <= n && bytes.every((b, i) => head[offset + i] === b)) return format;
  }
  throw new VoltError(`'${path}' is neither a tar archive nor a squashfs image`);
}

/** Sources must stay below the directory: relative, without `..`. */
function checkSources(format: ContainerArchiveFormat, sources: readonly string[]): void {
  if (sources.length === 0) throw new TypeError("no sources to archive: give at least '.'");
  for (const s of sources) {
    if (s.startsWith("/") || s.split("/").includes("..") || s.length === 0 || /[\0\n]/.test(s)) {
      throw new TypeError(`archive source '${s}' must be a relative path below the directory`);
    }
  }
  if (format === "squashfs" && !(sources.length === 1 && sources[0] === ".")) {
    throw new TypeError(
      `a squashfs archive holds one tree ('.'), not ${sources.join(", ")}: use the tar format`,
    );
  }
}

async function assertDirectory(path: string, role: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (err) {
    throw new VoltError(`${role} '${path}' cannot be used: ${(err as Error).message}`);
  }
  if (!info.isDirectory) throw new VoltError(`${role} '${path}' is not a directory`);
}
