/**
 * Loading storage plugins: the built-in ones, every `*.ts`/`*.js` module in the plugins
 * directory (`$VOLT_PLUGINS`, else `/etc/volt/plugins`), and modules named with `--plugin`.
 *
 * Every module goes through {@link validatePlugin}: a broken one (import error, missing
 * method, API version out of range, type already taken) is skipped with an error naming its
 * file, and volt keeps working with the others.
 *
 * @module
 */

import { APIAGE, APIVER, REQUIRED_METHODS, type StoragePlugin } from "../../plugins/api.ts";
import { BUILTIN_PLUGINS } from "../../plugins/builtin.ts";

/** A plugin that loaded, and where from. */
export interface LoadedPlugin {
  plugin: StoragePlugin;
  source: string;
  builtin: boolean;
}

/** A module that did not load. */
export class PluginLoadError extends Error {
  readonly file: string;
  constructor(file: string, message: string, options?: ErrorOptions) {
    super(`plugin ${file}: ${message}`, options);
    this.name = "PluginLoadError";
    this.file = file;
  }
}

/** The plugins of this process, by storage type. */
export interface PluginRegistry {
  plugins: LoadedPlugin[];
  /** Modules that were refused. */
  errors: PluginLoadError[];
  /** Loaded with a warning (older API version). */
  warnings: string[];
  get(type: string): StoragePlugin | undefined;
}

/** Where to look for plugins. */
export interface LoadOptions {
  /** Modules named on the command line. */
  paths?: string[];
  /** Plugins directory; default `$VOLT_PLUGINS`, else `/etc/volt/plugins`. */
  dir?: string;
}

/**
 * Checks the API version against volt's window. Returns a warning for an older but accepted
 * version, throws for one out of range.
 *
 * @example
 * ```ts
 * import { checkApiVersion } from "./loader.ts";
 * console.assert(checkApiVersion(3, 3, 1) === undefined);
 * console.assert(checkApiVersion(2, 3, 1)?.includes("older"));
 * ```
 */
export function checkApiVersion(api: number, apiver = APIVER, apiage = APIAGE): string | undefined {
  if (!Number.isInteger(api) || api < 1) {
    throw new Error(`'api' must be a positive integer, got ${api}`);
  }
  if (api > apiver) {
    throw new Error(`plugin API version ${api} is newer than volt's (${apiver}): update volt`);
  }
  if (api < apiver - apiage) {
    throw new Error(
      `plugin API version ${api} is too old (volt accepts ${
        apiver - apiage
      } to ${apiver}): update the plugin`,
    );
  }
  return api < apiver
    ? `plugin API version ${api} is older than volt's (${apiver}); it loads, but update it`
    : undefined;
}

/**
 * Checks that a module's `plugin` export has the shape of a {@link StoragePlugin}. Returns
 * the plugin and an optional warning; throws with what is wrong.
 */
export function validatePlugin(
  module: Record<string, unknown>,
): { plugin: StoragePlugin; warning?: string } {
  const p = module.plugin as Record<string, unknown> | undefined;
  if (!p || typeof p !== "object") {
    throw new Error("the module has no 'plugin' export (export const plugin: StoragePlugin = {…})");
  }
  for (const [name, kind] of Object.entries(REQUIRED_METHODS)) {
    if (!(name in p) || p[name] === undefined) throw new Error(`missing '${name}'`);
    if (typeof p[name] !== kind || p[name] === null) {
      throw new Error(
        `'${name}' must be a ${kind}, got ${p[name] === null ? "null" : typeof p[name]}`,
      );
    }
  }
  if (!/^[a-z][a-z0-9-]*$/.test(p.type as string)) {
    throw new Error(`type '${p.type}' must be lower case letters, digits and '-'`);
  }
  const content = p.content as { supported?: unknown; default?: unknown };
  if (!Array.isArray(content.supported) || !Array.isArray(content.default)) {
    throw new Error("'content' must be { supported: [...], default: [...] }");
  }
  for (const [name, o] of Object.entries(p.options as Record<string, { type?: unknown }>)) {
    if (!o || typeof o.type !== "string") throw new Error(`option '${name}' has no 'type'`);
  }
  const features = p.features as unknown;
  if (features !== undefined && !Array.isArray(features)) {
    throw new Error("'features' must be a list of strings");
  }
  if (
    Array.isArray(features) && features.includes("backup-provider") &&
    typeof p.newBackupProvider !== "function"
  ) {
    throw new Error("feature 'backup-provider' needs a 'newBackupProvider' function");
  }
  const warning = checkApiVersion(p.api as number);
  return { plugin: p as unknown as StoragePlugin, warning };
}

function defaultPluginDir(): string {
  return Deno.env.get("VOLT_PLUGINS") ?? "/etc/volt/plugins";
}

async function pluginFilesIn(dir: string): Promise<string[]> {
  const files: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if ((e.isFile || e.isSymlink) && /\.(ts|js|mjs)$/.test(e.name)) {
        files.push(`${dir}/${e.name}`);
      }
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) {
      throw new PluginLoadError(
        dir,
        `cannot read the plugins directory: ${(err as Error).message}`,
      );
    }
  }
  return files.sort();
}

function absolute(path: string): string {
  return path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
}

/** Loads the built-in plugins, the plugins directory and `paths`, in that order. */
export async function loadPlugins(options: LoadOptions = {}): Promise<PluginRegistry> {
  const plugins: LoadedPlugin[] = [];
  const errors: PluginLoadError[] = [];
  const warnings: string[] = [];
  const add = (source: string, builtin: boolean, module: Record<string, unknown>) => {
    try {
      const { plugin, warning } = validatePlugin(module);
      const taken = plugins.find((l) => l.plugin.type === plugin.type);
      if (taken) {
        throw new Error(`storage type '${plugin.type}' is already provided by ${taken.source}`);
      }
      if (warning) warnings.push(`plugin ${source}: ${warning}`);
      plugins.push({ plugin, source, builtin });
    } catch (err) {
      errors.push(new PluginLoadError(source, (err as Error).message, { cause: err }));
    }
  };
  for (const b of BUILTIN_PLUGINS) add(b.source, true, b.module);
  let external: string[] = [];
  try {
    external = await pluginFilesIn(options.dir ?? defaultPluginDir());
  } catch (err) {
    errors.push(err as PluginLoadError);
  }
  external = [...external, ...(options.paths ?? []).map(absolute)];
  for (const file of external) {
    let module: Record<string, unknown>;
    try {
      await Deno.stat(file);
      // The one computed dynamic import in volt: third-party plugin modules.
      module = await import(new URL(`file://${file}`).href);
    } catch (err) {
      const msg = err instanceof Deno.errors.NotFound
        ? "file not found"
        : `cannot load module: ${(err as Error).message.split("\n")[0]}`;
      errors.push(new PluginLoadError(file, msg, { cause: err }));
      continue;
    }
    add(file, false, module);
  }
  return {
    plugins,
    errors,
    warnings,
    get: (type) => plugins.find((l) => l.plugin.type === type)?.plugin,
  };
}
