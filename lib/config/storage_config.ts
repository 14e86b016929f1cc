/**
 * The storage configuration: which file is read, the built-in default, and each section
 * checked against its plugin's option schema.
 *
 * Lookup: `--config`, then `$VOLT_CONFIG`, then `/etc/volt/storage.cfg`. A path that does not
 * exist yet means "no configuration": the built-in default applies, and `volt add` creates
 * the file there. Without any configured path and no `/etc/volt/storage.cfg`, the built-in
 * default is used and `volt add` writes `/etc/volt/storage.cfg`.
 *
 * A section whose type no loaded plugin implements is kept as `unsupported` (a real Proxmox
 * file with lvmthin, nfs or pbs storages must load); a section with a bad option is kept as
 * `invalid` with its error, reported by `volt status` and when it is used.
 *
 * @module
 */

import { COMMON_OPTIONS, type OptionSchema, type Storage } from "../../plugins/api.ts";
import { VoltError } from "../errors.ts";
import { formatOptionValue, parseOptionValue } from "./options.ts";
import { parseSectionConfig, type Section, writeSectionConfig } from "./section_config.ts";

/** The system-wide configuration file. */
export const SYSTEM_CONFIG = "/etc/volt/storage.cfg";

/** What the config layer needs to know about a storage type. */
export interface TypeSchema {
  options: Readonly<Record<string, OptionSchema>>;
}

/** One section of the configuration and what became of it. */
export interface StorageEntry {
  section: Section;
  /** `ok`: usable; `unsupported`: no plugin for its type; `invalid`: see `error`. */
  state: "ok" | "unsupported" | "invalid";
  /** The checked storage, when `state` is `ok`. */
  storage?: Storage;
  error?: string;
}

/** A loaded storage configuration. */
export interface StorageConfig {
  /** The file read, or `built-in default`. */
  source: string;
  /** Where `volt add` and `volt remove` write. */
  writePath: string;
  entries: StorageEntry[];
}

/**
 * volt's data directory: `$VOLT_HOME`, `/var/lib/volt` for root, else
 * `$XDG_DATA_HOME/volt` (`~/.local/share/volt`).
 */
export function voltHome(): string {
  const env = Deno.env.get("VOLT_HOME");
  if (env) return env;
  if (Deno.uid() === 0) return "/var/lib/volt";
  const xdg = Deno.env.get("XDG_DATA_HOME") ?? `${Deno.env.get("HOME") ?? "/tmp"}/.local/share`;
  return `${xdg}/volt`;
}

/**
 * The embedded default configuration: a `dir` storage `local` under {@link voltHome}, and a
 * directory backup storage `backup` in its `backup` subdirectory.
 *
 * @example
 * ```ts
 * import { defaultConfigText } from "./storage_config.ts";
 * console.assert(defaultConfigText("/srv/volt").startsWith("dir: local\n\tpath /srv/volt\n"));
 * ```
 */
export function defaultConfigText(home: string): string {
  return [
    "dir: local",
    `\tpath ${home}`,
    "\tcontent images,rootdir,iso,vztmpl,snippets,import",
    "\tmkdir 1",
    "",
    "backup-dir: backup",
    `\tpath ${home}/backup`,
    "\tcontent backup",
    "",
  ].join("\n");
}

/** Which file to read and where to write. */
export function configPath(explicit?: string): { read?: string; write: string } {
  const path = explicit ?? Deno.env.get("VOLT_CONFIG") ?? SYSTEM_CONFIG;
  let exists = false;
  try {
    exists = Deno.statSync(path).isFile;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) {
      throw new VoltError(`cannot read configuration '${path}': ${(err as Error).message}`);
    }
  }
  return { read: exists ? path : undefined, write: path };
}

/**
 * Reads the configuration (or the default) and checks every section with `schemaFor`.
 * Throws `SyntaxError` for text that is not section config, or a storage id used twice.
 */
