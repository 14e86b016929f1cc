/**
 * `volt config show`, and `volt add` / `volt set` / `volt remove` to change storage.cfg.
 *
 * @module
 */

import { type CommandSpec, OUTPUT_FORMAT_OPTION, outputFormat } from "../cli/command.ts";
import { checkSection, optionTable, writeStorageConfig } from "../config/storage_config.ts";
import { parseSectionConfig, type Section, writeSectionConfig } from "../config/section_config.ts";
import { UsageError, VoltError } from "../errors.ts";
import { withLock } from "../lock.ts";
import type { Storages } from "../storage/storages.ts";
import { storagesFromArgs } from "./common.ts";

/** The configuration as text, with where it came from. */
export function runConfigShow(storages: Storages): { source: string; text: string } {
  return {
    source: storages.config.source,
    text: writeSectionConfig(storages.config.entries.map((e) => e.section)),
  };
}

/** A change to storage.cfg. */
export type ConfigChange =
  | { op: "add"; type: string; id: string; properties: [string, string][] }
  | { op: "set"; id: string; properties: [string, string][]; delete: string[] }
  | { op: "remove"; id: string };

/**
 * Applies a change under the config file's lock and writes it atomically. Options are checked
 * against the type's schema first; a `fixed` option cannot change once the storage holds
 * images. Returns the new sections.
 */
export async function runConfigChange(
  storages: Storages,
  change: ConfigChange,
): Promise<Section[]> {
  const path = storages.config.writePath;
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")) || "/", { recursive: true });
  return await withLock(`${path}.lock`, async () => {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch {
      text = writeSectionConfig(storages.config.entries.map((e) => e.section)); // default
    }
    const sections = parseSectionConfig(text, path);
    const index = sections.findIndex((s) => s.id === change.id);
    if (change.op === "add") {
      if (index >= 0) throw new VoltError(`storage '${change.id}' already exists`);
      const plugin = storages.registry.get(change.type);
      if (!plugin) {
        throw new VoltError(`no plugin for storage type '${change.type}' (see 'volt plugins')`);
      }
      const section: Section = {
        type: change.type,
        id: change.id,
        properties: change.properties,
        line: 0,
      };
      const storage = checkTyped(section, storages);
      await plugin.activateStorage(storage);
      sections.push(section);
    } else {
      if (index < 0) throw new VoltError(`storage '${change.id}' does not exist`);
      if (change.op === "remove") {
        sections.splice(index, 1);
      } else {
        const section = sections[index];
        const plugin = storages.registry.get(section.type);
        if (!plugin) throw new VoltError(`no plugin for storage type '${section.type}'`);
        const { options, aliases } = optionTable(plugin);
        const canon = (k: string) => aliases[k] ?? k;
        const changing = [...change.properties.map(([k]) => canon(k)), ...change.delete.map(canon)];
        const props = section.properties.filter(([k]) => !changing.includes(canon(k)));
        const updated: Section = { ...section, properties: [...props, ...change.properties] };
        const fixed = changing.filter((k) => options[k]?.fixed);
        if (fixed.length > 0) {
          const current = checkTyped(section, storages);
          const images = await plugin.listVolumes(current, { content: ["images", "rootdir"] })
            .catch(() => []);
          if (images.length > 0) {
            throw new VoltError(
              `storage '${change.id}': option '${fixed[0]}' is fixed once the storage holds images`,
            );
          }
        }
        checkTyped(updated, storages);
        sections[index] = updated;
      }
    }
    writeStorageConfig(path, sections);
    return sections;
  });
}

function checkTyped(section: Section, storages: Storages) {
  const plugin = storages.registry.get(section.type)!;
  try {
    return checkSection(section, plugin);
  } catch (err) {
    throw new VoltError((err as Error).message);
  }
}

/** Parses `key=value` words; a bare key means 1. */
export function parseAssignments(words: string[]): [string, string][] {
  return words.map((w) => {
    const m = /^([a-zA-Z][a-zA-Z0-9_-]*)(?:=(.*))?$/s.exec(w);
    if (!m) throw new UsageError(`expected key=value, got '${w}'`);
    const value = m[2] ?? "1";
    if (/[\n\r]/.test(value)) throw new UsageError(`value of '${m[1]}' contains a newline`);
    return [m[1], value];
  });
}

/** `volt config show`. */
export const configShowCommand: CommandSpec = {
  name: "config show",
  summary: "print the storage configuration in use and where it comes from",
  args: "",
  positionals: [0, 0],
  options: { ...OUTPUT_FORMAT_OPTION },
  async run(args) {
    const storages = await storagesFromArgs(args);
    if (outputFormat(args) === "json") {
      console.log(JSON.stringify(
        {
          source: storages.config.source,
          storages: storages.config.entries.map((e) => ({
            id: e.section.id,
            type: e.section.type,
            state: e.state,
            options: e.storage?.options ?? Object.fromEntries(e.section.properties),
            error: e.error,
          })),
        },
        null,
        2,
      ));
      return;
    }
    const { source, text } = runConfigShow(storages);
    console.log(`# ${source}\n${text}`);
    for (const e of storages.config.entries) {
      if (e.state === "unsupported") {
        console.error(`volt: storage '${e.section.id}': type '${e.section.type}' is not supported`);
      }
      if (e.error) console.error(`volt: ${e.error}`);
    }
  },
};

/** `volt add`. */
export const addCommand: CommandSpec = {
  name: "add",
  summary: "add a storage to the configuration",
  args: "<type> <storage> [key=value …]",
  details: "Example: volt add dir fast path=/srv/fast content=images,iso",
  positionals: [2, Infinity],
  async run(args) {
    const [type, id, ...rest] = args.positionals;
    if (!/^[a-z][a-z0-9_.-]*[a-z0-9]$/i.test(id)) {
      throw new UsageError(`invalid storage id '${id}'`);
    }
    const storages = await storagesFromArgs(args);
    await runConfigChange(storages, { op: "add", type, id, properties: parseAssignments(rest) });
    console.error(`added storage '${id}' to ${storages.config.writePath}`);
  },
};

/** `volt set`. */
export const setCommand: CommandSpec = {
  name: "set",
  summary: "change options of a storage (key=value, or --delete key)",
  args: "<storage> [key=value …]",
  positionals: [1, Infinity],
  options: {
    delete: { type: "string", multiple: true, arg: "KEY", description: "remove an option" },
  },
  async run(args) {
    const [id, ...rest] = args.positionals;
    const del = (args.values.delete as string[] | undefined) ?? [];
    const storages = await storagesFromArgs(args);
    await runConfigChange(storages, {
      op: "set",
      id,
      properties: parseAssignments(rest),
      delete: del,
    });
    console.error(`updated storage '${id}'`);
  },
};

/** `volt remove`. */
export const removeCommand: CommandSpec = {
  name: "remove",
  summary: "remove a storage from the configuration (its data stays)",
  args: "<storage>",
  positionals: [1, 1],
  async run(args) {
    const storages = await storagesFromArgs(args);
    await runConfigChange(storages, { op: "remove", id: args.positionals[0] });
    console.error(`removed storage '${args.positionals[0]}' from ${storages.config.writePath}`);
  },
};
