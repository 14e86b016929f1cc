/**
 * `volt list <storage>`: the volumes of a storage. For a listing that holds backups, also each
 * backup's parent, chain length (how many backups its restore reads), protection and the
 * first line of its notes; JSON output has every field of `VolumeInfo` (whole notes).
 *
 * @module
 */

import { type CommandSpec, OUTPUT_FORMAT_OPTION, stringOpt } from "../cli/command.ts";
import { UsageError } from "../errors.ts";
import { CONTENT_TYPES, type ContentType, type VolumeInfo } from "../../plugins/api.ts";
import type { Storages } from "../storage/storages.ts";
import { parseVmid, printOutput, storagesFromArgs } from "./common.ts";

/** Options of {@link runList}. */
export interface ListOptions {
  storage: string;
  vmid?: number;
  content?: ContentType;
}

/** The volumes of one storage, sorted by volume id. */
export async function runList(storages: Storages, options: ListOptions): Promise<VolumeInfo[]> {
  const h = await storages.get(options.storage);
  const list = await h.plugin.listVolumes(h.storage, {
    vmid: options.vmid,
    content: options.content ? [options.content] : undefined,
  });
  return list.sort((a, b) => a.volid.localeCompare(b.volid));
}

/** Longest notes cell in the table; JSON output has the whole text. */
const NOTES_WIDTH = 40;

/**
 * The first line of a backup's notes for one table cell: control characters shown as `?`,
 * cut at {@link NOTES_WIDTH} characters with `…`.
 */
export function notesCell(notes: string | undefined): string {
  // deno-lint-ignore no-control-regex
  const line = (notes ?? "").split("\n")[0].replace(/[\x00-\x1f\x7f]/g, "?");
  const chars = [...line];
  return chars.length > NOTES_WIDTH ? `${chars.slice(0, NOTES_WIDTH - 1).join("")}…` : line;
}

/** `1`/`0` for a backup (as `volt protect` prints it), empty for other volumes. */
function protectedCell(v: VolumeInfo): string {
  return v.content === "backup" ? (v.protected ? "1" : "0") : "";
}

/** `volt list`. */
export const listCommand: CommandSpec = {
  name: "list",
  summary: "list the volumes of a storage",
  args: "<storage>",
  positionals: [1, 1],
  options: {
    vmid: { type: "string", arg: "N", description: "only volumes of guest N" },
    content: {
      type: "string",
      arg: "TYPE",
      description: `only one content type (${CONTENT_TYPES.join(", ")})`,
    },
    ...OUTPUT_FORMAT_OPTION,
  },
  async run(args) {
    const content = stringOpt(args, "content");
    if (content !== undefined && !(CONTENT_TYPES as readonly string[]).includes(content)) {
      throw new UsageError(`--content: '${content}' is not one of ${CONTENT_TYPES.join(", ")}`);
    }
    const vmidText = stringOpt(args, "vmid");
    const storages = await storagesFromArgs(args);
    const list = await runList(storages, {
      storage: args.positionals[0],
      vmid: vmidText === undefined ? undefined : parseVmid(vmidText),
      content: content as ContentType | undefined,
    });
    const backups = list.some((v) => v.content === "backup");
    const withParent = backups || list.some((v) => v.parent !== undefined);
    const header = ["Volid", "Format", "Type", "Size", "Used", "VMID"];
    if (withParent) header.push("Parent");
    if (backups) header.push("Chain", "Protected", "Notes");
    printOutput(args, list, header, (v) => [
      v.volid,
      v.format,
      v.subtype ? `${v.content}/${v.subtype}` : v.content,
      v.size,
      v.used,
      v.vmid ?? "",
      ...(withParent ? [v.parent ?? ""] : []),
      ...(backups ? [v.chainLength ?? "", protectedCell(v), notesCell(v.notes)] : []),
    ]);
  },
};