export function loadStorageConfig(
  schemaFor: (type: string) => TypeSchema | undefined,
  explicitPath?: string,
): StorageConfig {
  const { read, write } = configPath(explicitPath);
  const text = read ? Deno.readTextFileSync(read) : defaultConfigText(voltHome());
  const source = read ?? "built-in default";
  return {
    source,
    writePath: write,
    entries: checkSections(parseSections(text, source), schemaFor),
  };
}

/** Parses config text into sections, refusing duplicate or malformed storage ids. */
export function parseSections(text: string, source: string): Section[] {
  const sections = parseSectionConfig(text, source);
  const seen = new Set<string>();
  for (const s of sections) {
    if (!/^[a-z][a-z0-9_.-]*[a-z0-9]$/i.test(s.id)) {
      throw new SyntaxError(`${source}:${s.line}: invalid storage id '${s.id}'`);
    }
    if (seen.has(s.id)) {
      throw new SyntaxError(`${source}:${s.line}: storage '${s.id}' defined twice`);
    }
    seen.add(s.id);
  }
  return sections;
}

/** Checks each section against its type's schema. */
export function checkSections(
  sections: Section[],
  schemaFor: (type: string) => TypeSchema | undefined,
): StorageEntry[] {
  return sections.map((section) => {
    const schema = schemaFor(section.type);
    if (!schema) return { section, state: "unsupported" as const };
    try {
      return { section, state: "ok" as const, storage: checkSection(section, schema) };
    } catch (err) {
      return { section, state: "invalid" as const, error: (err as Error).message };
    }
  });
}

/** All options a type accepts, by canonical name, and aliases mapped to canonical names. */
export function optionTable(
  schema: TypeSchema,
): { options: Record<string, OptionSchema>; aliases: Record<string, string> } {
  const options: Record<string, OptionSchema> = { ...COMMON_OPTIONS, ...schema.options };
  const aliases: Record<string, string> = {};
  for (const [name, o] of Object.entries(options)) if (o.alias) aliases[o.alias] = name;
  return { options, aliases };
}

/**
 * Checks one section: every option known and well-formed, required ones present.
 * Throws `TypeError` with `storage '<id>': …`.
 */
export function checkSection(section: Section, schema: TypeSchema): Storage {
  const { options, aliases } = optionTable(schema);
  const values: Storage["options"] = {};
  for (const [rawKey, text] of section.properties) {
    const key = aliases[rawKey] ?? rawKey;
    const o = options[key];
    if (!o) throw new TypeError(`storage '${section.id}': unknown option '${rawKey}'`);
    if (key in values) {
      throw new TypeError(`storage '${section.id}': option '${key}' given twice (as '${rawKey}')`);
    }
    values[key] = parseOptionValue(section.id, key, o, text);
  }
  for (const [key, o] of Object.entries(options)) {
    if (o.required && !(key in values)) {
      throw new TypeError(`storage '${section.id}': '${key}' is required`);
    }
  }
  return { id: section.id, type: section.type, options: values };
}

/** Turns a storage back into a section (canonical option names, schema order kept by caller). */
export function storageToSection(storage: Storage): Section {
  return {
    type: storage.type,
    id: storage.id,
    properties: Object.entries(storage.options).map(([k, v]) => [k, formatOptionValue(v)]),
    line: 0,
  };
}

/**
 * Writes sections to `path` atomically (temporary file, then rename), creating its directory.
 */
export function writeStorageConfig(path: string, sections: Section[]): void {
  const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) || "/" : ".";
  Deno.mkdirSync(dir, { recursive: true });
  const tmp = `${path}.tmp.${Deno.pid}`;
  try {
    Deno.writeTextFileSync(tmp, writeSectionConfig(sections));
    Deno.renameSync(tmp, path);
  } catch (err) {
    try {
      Deno.removeSync(tmp);
    } catch { /* never written */ }
    throw new VoltError(`cannot write configuration '${path}': ${(err as Error).message}`);
  }
}
