/**
 * Advisory locks between volt processes: `flock(2)` on a lock file, held while a function runs.
 *
 * @module
 */

import { VoltError } from "./errors.ts";

/** Options for {@link withLock}. */
export interface LockOptions {
  /** Give up after this many milliseconds (default 60 s). */
  timeoutMs?: number;
  /** What is locked, for the timeout message (e.g. `storage 'local'`). */
  what?: string;
}

/**
 * Runs `fn` while holding an exclusive flock on `lockPath` (created if missing). Waits for
 * another holder up to `timeoutMs`, then fails with a message naming `what`. The lock is
 * released when `fn` settles, and by the kernel if the process dies.
 *
 * @example
 * ```ts
 * import { withLock } from "./lock.ts";
 * const path = Deno.makeTempFileSync();
 * const v = await withLock(path, () => Promise.resolve(42));
 * console.assert(v === 42);
 * ```
 */
export async function withLock<T>(
  lockPath: string,
  fn: () => Promise<T>,
  options: LockOptions = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  const file = await Deno.open(lockPath, { read: true, write: true, create: true });
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const locked = file.lock(true).then(() => true);
    const timedOut = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    if (!(await Promise.race([locked, timedOut]))) {
      throw new VoltError(
        `timed out after ${Math.round(timeoutMs / 1000)} s waiting for the lock on ${
          options.what ?? lockPath
        }: another volt process holds it`,
      );
    }
    clearTimeout(timer);
    return await fn();
  } finally {
    clearTimeout(timer);
    file.close();
  }
}
