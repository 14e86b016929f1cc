/**
 * Notes and protection of a backup in a directory backup storage: two side files in the
 * backup's directory that the manifest does not cover (they change after the backup was
 * committed): `notes` (UTF-8 text) and `protected` (empty; present = protected). Written under
 * the guest's lock (`guest_lock.ts`) and replaced atomically (`writeFileDurably`), so a reader
 * sees the old or the new value, never a torn one.
 *
 * @module
 */

import { VoltError } from "../../lib/errors.ts";
import { pathExists } from "../../lib/fs.ts";
import {
  NOTES_NAME,
  PROTECTED_NAME,
  syncDir,
  writeFileDurably,
} from "../../lib/backup/manifest.ts";

/** Longest notes accepted (Proxmox allows 32 KiB of notes on a backup). */
export const MAX_NOTES_BYTES = 32 * 1024;

/** Whether the backup in `dir` is protected. */
export function isProtected(dir: string): Promise<boolean> {
  return pathExists(`${dir}/${PROTECTED_NAME}`);
}

/** The notes of the backup in `dir`; empty when it has none. */
export async function readNotes(dir: string): Promise<string> {
  try {
    return await Deno.readTextFile(`${dir}/${NOTES_NAME}`);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return "";
    throw err;
  }
}

/** Replaces the notes of the backup in `dir`; empty text removes them. */
export async function writeNotes(dir: string, text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length > MAX_NOTES_BYTES) {
    throw new VoltError(`notes are limited to ${MAX_NOTES_BYTES} bytes (got ${bytes.length})`);
  }
  const path = `${dir}/${NOTES_NAME}`;
  if (text !== "") return writeFileDurably(path, bytes);
  await removeIfPresent(path);
  await syncDir(dir);
}

/** Marks the backup in `dir` protected or not. */
export async function writeProtected(dir: string, value: boolean): Promise<void> {
  const path = `${dir}/${PROTECTED_NAME}`;
  if (value) return writeFileDurably(path, new Uint8Array());
  await removeIfPresent(path);
  await syncDir(dir);
}

async function removeIfPresent(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}
