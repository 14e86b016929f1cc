/**
 * The storages of this process: the configuration checked against the loaded plugins. Commands
 * open it once and ask it for a storage or a volume by id.
 *
 * @module
 */

import type { Storage, StoragePlugin, VolumeName } from "../../plugins/api.ts";
import {
  loadStorageConfig,
  type StorageConfig,
  type StorageEntry,
} from "../config/storage_config.ts";
import { VoltError } from "../errors.ts";
import { loadPlugins, type PluginRegistry } from "../plugins/loader.ts";
import { parseVolumeId } from "./volume_id.ts";

/** A usable storage and the plugin that serves it. */
export interface StorageHandle {
  storage: Storage;
  plugin: StoragePlugin;
}

/** A volume resolved to its storage. */
export interface VolumeHandle extends StorageHandle {
  volid: string;
  volname: string;
  name: VolumeName;
}

/** How to open the storages. */
export interface OpenOptions {
  /** `--config`. */
  configPath?: string;
  /** `--plugin` modules. */
  pluginPaths?: string[];
  /** Where plugin load problems are reported (stderr by default). */
  warn?: (message: string) => void;
}

/** The configuration and plugins of this process. */
export class Storages {
  readonly config: StorageConfig;
  readonly registry: PluginRegistry;
  #active = new Set<string>();

  constructor(config: StorageConfig, registry: PluginRegistry) {
    this.config = config;
    this.registry = registry;
  }

  /** Loads plugins (reporting refused ones) and the configuration. */
  static async open(options: OpenOptions = {}): Promise<Storages> {
    const warn = options.warn ?? ((m: string) => console.error(`volt: warning: ${m}`));
    const registry = await loadPlugins({ paths: options.pluginPaths });
    for (const e of registry.errors) warn(e.message);
    for (const w of registry.warnings) warn(w);
    const config = loadStorageConfig((type) => registry.get(type), options.configPath);
    return new Storages(config, registry);
  }

  /** The configuration entry of a storage id, or a clear error. */
  entry(id: string): StorageEntry {
    const e = this.config.entries.find((x) => x.section.id === id);
    if (!e) {
      const known = this.config.entries.map((x) => x.section.id).join(", ") || "none";
      throw new VoltError(
        `storage '${id}' does not exist (configured: ${known}; see 'volt status')`,
      );
    }
    return e;
  }

  /** A usable, activated storage. Refuses unsupported, invalid and disabled ones. */
  async get(id: string): Promise<StorageHandle> {
    const e = this.entry(id);
    if (e.state === "unsupported") {
      throw new VoltError(
        `storage '${id}' has type '${e.section.type}', which no loaded plugin supports (see 'volt plugins')`,
      );
    }
    if (e.state === "invalid") throw new VoltError(e.error!);
    const storage = e.storage!;
    if (storage.options.disable === true) throw new VoltError(`storage '${id}' is disabled`);
    const plugin = this.registry.get(storage.type)!;
    if (!this.#active.has(id)) {
      await plugin.activateStorage(storage);
      this.#active.add(id);
    }
    return { storage, plugin };
  }

  /** Resolves `storeid:volname`; the name must be valid for the storage's type. */
  async volume(volid: string): Promise<VolumeHandle> {
    let parsed;
    try {
      parsed = parseVolumeId(volid);
    } catch (err) {
      throw new VoltError((err as Error).message);
    }
    const h = await this.get(parsed.storeid);
    let name: VolumeName;
    try {
      name = h.plugin.parseVolname(parsed.volname);
    } catch (err) {
      throw new VoltError((err as Error).message);
    }
    return { ...h, volid: `${parsed.storeid}:${parsed.volname}`, volname: parsed.volname, name };
  }
}
