/**
 * Error classes that the CLI layer turns into one line on stderr and an exit code.
 *
 * Engine code throws built-in errors by meaning (`TypeError`, `RangeError`, `SyntaxError` for a
 * malformed stream) or {@link VoltError} when the message is meant for the user as is. Anything
 * else is still printed as one line; stack traces only appear with `VOLT_DEBUG=1`.
 *
 * @module
 */

/**
 * A failure whose message is written for the user: what failed and what to do.
 *
 * @example
 * ```ts
 * import { VoltError } from "./errors.ts";
 * const err = new VoltError("storage 'x' does not exist: see `volt status`");
 * console.assert(err.exitCode === 1);
 * ```
 */
export class VoltError extends Error {
  /** Process exit code the CLI uses for this error. */
  readonly exitCode: number = 1;
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "VoltError";
  }
}

/**
 * The command line itself is wrong (unknown option, missing argument): exit code 2.
 *
 * @example
 * ```ts
 * import { UsageError } from "./errors.ts";
 * console.assert(new UsageError("missing <volid>").exitCode === 2);
 * ```
 */
export class UsageError extends VoltError {
  override readonly exitCode: number = 2;
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UsageError";
  }
}

/**
 * The one line printed for an error: its message, with the messages of its causes appended
 * when they add something.
 *
 * @example
 * ```ts
 * import { errorLine } from "./errors.ts";
 * console.assert(errorLine(new Error("a", { cause: new Error("b") })) === "a: b");
 * ```
 */
export function errorLine(err: unknown): string {
  const parts: string[] = [];
  let cur: unknown = err;
  for (let depth = 0; cur !== undefined && depth < 5; depth++) {
    const msg = cur instanceof Error ? cur.message : String(cur);
    if (msg && !parts.some((p) => p.includes(msg))) parts.push(msg);
    cur = cur instanceof Error ? cur.cause : undefined;
  }
  return parts.join(": ").replaceAll("\n", " ").trim() || "unknown error";
}
