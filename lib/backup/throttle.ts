/**
 * Bandwidth limits for backups (`--bwlimit`, KiB/s, what `cstream -t` does for vzdump): a
 * {@link RateLimiter} that says how long to wait before more bytes may pass, and
 * {@link throttleStream}, a byte stream that passes its input at that rate. The clock is
 * injectable so tests can check the schedule without waiting.
 *
 * @module
 */

/** Time source for a {@link RateLimiter}: milliseconds, and a way to wait. */
export interface Clock {
  /** Milliseconds on a monotonic scale. */
  now(): number;
  /** Resolves after `ms` milliseconds; rejects with the signal's reason when it fires. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** The real clock: `performance.now()` and `setTimeout`. */
export const SYSTEM_CLOCK: Clock = {
  now: () => performance.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal?.reason);
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      signal?.addEventListener("abort", onAbort, { once: true });
    }),
};

/**
 * Keeps an average rate: from the first bytes on, no more than `bytesPerSecond × elapsed`
 * bytes have passed at any time.
 *
 * @example
 * ```ts
 * import { RateLimiter } from "./throttle.ts";
 * let t = 0;
 * const limiter = new RateLimiter(1000, { now: () => t, sleep: async (ms) => { t += ms; } });
 * await limiter.take(500);
 * await limiter.take(1500);
 * console.assert(t === 2000);
 * ```
 */
export class RateLimiter {
  readonly bytesPerSecond: number;
  #clock: Clock;
  #start: number | undefined;
  #bytes = 0;

  constructor(bytesPerSecond: number, clock: Clock = SYSTEM_CLOCK) {
    if (!(bytesPerSecond > 0) || !Number.isFinite(bytesPerSecond)) {
      throw new RangeError(`bandwidth limit must be a positive number, not ${bytesPerSecond}`);
    }
    this.bytesPerSecond = bytesPerSecond;
    this.#clock = clock;
  }

  /** Counts `bytes` that are about to pass; returns how many ms to wait first (0: none). */
  delayFor(bytes: number): number {
    const now = this.#clock.now();
    this.#start ??= now;
    this.#bytes += bytes;
    const due = this.#start + (this.#bytes / this.bytesPerSecond) * 1000;
    return Math.max(0, due - now);
  }

  /** Waits until `bytes` more may pass. */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    const ms = this.delayFor(bytes);
    if (ms > 0) await this.#clock.sleep(ms, signal);
  }
}

/**
 * A byte stream that passes its input at no more than `kibPerSecond` KiB/s (on average since
 * the first chunk).
 *
 * @example
 * ```ts
 * import { throttleStream } from "./throttle.ts";
 * const out = ReadableStream.from([new Uint8Array(10)]).pipeThrough(throttleStream(1024));
 * for await (const chunk of out) console.assert(chunk.length === 10);
 * ```
 */
export function throttleStream(
  kibPerSecond: number,
  options: { clock?: Clock; signal?: AbortSignal } = {},
): TransformStream<Uint8Array, Uint8Array> {
  const limiter = new RateLimiter(kibPerSecond * 1024, options.clock);
  return new TransformStream({
    async transform(chunk, controller) {
      await limiter.take(chunk.length, options.signal);
      controller.enqueue(chunk);
    },
  });
}
