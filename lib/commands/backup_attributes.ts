/**
 * Reading and changing a backup's attributes (`notes`, `protected`) through its storage
 * plugin's `getVolumeAttribute`/`updateVolumeAttribute`: what `volt notes` and `volt protect`
 * share.
 *
 * @module
 */

import { VoltError } from "../errors.ts";
import type { VolumeAttribute } from "../../plugins/api.ts";
import type { Storages, VolumeHandle } from "../storage/storages.ts";

/** What each attribute is called in messages. */
const ATTRIBUTE_NAMES: Record<VolumeAttribute, string> = {
  notes: "notes",
  protected: "protection",
};

/**
 * Resolves a backup volume whose storage plugin can read and change `attribute`; one clear
 * error otherwise (`storage 'x' (type y) does not support notes`, not a backup).
 */
async function attributeVolume(
  storages: Storages,
  volid: string,
  attribute: VolumeAttribute,
): Promise<VolumeHandle> {
  const v = await storages.volume(volid);
  if (!v.plugin.getVolumeAttribute || !v.plugin.updateVolumeAttribute) {
    throw new VoltError(
      `storage '${v.storage.id}' (type ${v.storage.type}) does not support ` +
        ATTRIBUTE_NAMES[attribute],
    );
  }
  if (v.name.vtype !== "backup") {
    throw new VoltError(
      `'${v.volid}' is not a backup: only backups have ${ATTRIBUTE_NAMES[attribute]}`,
    );
  }
  return v;
}

/** A backup's attribute: `notes` as text (empty when none), `protected` as a boolean. */
export async function readBackupAttribute(
  storages: Storages,
  volid: string,
  attribute: VolumeAttribute,
): Promise<string | boolean> {
  const v = await attributeVolume(storages, volid, attribute);
  return await v.plugin.getVolumeAttribute!(v.storage, v.volname, attribute);
}

/** Changes a backup's attribute (the plugin checks limits such as max-protected-backups). */
export async function writeBackupAttribute(
  storages: Storages,
  volid: string,
  attribute: VolumeAttribute,
  value: string | boolean,
): Promise<void> {
  const v = await attributeVolume(storages, volid, attribute);
  await v.plugin.updateVolumeAttribute!(v.storage, v.volname, attribute, value);
}
