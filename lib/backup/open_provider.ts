/**
 * Getting the backup provider of a storage: only for plugins that opted in with the
 * `backup-provider` feature, and checked for every method volt will call.
 *
 * @module
 */

import type { LogFunction } from "../../plugins/api.ts";
import { type BackupProvider, REQUIRED_PROVIDER_METHODS } from "../../plugins/backup_api.ts";
import { VoltError } from "../errors.ts";
import type { StorageHandle } from "../storage/storages.ts";

/**
 * The provider of a backup storage. Throws a {@link VoltError} when the storage is not a
 * backup storage, or the provider lacks a method (naming it and the storage type).
 *
 * @example
 * ```ts ignore
 * import { openBackupProvider } from "./open_provider.ts";
 * const provider = await openBackupProvider(await storages.get("backup"), console.error);
 * ```
 */
export async function openBackupProvider(
  h: StorageHandle,
  log: LogFunction,
): Promise<BackupProvider> {
  const { storage, plugin } = h;
  if (!plugin.features?.includes("backup-provider") || !plugin.newBackupProvider) {
    throw new VoltError(
      `storage '${storage.id}' (type ${storage.type}) is not a backup storage: ` +
        "use one whose type has the backup-provider feature, e.g. backup-dir",
    );
  }
  let provider: BackupProvider;
  try {
    provider = await plugin.newBackupProvider(storage, log);
  } catch (err) {
    throw new VoltError(
      `storage '${storage.id}': cannot create its backup provider: ${(err as Error).message}`,
      { cause: err },
    );
  }
  const p = provider as unknown as Record<string, unknown>;
  if (!p || typeof p !== "object") {
    throw new VoltError(`storage type ${storage.type}: newBackupProvider returned no provider`);
  }
  const missing = REQUIRED_PROVIDER_METHODS.filter((m) => typeof p[m] !== "function");
  if (missing.length > 0) {
    throw new VoltError(
      `storage type ${storage.type}: its backup provider lacks ${missing.join(", ")}`,
    );
  }
  return provider;
}
