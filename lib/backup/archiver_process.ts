/**
 * A running archiver (tar, mksquashfs, unsquashfs) for container backups: its stderr goes
 * line by line to a log callback, an `AbortSignal` kills it, it can be paused and resumed
 * (`SIGSTOP`/`SIGCONT`, for bandwidth limits on tools that write a file themselves), and its
 * end becomes one error line that says what failed. Programs that only need to run to
 * completion use `lib/run.ts` instead; this adds what that one cannot: a live stdout, the
 * pid's signals, and log lines while it runs.
 *
 * @module
 */

import { errorLine, VoltError } from "../errors.ts";
import { spawnTool } from "../run.ts";
import { InterruptedError } from "../signals.ts";

/** Options for {@link ArchiverProcess.spawn}. */
export interface ArchiverOptions {
  /** What the program does, for errors: `archiving /ct into /b/archive.tar`. */
  what: string;
  /** `piped`: read {@link ArchiverProcess.stdout}; default `null`. */
  stdout?: "piped" | "null";
  /** Kills the program (SIGTERM) when it fires. */
  signal?: AbortSignal;
  /** Gets each line the program writes to stderr, prefixed with its name. */
  log?: (line: string) => void;
  /**
   * What an interruption leaves behind, for its message (default: "nothing was left
   * half-written", true when the caller removes the partial output).
   */
  leftBehind?: string;
}

/**
 * One archiver child process.
 *
 * @example
 * ```ts
 * import { ArchiverProcess } from "./archiver_process.ts";
 * const p = ArchiverProcess.spawn("true", [], { what: "doing nothing" });
 * await p.wait();
 * ```
 */
export class ArchiverProcess {
  readonly cmd: string;
  readonly what: string;
  #child: Deno.ChildProcess;
  #signal?: AbortSignal;
  #leftBehind?: string;
  #onAbort: () => void;
  #stderr: Promise<string>;
  #exited = false;
  #status: Promise<Deno.CommandStatus>;

  private constructor(cmd: string, child: Deno.ChildProcess, options: ArchiverOptions) {
    this.cmd = cmd;
    this.what = options.what;
    this.#child = child;
    this.#signal = options.signal;
    this.#leftBehind = options.leftBehind;
    this.#onAbort = () => {
      this.#kill("SIGTERM");
      this.#kill("SIGCONT"); // A paused process only sees SIGTERM once it runs again.
    };
    this.#signal?.addEventListener("abort", this.#onAbort, { once: true });
    this.#stderr = collectLines(child.stderr, (line) => options.log?.(prefixed(cmd, line)));
    this.#status = child.status.then((s) => {
      this.#exited = true;
      return s;
    });
  }

  /**
   * Starts `cmd args…` (stdin closed). A missing program is a {@link VoltError} that says
   * what to install; an already fired signal starts nothing and throws its interruption.
   */
  static spawn(cmd: string, args: string[], options: ArchiverOptions): ArchiverProcess {
    if (options.signal?.aborted) {
      throw interruption(options.what, options.signal, options.leftBehind);
    }
    let child: Deno.ChildProcess;
    try {
      child = spawnTool(cmd, args, {
        stdin: "null",
        stdout: options.stdout ?? "null",
        stderr: "piped",
      });
    } catch (err) {
      throw new VoltError(`${options.what} failed: ${errorLine(err)}`, { cause: err });
    }
    return new ArchiverProcess(cmd, child, options);
  }

  /** The program's stdout (only with `stdout: "piped"`). */
  get stdout(): ReadableStream<Uint8Array> {
    return this.#child.stdout;
  }

  /** Has the program exited? */
  get exited(): boolean {
    return this.#exited;
  }

  /** Stops the program where it is (`SIGSTOP`). */
  pause(): void {
    this.#kill("SIGSTOP");
  }

  /** Lets a paused program continue (`SIGCONT`). */
  resume(): void {
    this.#kill("SIGCONT");
  }

  /** Ends the program now (`SIGTERM`, and `SIGCONT` in case it is paused). */
  kill(): void {
    this.#onAbort();
  }

  /** Resolves when the program has exited (successfully or not); never rejects. */
  async done(): Promise<void> {
    await this.#status;
  }

  /**
   * Waits for the end: resolves when the program succeeded; throws the interruption when the
   * signal fired, else a {@link VoltError} `<what> failed: <last stderr line>`.
   */
  async wait(): Promise<void> {
    const status = await this.#status;
    const stderr = await this.#stderr;
    this.#signal?.removeEventListener("abort", this.#onAbort);
    if (this.#signal?.aborted) throw interruption(this.what, this.#signal, this.#leftBehind);
    if (status.success) return;
    const why = stderr ||
      (status.signal
        ? `${this.cmd} was killed by ${status.signal}`
        : `${this.cmd} exited with code ${status.code}`);
    throw new VoltError(`${this.what} failed: ${prefixed(this.cmd, why)}`);
  }

  #kill(signal: Deno.Signal): void {
    if (this.#exited) return;
    try {
      this.#child.kill(signal);
    } catch { /* exited in the meantime */ }
  }
}

/**
 * The error for an operation stopped by `signal`: an {@link InterruptedError} naming what was
 * stopped, by what (the signal's reason), and what it left behind.
 */
export function interruption(
  what: string,
  signal: AbortSignal,
  leftBehind?: string,
): InterruptedError {
  const reason = signal.reason;
  const by = reason instanceof Error ? reason.message : String(reason);
  const err = new InterruptedError(what, by);
  if (leftBehind) err.message = `${what} interrupted by ${by}; ${leftBehind}`;
  return err;
}

/** `tar: x`, also when the program names itself by its full path (`/usr/bin/tar: x`). */
function prefixed(cmd: string, line: string): string {
  const own = new RegExp(`^(?:\\S*/)?${cmd}: `);
  return own.test(line) ? line.replace(own, `${cmd}: `) : `${cmd}: ${line}`;
}

/** Lines that say an error happened without saying which (tar's closing words). */
const NOISE = [
  /Exiting with failure status due to previous errors/,
  /Error is not recoverable: exiting now/,
  /Skipping to next header/,
];

/**
 * Reads `stream` as text, calling `onLine` for each non-empty line; returns the last one that
 * says what went wrong (a chatty program's output is not kept).
 */
async function collectLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<string> {
  let last = "";
  let pending = "";
  const take = (line: string) => {
    if (!line.trim()) return;
    if (!NOISE.some((n) => n.test(line))) last = line.trim();
    onLine(line.trimEnd());
  };
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    pending += text;
    const lines = pending.split("\n");
    pending = lines.pop() ?? "";
    lines.forEach(take);
  }
  take(pending);
  return last;
}
