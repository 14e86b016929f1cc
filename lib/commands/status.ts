/**
 * `volt status`: every configured storage with its type, state and capacity.
 *
 * @module
 */

import { type CommandSpec, OUTPUT_FORMAT_OPTION } from "../cli/command.ts";
import type { Storages } from "../storage/storages.ts";
import { printOutput, storagesFromArgs } from "./common.ts";

/** One row of `volt status`. */
export interface StorageStatusRow {
  name: string;
  type: string;
  /** active, inactive, disabled, unsupported, or invalid. */
  status: string;
  total: number;
  used: number;
  avail: number;
  error?: string;
}

/** Status of every configured storage, in configuration order. */
export async function runStatus(storages: Storages): Promise<StorageStatusRow[]> {
  const rows: StorageStatusRow[] = [];
  for (const e of storages.config.entries) {
    const row: StorageStatusRow = {
      name: e.section.id,
      type: e.section.type,
      status: e.state,
      total: 0,
      used: 0,
      avail: 0,
    };
    if (e.state === "invalid") row.error = e.error;
    if (e.state === "ok") {
      if (e.storage!.options.disable === true) {
        row.status = "disabled";
      } else {
        try {
          const h = await storages.get(e.section.id);
          const s = await h.plugin.status(h.storage);
          Object.assign(row, {
            status: s.active ? "active" : "inactive",
            total: s.total,
            used: s.used,
            avail: s.avail,
          });
        } catch (err) {
          Object.assign(row, { status: "inactive", error: (err as Error).message });
        }
      }
    }
    rows.push(row);
  }
  return rows;
}

const kib = (n: number) => Math.floor(n / 1024);

/** `volt status`. */
export const statusCommand: CommandSpec = {
  name: "status",
  summary: "show every storage: type, state, capacity (KiB, as pvesm)",
  args: "",
  positionals: [0, 0],
  options: { ...OUTPUT_FORMAT_OPTION },
  async run(args) {
    const storages = await storagesFromArgs(args);
    const rows = await runStatus(storages);
    printOutput(args, rows, ["Name", "Type", "Status", "Total", "Used", "Available", "%"], (r) => [
      r.name,
      r.type,
      r.status,
      kib(r.total),
      kib(r.used),
      kib(r.avail),
      r.total > 0 ? `${((r.used / r.total) * 100).toFixed(2)}%` : "0.00%",
    ]);
    for (const r of rows) if (r.error) console.error(`volt: storage '${r.name}': ${r.error}`);
  },
};
