/**
 * Where the data is: the data and hole extents of a file (`lseek` with `SEEK_DATA` and
 * `SEEK_HOLE`, so a raw export never reads a hole from disk), and the guest-visible layout of
 * a qcow2 or vmdk image (`qemu-img map`), which lets volt convert an image to raw by copying
 * ranges of its files straight into the stream instead of running `qemu-img convert`
 * (which cannot write into a pipe).
 *
 * @module
 */

import { VoltError } from "../errors.ts";
import { isQcow2, readQcow2Header } from "../qcow2/header.ts";
import { lastLine } from "../run.ts";
import { checkQcow2Links } from "../storage/image_size.ts";
import { errno } from "../../ffi/libc.ts";
import { E, OsCallError, SEEK, sys } from "../../ffi/libc_fd.ts";

/** A run of a file that holds data or is a hole. */
export interface FileExtent {
  /** Start in the file. */
  offset: number;
  /** Length in bytes. */
  length: number;
  /** Data (true) or a hole (false). */
  data: boolean;
}

/**
 * The data and hole extents of the open file `fd` between `start` and `end`, found lazily
 * (one `lseek` pair per extent). A file system without `SEEK_DATA` reports all data.
 *
 * @example
 * ```ts
 * import { dataExtents } from "./extents.ts";
 * import { O, openFd, closeFd } from "./fd.ts";
 * const path = Deno.makeTempFileSync();
 * Deno.truncateSync(path, 1 << 20);
 * const fd = openFd(path, O.RDONLY);
 * const list = [...dataExtents(fd, 0, 1 << 20)];
 * console.assert(list.every((e) => !e.data));
 * closeFd(fd);
 * ```
 */
export function* dataExtents(fd: number, start: number, end: number): Generator<FileExtent> {
  const libc = sys();
  let pos = start;
  while (pos < end) {
    let data = Number(libc.lseek(fd, BigInt(pos), SEEK.DATA));
    if (data < 0) {
      const code = errno();
      if (code === E.ENXIO) data = end; // Only a hole remains.
      else if (code === E.EINVAL || code === E.EOPNOTSUPP) {
        yield { offset: pos, length: end - pos, data: true };
        return;
      } else throw new OsCallError("lseek SEEK_DATA", code);
    }
    data = Math.min(data, end);
    if (data > pos) yield { offset: pos, length: data - pos, data: false };
    if (data >= end) return;
    let hole = Number(libc.lseek(fd, BigInt(data), SEEK.HOLE));
    if (hole < 0) hole = end;
    hole = Math.min(hole, end);
    yield { offset: data, length: hole - data, data: true };
    pos = hole;
  }
}

/**
 * The guest-visible layout of an image as `qemu-img map` reports it, kept compactly (four
 * numbers per extent) because a fragmented image can have very many.
 */
export class ImageMap {
  /** Virtual size: the sum of all extents. */
  size = 0;
  /** An extent whose data cannot be read from a file offset (compressed, encrypted). */
  opaque = false;
  /** Deepest backing level any extent comes from (0: the image itself). */
  maxDepth = 0;
  #count = 0;
  // length, depth, file offset (-1: none), kind (0 zero, 1 data)
  #cols = new Float64Array(4 * 1024);

  /** Number of extents. */
  get count(): number {
    return this.#count;
  }

