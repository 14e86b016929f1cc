/**
 * Test helpers: temporary directories and running the real volt CLI as a subprocess.
 *
 * @module
 */

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** What a volt run printed and how it exited. */
export interface VoltResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options for {@link volt}. */
export interface VoltRunOptions {
  env?: Record<string, string>;
  stdin?: Uint8Array | string;
  cwd?: string;
}

/**
 * Runs `deno run -A main.ts args…` and returns its exit code and output. The environment is
 * the test's plus `env`; `VOLT_CONFIG`/`VOLT_HOME` should point into a temp dir.
 */
export async function volt(args: string[], options: VoltRunOptions = {}): Promise<VoltResult> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-prompt", MAIN, ...args],
    env: { NO_COLOR: "1", ...options.env },
    cwd: options.cwd,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(
      typeof options.stdin === "string" ? new TextEncoder().encode(options.stdin) : options.stdin,
    ).catch(() => {});
    await w.close().catch(() => {});
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** The argv prefix that runs volt (for spawning it in pipelines). */
export function voltCommand(): string[] {
  return [Deno.execPath(), "run", "-A", "--no-prompt", MAIN];
}

/** A volt started in the background ({@link spawnVolt}), its stderr collected as it comes. */
export interface RunningVolt {
  child: Deno.ChildProcess;
  /** What it wrote to stderr so far. */
  stderr(): string;
  /** Resolves true once stderr matches `re`, false after `ms` milliseconds without a match. */
  waitFor(re: RegExp, ms: number): Promise<boolean>;
  /** Waits for it to exit. */
  done(): Promise<VoltResult>;
}

/** Starts `volt args…` without waiting for it (to signal it, or kill what it reads, mid-way). */
export function spawnVolt(args: string[], options: VoltRunOptions = {}): RunningVolt {
  const [cmd, ...pre] = voltCommand();
  const child = new Deno.Command(cmd, {
    args: [...pre, ...args],
    env: { NO_COLOR: "1", ...options.env },
    cwd: options.cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  const decoder = new TextDecoder();
  const stderrDone = (async () => {
    for await (const chunk of child.stderr) stderr += decoder.decode(chunk, { stream: true });
  })();
  const stdout = new Response(child.stdout).text();
  return {
    child,
    stderr: () => stderr,
    async waitFor(re, ms) {
      for (const end = Date.now() + ms; !re.test(stderr);) {
        if (Date.now() > end) return false;
        await new Promise((r) => setTimeout(r, 50));
      }
      return true;
    },
    async done() {
      const status = await child.status;
      await stderrDone;
      return { code: status.code, stdout: await stdout, stderr };
    },
  };
}

/** A temporary directory removed (recursively) when disposed. */
export class TempDir implements AsyncDisposable {
  readonly path: string;
  constructor(prefix = "volt-test-") {
    this.path = Deno.makeTempDirSync({ prefix });
  }
  /** A path inside the directory. */
  join(...parts: string[]): string {
    return [this.path, ...parts].join("/");
  }
  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.path, { recursive: true }).catch(() => {});
  }
}

/** Runs a program and returns its stdout; throws with its stderr on failure. */
export async function sh(
  cmd: string,
  args: string[],
  options: { cwd?: string } = {},
): Promise<string> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd: options.cwd,
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const dec = new TextDecoder();
  if (out.code !== 0) {
    throw new Error(`${cmd} ${args.join(" ")} failed (${out.code}): ${dec.decode(out.stderr)}`);
  }
  return dec.decode(out.stdout);
}
