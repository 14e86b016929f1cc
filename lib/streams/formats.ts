/**
 * The stream formats, which of them a volume can be exported as or imported from, and the
 * negotiation between an exporter and an importer.
 *
 * The lists follow Proxmox's order (seed 000, `volume_export_formats` /
 * `volume_import_formats`): the `<vtype>+meta` format first, then the plain `+size` one.
 * With snapshots only qcow2 and vmdk images qualify (their files carry the snapshots);
 * without, images are raw (a qcow2/vmdk is converted on export), subvolumes are tar, and
 * iso, vztmpl, snippets and import files travel as raw bytes. Backups only travel as
 * `backup+meta`.
 *
 * @module
 */

import { CONTENT_TYPES, type ContentType } from "../../plugins/api.ts";

/** The `+size` formats: an 8-byte size header, then the data. */
export const SIZE_FORMATS = ["raw+size", "tar+size", "qcow2+size", "vmdk+size"] as const;

/** Data formats a `+size` framing (alone or after a metadata header) can carry. */
export type DataFormat = "raw" | "tar" | "qcow2" | "vmdk";

/**
 * Every format name Proxmox knows, in its order (`$KNOWN_EXPORT_FORMATS`). `zfs` and `btrfs`
 * are recognised but only storages of those types could produce them.
 */
export const KNOWN_FORMATS: readonly string[] = [
  ...SIZE_FORMATS,
  "zfs",
  "btrfs",
  ...CONTENT_TYPES.map((c) => `${c}+meta`),
];

/** A format name taken apart. */
export type StreamFormat =
  | { kind: "size"; name: string; data: DataFormat }
  | { kind: "meta"; name: string; vtype: ContentType }
  | { kind: "other"; name: string };

/**
 * Parses a format name; undefined when volt does not know it at all.
 *
 * @example
 * ```ts
 * import { parseStreamFormat } from "./formats.ts";
 * const f = parseStreamFormat("images+meta");
 * console.assert(f?.kind === "meta" && f.vtype === "images");
 * console.assert(parseStreamFormat("gzip") === undefined);
 * ```
 */
export function parseStreamFormat(name: string): StreamFormat | undefined {
  let m = /^(raw|tar|qcow2|vmdk)\+size$/.exec(name);
  if (m) return { kind: "size", name, data: m[1] as DataFormat };
  m = /^([a-z]+)\+meta$/.exec(name);
  if (m && (CONTENT_TYPES as readonly string[]).includes(m[1])) {
    return { kind: "meta", name, vtype: m[1] as ContentType };
  }
  if (KNOWN_FORMATS.includes(name)) return { kind: "other", name };
  return undefined;
}

/**
 * The data format a volume's file travels as: `tar` for a subvolume, the file format for
 * images, and the volume name's format (raw, or ova/ovf/qcow2/vmdk/raw for import files)
 * for the other volume types, whose files travel byte for byte.
 */
export function dataFormatOf(fileFormat: string): string {
  return fileFormat === "subvol" ? "tar" : fileFormat;
}

/**
 * Formats a volume of type `vtype` whose file has format `fileFormat` can be exported as.
 *
 * @example
 * ```ts
 * import { exportFormatsFor } from "./formats.ts";
 * console.assert(exportFormatsFor("images", "raw", false).join() === "images+meta,raw+size");
 * console.assert(exportFormatsFor("images", "qcow2", true).join() === "images+meta,qcow2+size");
 * console.assert(exportFormatsFor("rootdir", "subvol", false).join() === "rootdir+meta,tar+size");
 * ```
 */
export function exportFormatsFor(
  vtype: ContentType,
  fileFormat: string,
  withSnapshots: boolean,
): string[] {
  if (vtype === "images") {
    const snapshotCapable = fileFormat === "qcow2" || fileFormat === "vmdk";
    if (withSnapshots) return snapshotCapable ? [`${vtype}+meta`, `${fileFormat}+size`] : [];
    // A qcow2/vmdk exported without snapshots is converted to raw; images+meta would carry
    // the file itself, which needs --with-snapshots.
    return snapshotCapable ? ["raw+size"] : [`${vtype}+meta`, "raw+size"];
  }
  if (withSnapshots) return [];
  if (vtype === "rootdir") return fileFormat === "subvol" ? [`${vtype}+meta`, "tar+size"] : [];
  if (vtype === "backup") return [`${vtype}+meta`];
  return [`${vtype}+meta`, "raw+size"];
}

/**
 * Formats a volume of type `vtype` and file format `fileFormat` can be imported from. Unlike
 * Proxmox, a qcow2/vmdk image without snapshots lists nothing: raw data cannot go into it.
 *
 * @example
 * ```ts
 * import { importFormatsFor } from "./formats.ts";
 * console.assert(importFormatsFor("iso", "raw", false).join() === "iso+meta,raw+size");
 * console.assert(importFormatsFor("images", "qcow2", false).length === 0);
 * ```
 */
export function importFormatsFor(
  vtype: ContentType,
  fileFormat: string,
  withSnapshots: boolean,
): string[] {
  if (vtype === "images") {
    const snapshotCapable = fileFormat === "qcow2" || fileFormat === "vmdk";
    if (withSnapshots) return snapshotCapable ? [`${vtype}+meta`, `${fileFormat}+size`] : [];
    return snapshotCapable ? [] : [`${vtype}+meta`, "raw+size"];
  }
  return exportFormatsFor(vtype, fileFormat, withSnapshots);
}

/**
 * The format an exporter and an importer agree on: the first of the exporter's formats that
 * the importer accepts, or undefined.
 *
 * @example
 * ```ts
 * import { negotiateFormat } from "./formats.ts";
 * console.assert(negotiateFormat(["images+meta", "raw+size"], ["raw+size"]) === "raw+size");
 * console.assert(negotiateFormat(["raw+size"], []) === undefined);
 * ```
 */
export function negotiateFormat(
  exportFormats: readonly string[],
  importFormats: readonly string[],
): string | undefined {
  return exportFormats.find((f) => importFormats.includes(f));
}
