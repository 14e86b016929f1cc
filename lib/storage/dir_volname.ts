/**
 * Volume names and paths of a directory storage, exactly as Proxmox's directory plugin lays
 * them out:
 *
 * | vtype    | volname                                   | file under the storage path        |
 * |----------|-------------------------------------------|------------------------------------|
 * | images   | `<vmid>/vm-<vmid>-disk-<n>.<raw|qcow2|vmdk>` (`base-…` templates) | `images/<vmid>/…` |
 * | rootdir  | `<vmid>/subvol-<vmid>-disk-<n>.subvol`    | `images/<vmid>/…` (a directory)    |
 * | iso      | `iso/<name>.<iso|img>`                    | `template/iso/<name>`              |
 * | vztmpl   | `vztmpl/<name>.tar.<gz|xz|zst|bz2>`, `.tgz`, `.tar` | `template/cache/<name>`  |
 * | backup   | `backup/<name>`                           | `dump/<name>`                      |
 * | snippets | `snippets/<name>`                         | `snippets/<name>`                  |
 * | import   | `import/<name>.<ova|ovf|qcow2|vmdk|raw>`  | `import/<name>`                    |
 *
 * Decision: Proxmox calls a subvolume's vtype `images`; volt calls it `rootdir`, the content
 * type it is listed under and the one its `+meta` stream carries.
 *
 * Files named `snap-<snap>-<volfile>` are snapshot files of a volume chain, never volumes.
 *
 * @module
 */

import type { ContentType, VolumeName } from "../../plugins/api.ts";
import { assertSafeVolname, printable } from "./volume_id.ts";

/** Content type → directory under the storage path. */
export const CONTENT_DIRS: Readonly<Record<ContentType, string>> = {
  images: "images",
  rootdir: "images",
  iso: "template/iso",
  vztmpl: "template/cache",
  backup: "dump",
  snippets: "snippets",
  import: "import",
};

/** Image file formats a directory storage allocates. */
export const IMAGE_FORMATS = ["raw", "qcow2", "vmdk", "subvol"] as const;

const IMAGE_NAME = /^((?:base-)?[^/\s]+)\.(raw|qcow2|vmdk|subvol)$/;
const ISO = /^iso\/([^/]+\.(?:iso|img))$/i;
const VZTMPL = /^vztmpl\/([^/]+\.(?:tar\.(?:gz|xz|zst|bz2)|tgz|tar))$/i;
const BACKUP = /^backup\/([^/]+)$/;
const SNIPPETS = /^snippets\/([^/]+)$/;
const IMPORT = /^import\/([a-zA-Z0-9\-.+=_ ]+\.(ova|ovf|qcow2|vmdk|raw))$/;

/**
 * Parses a directory-storage volume name. Throws `TypeError` naming it when it is unsafe or
 * matches no layout.
 *
 * @example
 * ```ts
 * import { parseDirVolname } from "./dir_volname.ts";
 * const v = parseDirVolname("100/vm-100-disk-0.qcow2");
 * console.assert(v.vtype === "images" && v.vmid === 100 && v.format === "qcow2");
 * ```
 */
export function parseDirVolname(volname: string): VolumeName {
  assertSafeVolname(volname);
  const bad = (why: string) => new TypeError(`invalid volume name '${printable(volname)}': ${why}`);
  let m = /^(\d+)\/([^/]+)$/.exec(volname);
  if (m) {
    const vmid = Number(m[1]);
    const name = m[2];
    const img = IMAGE_NAME.exec(name);
    if (!img) {
      throw bad("an image name must end in .raw, .qcow2, .vmdk or .subvol and contain no spaces");
    }
    if (name.startsWith("snap-")) throw bad("'snap-' files are snapshots of a volume chain");
    const format = img[2];
    return {
      vtype: format === "subvol" ? "rootdir" : "images",
      name,
      vmid,
      format,
      isBase: name.startsWith("base-"),
    };
  }
  if (/^\d+\//.test(volname)) {
    throw bad("linked clones (<vmid>/<base>/<vmid>/<name>) are not supported");
  }
  if ((m = ISO.exec(volname))) return { vtype: "iso", name: m[1], format: "raw" };
  if ((m = VZTMPL.exec(volname))) return { vtype: "vztmpl", name: m[1], format: "raw" };
  if ((m = IMPORT.exec(volname))) return { vtype: "import", name: m[1], format: m[2] };
  if ((m = SNIPPETS.exec(volname))) return { vtype: "snippets", name: m[1], format: "raw" };
  if ((m = BACKUP.exec(volname))) {
    const owner = /^vzdump-(?:openvz|lxc|qemu)-(\d+)-/.exec(m[1]);
    return {
      vtype: "backup",
      name: m[1],
      vmid: owner ? Number(owner[1]) : undefined,
      format: "raw",
    };
  }
  throw bad(
    "expected <vmid>/<file>.<raw|qcow2|vmdk|subvol>, iso/…, vztmpl/…, backup/…, snippets/… or import/…",
  );
}

/** The path of a volume relative to the storage path. */
export function dirRelativePath(v: VolumeName): string {
  if (v.vtype === "images" || v.vtype === "rootdir") return `images/${v.vmid}/${v.name}`;
  return `${CONTENT_DIRS[v.vtype]}/${v.name}`;
}

/** The volume name of an image file `name` of guest `vmid`. */
export function imageVolname(vmid: number, name: string): string {
  return `${vmid}/${name}`;
}
