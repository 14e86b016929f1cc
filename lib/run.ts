/**
 * Running external programs (qemu-img, tar, …) with their failures turned into one clear line.
 *
 * @module
 */

import { VoltError } from "./errors.ts";

/** Options for {@link run}. */
export interface RunOptions {
  /** Working directory. */
  cwd?: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Bytes or text fed to the program's stdin; stdin is closed otherwise. */
  stdin?: Uint8Array | string;
  /** Do not throw on a non-zero exit; the caller looks at `code`. */
  allowFailure?: boolean;
  /** Abort signal: the process is killed with SIGTERM when it fires. */
  signal?: AbortSignal;
}

/** What a finished program left behind. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `cmd args…` to completion and returns its output. A non-zero exit becomes a
 * {@link VoltError} naming the program and the last line of its stderr; a missing program
 * says which Debian package to install.
 *
 * @example
 * ```ts
 * import { run } from "./run.ts";
 * const { stdout } = await run("echo", ["hello"]);
 * console.assert(stdout === "hello\n");
 * ```
 */
export async function run(
  cmd: string,
  args: string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const child = spawnTool(cmd, args, {
    cwd: options.cwd,
    env: options.env,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    signal: options.signal,
  });
  if (options.stdin !== undefined) {
    const data = typeof options.stdin === "string"
      ? new TextEncoder().encode(options.stdin)
      : options.stdin;
    const w = child.stdin.getWriter();
    await w.write(data).catch(() => {});
    await w.close().catch(() => {});
  }
  const out = await child.output();
  const dec = new TextDecoder();
  const result = { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  if (out.code !== 0 && !options.allowFailure) {
    throw new VoltError(`${cmd} failed: ${lastLine(result.stderr) || `exit code ${out.code}`}`);
  }
  return result;
}

/**
 * Starts `cmd` (`Deno.Command(...).spawn()`); a program that is not installed becomes one
 * {@link VoltError} line naming the Debian package to install.
 */
export function spawnTool(
  cmd: string,
  args: string[],
  options: Omit<Deno.CommandOptions, "args"> = {},
): Deno.ChildProcess {
  try {
    return new Deno.Command(cmd, { ...options, args }).spawn();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new VoltError(`${cmd} not found: ${installHint(cmd)}`);
    }
    throw err;
  }
}

/** The last non-empty line of a program's output, for error messages. */
export function lastLine(text: string): string {
  const lines = text.split("\n").map((l) => l.trim()).filter((l) => l.length > 0);
  return lines.at(-1) ?? "";
}

const PACKAGES: Record<string, string> = {
  "qemu-img": "qemu-utils",
  "qemu-io": "qemu-utils",
  "qemu-nbd": "qemu-utils",
  "qemu-storage-daemon": "qemu-system-common",
  "nbdinfo": "libnbd-bin",
  "nbdcopy": "libnbd-bin",
  "mksquashfs": "squashfs-tools",
  "unsquashfs": "squashfs-tools",
  "tar": "tar",
};

/** What to install for a missing program. */
export function installHint(cmd: string): string {
  const pkg = PACKAGES[cmd];
  return pkg ? `install ${pkg} (or run scripts/setup)` : "install it or fix PATH";
}
