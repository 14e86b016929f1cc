/**
 * Markers of disk imports in progress, so that a volume whose importer was killed outright
 * (`kill -9`, the OOM killer, a power cut of the process tree) does not stay behind
 * half-written: the next import into the same directory frees it.
 *
 * An import allocates its volume, then writes `.<file>.volt-import` beside it: the volume
 * name, the importer's pid and start time (`/proc/<pid>/stat`, so a reused pid does not count
 * as alive) and the volume's identity (device, inode, birth time). The marker goes when the
 * import ends, either way. {@link sweepKilledImports} frees the volume of every marker whose
 * importer is gone, and only when the file at that path is still the one the marker names
 * (same device, inode and birth time): a volume someone created later under the same name is
 * never touched. On a file system without birth times an inode number could be handed out
 * again, so there the volume is named for the user to check, not freed.
 *
 * A mark is written under a temporary name (`….volt-import.<pid>.tmp`) and renamed into
 * place; one whose writer is gone is removed by the sweep.
 *
 * On failure the import removes its marker before it frees the volume, never after: killed
 * in between, it leaves a volume without a marker (as before markers existed), not a marker
 * that could outlive its volume.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import { processStart, stillRunning } from "../process_start.ts";

/** What a marker file holds (JSON). */
interface MarkerRecord {
  volname: string;
  pid: number;
  /** The importer's start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`). */
  start: number;
  dev: number;
  ino: number;
  /** Birth time of the volume in ms since the epoch; null where the file system has none. */
  birth: number | null;
}

const SUFFIX = ".volt-import";

/** The marker of the volume at `path`. */
function markerPath(path: string): string {
  return join(dirname(path), `.${basename(path)}${SUFFIX}`);
}

async function identity(path: string): Promise<Pick<MarkerRecord, "dev" | "ino" | "birth">> {
  const s = await Deno.lstat(path);
  return { dev: s.dev, ino: s.ino ?? 0, birth: s.birthtime?.getTime() || null };
}

/**
 * Marks the freshly allocated volume `volname` at `path` as being imported by this process;
 * resolves to the function that removes the mark.
 *
 * @example
 * ```ts
 * import { markImport } from "./import_marker.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeFileSync(`${dir}/vm-1-disk-0.raw`, new Uint8Array(1));
 * const unmark = await markImport(`${dir}/vm-1-disk-0.raw`, "1/vm-1-disk-0.raw");
 * await unmark();
 * ```
 */
export async function markImport(path: string, volname: string): Promise<() => Promise<void>> {
  const record: MarkerRecord = {
    volname,
    pid: Deno.pid,
    start: processStart("self") ?? 0,
    ...(await identity(path)),
  };
  const marker = markerPath(path);
  const tmp = `${marker}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify(record));
  await Deno.rename(tmp, marker);
  return () => Deno.remove(marker).catch(() => {});
}

/**
 * Frees, through `free`, every volume in `dir` whose importer was killed before it could
 * clean up, and removes its marker; `log` says what was freed. A marker whose importer still
 * runs is left alone; one that cannot be read, or whose volume is gone or is another file
 * now, is only removed. A volume `free` cannot free keeps its marker (the next import
 * tries again) and is reported.
 */
export async function sweepKilledImports(
  dir: string,
  free: (volname: string) => Promise<void>,
  log: (message: string) => void,
): Promise<void> {
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch {
    return; // no directory yet: nothing was ever imported here
  }
  for (const e of entries) {
    if (!e.isFile || !e.name.startsWith(".")) continue;
    const torn = /\.volt-import\.(\d+)\.tmp$/.exec(e.name);
    if (torn && processStart(Number(torn[1])) === undefined) {
      // A mark its importer was killed while writing: it never named a volume.
      await Deno.remove(join(dir, e.name)).catch(() => {});
      continue;
    }
    if (!e.name.endsWith(SUFFIX)) continue;
    const marker = join(dir, e.name);
    const volume = join(dir, e.name.slice(1, -SUFFIX.length));
    let record: MarkerRecord;
    try {
      record = JSON.parse(await Deno.readTextFile(marker));
    } catch {
      // Torn or foreign: written through a temporary name and renamed, so not ours.
      continue;
    }
    if (stillRunning(record.pid, record.start)) continue; // still importing
    const now = await identity(volume).catch(() => undefined);
    const sameInode = now !== undefined && now.dev === record.dev && now.ino === record.ino;
    if (sameInode && now.birth === null) {
      // Without a birth time an inode number can be handed out again: do not guess.
      log(
        `'${record.volname}' may be left half-imported by an import that was killed (pid ${record.pid}): check it, and free it with 'volt free' if it is`,
      );
    } else if (sameInode && now.birth === record.birth) {
      try {
        await free(record.volname);
      } catch (err) {
        log(
          `cannot free '${record.volname}', left half-imported by an import that was killed (pid ${record.pid}): ${
            (err as Error).message
          }`,
        );
        continue;
      }
      log(
        `freed '${record.volname}': an import killed earlier (pid ${record.pid}) left it half-written`,
      );
    }
    await Deno.remove(marker).catch(() => {});
  }
}
