/**
 * The one vmdk question volt must answer before letting qemu open an image: does this
 * monolithic sparse vmdk name a parent? Its embedded descriptor can carry a
 * `parentFileNameHint`, which qemu opens as a backing file: in an imported image it could
 * name any file on the host. Header layout (little-endian, VMware's "Virtual Disk Format
 * 1.1"): magic `KDMV` at 0, descriptor offset at 28 and size at 36, both u64 in 512-byte
 * sectors.
 *
 * @module
 */

/** The largest embedded descriptor volt reads (they are about 1 KiB). */
const MAX_DESCRIPTOR = 64 * 1024;

/**
 * The `parentFileNameHint` of a monolithic sparse vmdk, or undefined when it names none.
 * Throws `SyntaxError` when the file is not a monolithic sparse vmdk (magic `KDMV`).
 *
 * @example
 * ```ts ignore
 * import { vmdkParent } from "./vmdk_parent.ts";
 * if (await vmdkParent("disk.vmdk")) throw new Error("has a parent");
 * ```
 */
export async function vmdkParent(path: string): Promise<string | undefined> {
  using f = await Deno.open(path, { read: true });
  const head = new Uint8Array(512);
  const n = await readFull(f, head, 0);
  const view = new DataView(head.buffer);
  if (n < 44 || new TextDecoder().decode(head.subarray(0, 4)) !== "KDMV") {
    throw new SyntaxError(
      `'${path}' is not a monolithic sparse vmdk (a descriptor file may name other files)`,
    );
  }
  const offset = Number(view.getBigUint64(28, true)) * 512;
  const size = Number(view.getBigUint64(36, true)) * 512;
  if (offset === 0 || size === 0) return undefined;
  const text = new Uint8Array(Math.min(size, MAX_DESCRIPTOR));
  const got = await readFull(f, text, offset);
  const descriptor = new TextDecoder().decode(text.subarray(0, got));
  const m = /^\s*parentFileNameHint\s*=\s*"([^"]*)"/m.exec(descriptor);
  return m && m[1] !== "" ? m[1] : undefined;
}

async function readFull(f: Deno.FsFile, buf: Uint8Array, offset: number): Promise<number> {
  await f.seek(offset, Deno.SeekMode.Start);
  let got = 0;
  while (got < buf.length) {
    const n = await f.read(buf.subarray(got));
    if (n === null) break;
    got += n;
  }
  return got;
}
