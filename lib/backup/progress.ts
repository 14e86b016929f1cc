/**
 * Progress of a backup or restore on stderr: one line per device with bytes done, total,
 * rate and ETA; rewritten in place on a terminal, at most one line a second otherwise.
 *
 * @module
 */

import { formatBytes } from "../size.ts";

/**
 * `m:ss` (or `h:mm:ss`) for an ETA.
 *
 * @example
 * ```ts
 * import { formatDuration } from "./progress.ts";
 * console.assert(formatDuration(65) === "1:05");
 * ```
 */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/**
 * One progress line.
 *
 * @example
 * ```ts
 * import { progressText } from "./progress.ts";
 * console.assert(progressText("scsi0", 512, 1024, 2).startsWith("scsi0: 512 B of 1.0 KiB (50%)"));
 * ```
 */
export function progressText(device: string, done: number, total: number, seconds: number): string {
  const pct = total > 0 ? Math.floor((100 * done) / total) : 100;
  const rate = seconds >= 0.1 ? done / seconds : 0;
  const eta = rate > 0 && total > done ? `, ETA ${formatDuration((total - done) / rate)}` : "";
  return `${device}: ${formatBytes(done)} of ${formatBytes(total)} (${pct}%)` +
    (rate > 0 ? `, ${formatBytes(rate)}/s` : "") + eta;
}

/** Prints progress of several devices, one after the other. */
export class ProgressPrinter {
  readonly #tty: boolean;
  readonly #write: (text: string) => void;
  readonly #interval: number;
  #device = "";
  #start = 0;
  #last = 0;
  #open = false;
  #finished = false;

  constructor(
    options: { tty?: boolean; write?: (text: string) => void; intervalMs?: number } = {},
  ) {
    this.#tty = options.tty ?? Deno.stderr.isTerminal();
    const encoder = new TextEncoder();
    this.#write = options.write ?? ((t) => Deno.stderr.writeSync(encoder.encode(t)));
    this.#interval = options.intervalMs ?? (this.#tty ? 200 : 1000);
  }

  /** Reports `done` of `total` bytes for `device`. */
  update(device: string, done: number, total: number): void {
    const now = performance.now();
    if (device !== this.#device) {
      this.end();
      this.#device = device;
      this.#start = now;
      this.#last = 0;
      this.#finished = false;
    }
    const final = done >= total;
    if (this.#finished || (!final && now - this.#last < this.#interval)) return;
    this.#finished = final;
    this.#last = now;
    const line = progressText(device, done, total, (now - this.#start) / 1000);
    if (this.#tty) {
      this.#write(`\r${line}\x1b[K`);
      this.#open = true;
    } else {
      this.#write(`${line}\n`);
    }
  }

  /** Ends the current line (on a terminal). */
  end(): void {
    if (this.#open) this.#write("\n");
    this.#open = false;
  }
}
