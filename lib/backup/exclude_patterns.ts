/**
 * Container backup exclude patterns, as vzdump takes them (`--exclude-path`): a pattern that
 * starts with `/` is anchored at the container's root (`/var/log` is only the root's
 * `var/log`), any other matches at any depth (`*.tmp`, `cache`). Shell wildcards apply.
 *
 * Translated like Proxmox does (seed 003, `PVE/VZDump/LXC.pm`):
 * - GNU tar: `--no-anchored --exclude=PATTERN …` for the floating ones, then `--anchored
 *   --exclude=./PATTERN …` for the anchored ones (members are named `./…`).
 * - mksquashfs: `-wildcards` and one trailing `-e` list (everything after `-e` is a pattern):
 *   `... PATTERN` (any depth) for floating ones, the pattern without its leading `/` for
 *   anchored ones (relative to the source directory).
 *
 * Like the seed's directory provider, `lost+found` is always excluded, at any depth.
 *
 * One difference remains between the two tools: in tar a `*` also matches `/`, in mksquashfs
 * it does not (`/var/*.log` excludes `/var/a/b.log` from a tar archive, not from squashfs).
 *
 * @module
 */

/** Always excluded, at any depth, as in the seed's directory backup provider. */
export const ALWAYS_EXCLUDED: readonly string[] = ["lost+found"];

/** A pattern split into where it applies and what it matches. */
interface Pattern {
  anchored: boolean;
  /** Without the leading `/` of an anchored pattern and without trailing `/`. */
  glob: string;
}

/**
 * Checks and normalizes the patterns: trailing slashes are dropped (`/tmp/` is `/tmp`); an
 * empty pattern, `/` alone, or one with a newline or NUL is refused with a `TypeError`.
 */
function parsePatterns(patterns: readonly string[]): Pattern[] {
  return [...ALWAYS_EXCLUDED, ...patterns].map((raw) => {
    if (/[\0\n]/.test(raw)) {
      throw new TypeError(`exclude pattern ${JSON.stringify(raw)} has a newline or NUL`);
    }
    const anchored = raw.startsWith("/");
    const glob = raw.replace(/^\/+/, "").replace(/\/+$/, "");
    if (glob.length === 0) {
      throw new TypeError(`exclude pattern '${raw}' is empty or excludes everything`);
    }
    return { anchored, glob };
  });
}

/**
 * GNU tar arguments for `patterns` (put them before the sources).
 *
 * @example
 * ```ts
 * import { tarExcludeArgs } from "./exclude_patterns.ts";
 * console.assert(tarExcludeArgs(["/var/log", "*.tmp"]).join(" ") ===
 *   "--no-anchored --exclude=lost+found --exclude=*.tmp --anchored --exclude=./var/log");
 * ```
 */
export function tarExcludeArgs(patterns: readonly string[]): string[] {
  const parsed = parsePatterns(patterns);
  return [
    "--no-anchored",
    ...parsed.filter((p) => !p.anchored).map((p) => `--exclude=${p.glob}`),
    "--anchored",
    ...parsed.filter((p) => p.anchored).map((p) => `--exclude=./${p.glob}`),
  ];
}

/**
 * mksquashfs arguments for `patterns`: `-wildcards -e …`. They must come last on the command
 * line (mksquashfs reads everything after `-e` as a pattern).
 *
 * @example
 * ```ts
 * import { mksquashfsExcludeArgs } from "./exclude_patterns.ts";
 * console.assert(mksquashfsExcludeArgs(["/var/log", "*.tmp"]).join(" ") ===
 *   "-wildcards -e ... lost+found ... *.tmp var/log");
 * ```
 */
export function mksquashfsExcludeArgs(patterns: readonly string[]): string[] {
  const parsed = parsePatterns(patterns);
  return [
    "-wildcards",
    "-e",
    ...parsed.filter((p) => !p.anchored).map((p) => `... ${p.glob}`),
    ...parsed.filter((p) => p.anchored).map((p) => p.glob),
  ];
}