  /** Adds an extent, merging it with the previous one when they continue each other. */
  add(length: number, data: boolean, depth: number, fileOffset: number): void {
    this.size += length;
    if (!data) {
      depth = 0;
      fileOffset = -1;
    }
    if (data && depth > this.maxDepth) this.maxDepth = depth;
    const c = this.#cols;
    if (this.#count > 0) {
      const i = (this.#count - 1) * 4;
      const kind = data ? 1 : 0;
      if (
        c[i + 3] === kind &&
        (kind === 0 ||
          (c[i + 1] === depth && c[i + 2] >= 0 && fileOffset >= 0 &&
            c[i + 2] + c[i] === fileOffset))
      ) {
        c[i] += length;
        return;
      }
    }
    if ((this.#count + 1) * 4 > c.length) {
      const bigger = new Float64Array(c.length * 2);
      bigger.set(c);
      this.#cols = bigger;
    }
    const j = this.#count * 4;
    this.#cols[j] = length;
    this.#cols[j + 1] = depth;
    this.#cols[j + 2] = fileOffset;
    this.#cols[j + 3] = data ? 1 : 0;
    this.#count++;
  }

  /** The extents in order: zeros, or data at `fileOffset` in backing level `depth`. */
  *extents(): Generator<{ length: number; data: boolean; depth: number; fileOffset: number }> {
    for (let i = 0; i < this.#count; i++) {
      const j = i * 4;
      yield {
        length: this.#cols[j],
        depth: this.#cols[j + 1],
        fileOffset: this.#cols[j + 2],
        data: this.#cols[j + 3] === 1,
      };
    }
  }
}

interface MapEntry {
  start: number;
  length: number;
  depth: number;
  zero: boolean;
  data: boolean;
  offset?: number;
}

/**
 * Runs `qemu-img map --output=json` on an image that has passed the safety checks and
 * collects its layout. The output (one extent per line) is parsed as it arrives.
 */
export async function readImageMap(path: string, format: string): Promise<ImageMap> {
  const child = new Deno.Command("qemu-img", {
    args: ["map", "--output=json", "-f", format, path],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const map = new ImageMap();
  let expected = 0;
  let pending = "";
  const handle = (line: string) => {
    const text = line.trim().replace(/^\[/, "").replace(/[,\]]$/, "").trim();
    if (text === "") return;
    const e = JSON.parse(text) as MapEntry;
    if (e.start !== expected) throw new SyntaxError(`qemu-img map: gap at ${expected}`);
    expected = e.start + e.length;
    // Zero: reads as zeros. Data with an offset: those bytes of that backing level's file.
    // Anything else (compressed, or not known to qemu) must be read through qemu.
    const data = !e.zero;
    if (data && (!e.data || e.offset === undefined)) map.opaque = true;
    map.add(e.length, data, e.depth, e.offset ?? -1);
  };
  const decoder = new TextDecoder();
  try {
    for await (const chunk of child.stdout) {
      pending += decoder.decode(chunk, { stream: true });
      const lines = pending.split("\n");
      pending = lines.pop()!;
      for (const line of lines) handle(line);
    }
    handle(pending);
  } catch (err) {
    child.kill();
    await child.status;
    throw new VoltError(`cannot read the layout of '${path}': ${(err as Error).message}`);
  }
  const status = await child.status;
  if (!status.success) {
    throw new VoltError(`qemu-img map failed: ${lastLine(await stderr) || `exit ${status.code}`}`);
  }
  return map;
}

/**
 * The files of an image's backing chain, the image first, each checked before qemu opens it:
 * a qcow2 backing file must stay inside `root` (no protocol, `json:` or external data file).
 * A non-qcow2 backing file ends the chain.
 */
export async function imageChain(path: string, format: string, root: string): Promise<string[]> {
  const files = [path];
  if (format !== "qcow2") return files;
  let current = path;
  for (let depth = 0; depth < 1000; depth++) {
    const backing = await checkQcow2Links(current, root, `'${current}'`);
    if (backing === undefined) return files;
    const dir = current.slice(0, current.lastIndexOf("/"));
    const next = backing.startsWith("/") ? backing : `${dir}/${backing}`;
    if (files.includes(next)) {
      throw new VoltError(`'${path}': its backing chain loops at '${next}'`);
    }
    files.push(next);
    const header = await readQcow2Header(current);
    const backingFormat = header.backingFormat ?? ((await isQcow2(next)) ? "qcow2" : "raw");
    if (backingFormat !== "qcow2") return files;
    current = next;
  }
  throw new VoltError(`'${path}': backing chain deeper than 1000 images`);
}
