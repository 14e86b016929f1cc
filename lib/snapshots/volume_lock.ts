/**
 * The per-volume lock: every snapshot operation, `volt check` and `volt free` of a volume hold
 * an exclusive `flock(2)` on `.<volfile>.lock` beside the volume. A second operation waits (up
 * to a timeout) and then fails with a message naming the volume.
 *
 * Unlike a plain lock file, this one may be removed (by `volt free`) while others wait on it:
 * after locking, the holder checks that the path still names the inode it locked, and starts
 * over when it does not.
 *
 * @module
 */

import { VoltError } from "../errors.ts";

/** Options for {@link withVolumeLock}. */
export interface VolumeLockOptions {
  /** Give up after this many milliseconds (default 60 s, or `$VOLT_LOCK_TIMEOUT` seconds). */
  timeoutMs?: number;
}

/** What the locked function may do with the lock. */
export interface VolumeLock {
  /** Removes the lock file (the volume is being freed); the lock is still held until return. */
  discard(): Promise<void>;
}

function defaultTimeoutMs(): number {
  const env = Deno.env.get("VOLT_LOCK_TIMEOUT");
  return env && /^\d+$/.test(env) ? Number(env) * 1000 : 60_000;
}

/**
 * Runs `fn` holding the exclusive lock at `lockPath`; `what` names the volume in the timeout
 * message.
 *
 * @example
 * ```ts
 * import { withVolumeLock } from "./volume_lock.ts";
 * const dir = Deno.makeTempDirSync();
 * const v = await withVolumeLock(`${dir}/.x.lock`, "volume 'x'", () => Promise.resolve(1));
 * console.assert(v === 1);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export async function withVolumeLock<T>(
  lockPath: string,
  what: string,
  fn: (lock: VolumeLock) => Promise<T>,
  options: VolumeLockOptions = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? defaultTimeoutMs();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const file = await Deno.open(lockPath, { read: true, write: true, create: true });
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const locked = file.lock(true).then(() => true);
      const timedOut = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), Math.max(0, deadline - Date.now()));
      });
      if (!(await Promise.race([locked, timedOut]))) {
        throw new VoltError(
          `timed out after ${
            Math.round(timeoutMs / 1000)
          } s waiting for the lock on ${what}: another volt operation on it is running`,
        );
      }
      clearTimeout(timer);
      const held = await file.stat();
      const now = await Deno.stat(lockPath).catch(() => undefined);
      if (!now || now.ino !== held.ino || now.dev !== held.dev) continue; // Freed meanwhile.
      let discarded = false;
      return await fn({
        async discard() {
          if (discarded) return;
          discarded = true;
          await Deno.remove(lockPath).catch(() => {});
        },
      });
    } finally {
      clearTimeout(timer);
      file.close();
    }
  }
}
