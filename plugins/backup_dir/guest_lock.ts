/**
 * The lock of one guest's backups in a directory backup storage (`<path>/<vmid>/.lock`,
 * `flock`): held from `backupInit` to `backupCleanup`, and while a backup is removed, so a
 * chain is never changed under a running backup. Released by the kernel if volt dies.
 *
 * @module
 */

import { VoltError } from "../../lib/errors.ts";

/**
 * Takes the lock of the guest directory `dir`, waiting up to `timeoutMs` (default 60 s) for
 * another volt process; `what` names it in the timeout message. Dispose to release.
 *
 * @example
 * ```ts
 * import { lockGuest } from "./guest_lock.ts";
 * using _lock = await lockGuest(Deno.makeTempDirSync(), "guest 100");
 * ```
 */
export async function lockGuest(
  dir: string,
  what: string,
  timeoutMs = 60_000,
): Promise<Disposable> {
  const file = await Deno.open(`${dir}/.lock`, { read: true, write: true, create: true });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const locked = await Promise.race([
    file.lock(true).then(() => true),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
  ]);
  clearTimeout(timer);
  if (!locked) {
    file.close();
    throw new VoltError(
      `timed out after ${Math.round(timeoutMs / 1000)} s waiting for the lock on ${what}: ` +
        "another volt process holds it",
    );
  }
  let released = false;
  return {
    [Symbol.dispose]() {
      if (released) return;
      released = true;
      file.close();
    },
  };
}
