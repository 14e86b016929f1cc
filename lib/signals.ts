/**
 * Stopping cleanly on SIGINT/SIGTERM/SIGHUP: long operations take an `AbortSignal` that fires when
 * the process is asked to stop, clean up (free a half-imported volume, remove a temporary
 * backup directory), and then fail with a message saying they were interrupted.
 *
 * @module
 */

import { VoltError } from "./errors.ts";

/** The error an operation throws when it was stopped by a signal. */
export class InterruptedError extends VoltError {
  constructor(what: string, signal: string) {
    super(`${what} interrupted by ${signal}; nothing was left half-written`);
    this.name = "InterruptedError";
  }
}

/**
 * Runs `fn` with an `AbortSignal` that aborts on SIGINT, SIGTERM or SIGHUP (a closed ssh
 * session; reason: the signal name).
 * While `fn` runs, those signals do not kill the process; once it settles they do again.
 *
 * @example
 * ```ts
 * import { withTermination } from "./signals.ts";
 * const v = await withTermination((signal) => Promise.resolve(signal.aborted));
 * console.assert(v === false);
 * ```
 */
export async function withTermination<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  const handlers = signals.map((s) => {
    const h = () => controller.abort(s);
    Deno.addSignalListener(s, h);
    return [s, h] as const;
  });
  try {
    return await fn(controller.signal);
  } finally {
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
  }
}

/** Throws {@link InterruptedError} if `signal` has fired. */
export function throwIfInterrupted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw new InterruptedError(what, String(signal.reason));
}
