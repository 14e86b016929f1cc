/**
 * `volt plugins`: the storage plugins that loaded.
 *
 * @module
 */

import { type CommandSpec, OUTPUT_FORMAT_OPTION } from "../cli/command.ts";
import type { Storages } from "../storage/storages.ts";
import { printOutput, storagesFromArgs } from "./common.ts";

/** One row of `volt plugins`. */
export interface PluginRow {
  type: string;
  api: number;
  source: string;
  builtin: boolean;
  features: string[];
  description: string;
}

/** The loaded plugins. */
export function runPlugins(storages: Storages): PluginRow[] {
  return storages.registry.plugins.map((l) => ({
    type: l.plugin.type,
    api: l.plugin.api,
    source: l.source,
    builtin: l.builtin,
    features: [...(l.plugin.features ?? [])],
    description: l.plugin.description ?? "",
  }));
}

/** `volt plugins`. */
export const pluginsCommand: CommandSpec = {
  name: "plugins",
  summary: "list the storage plugins: type, API version, source file",
  args: "",
  positionals: [0, 0],
  options: { ...OUTPUT_FORMAT_OPTION },
  async run(args) {
    const rows = runPlugins(await storagesFromArgs(args));
    printOutput(args, rows, ["Type", "API", "Source", "Description"], (r) => [
      r.type,
      String(r.api),
      r.source,
      r.description,
    ]);
  },
};
