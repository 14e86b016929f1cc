/**
 * A `qemu-nbd` server volt starts itself: serving an image on a private unix socket, stopped
 * by the PID volt started. Used to export an offline disk image (with its dirty bitmap) for a
 * backup, and by tests.
 *
 * @module
 */

import { VoltError } from "../errors.ts";
import { installHint, lastLine, spawnTool } from "../run.ts";

/**
 * `setpriv --pdeathsig KILL`: the kernel kills the server when volt dies, even by SIGKILL, so
 * a killed backup never leaves a qemu-nbd holding its image's lock. (Death signals follow the
 * thread that spawned the child; Deno spawns from the main JavaScript thread, which lives as
 * long as the process.) Without `setpriv` (util-linux) the server is started directly.
 */
const WATCHDOG = ["--pdeathsig", "KILL", "--"];
/** setpriv's exit code when it cannot execute the program. */
const EXEC_FAILED = 127;
let watchdogMissing = false;

function spawnWithWatchdog(program: string, args: string[]): Deno.ChildProcess {
  const options = { stdin: "null", stdout: "null", stderr: "piped" } as const;
  if (!watchdogMissing) {
    try {
      return new Deno.Command("setpriv", { args: [...WATCHDOG, program, ...args], ...options })
        .spawn();
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      watchdogMissing = true;
    }
  }
  return spawnTool(program, args, options);
}

/** What to serve and how. */
export interface QemuNbdOptions {
  image: string;
  /** Image format (`qcow2`, `raw`); always given, qemu never probes. */
  format: string;
  /** Unix socket path to create. */
  socket: string;
  /** Export name (default `disk`). */
  exportName?: string;
  readOnly?: boolean;
  /** Persistent dirty bitmaps to export as `qemu:dirty-bitmap:<name>`. */
  bitmaps?: string[];
  /** Concurrent clients allowed (default 8). */
  shared?: number;
  /** Extra qemu-nbd arguments. */
  extraArgs?: string[];
  /** How long to wait for the socket (default 10 s). */
  timeoutMs?: number;
}

/** A running qemu-nbd. Stop it with {@link QemuNbdServer.stop} or `await using`. */
export class QemuNbdServer implements AsyncDisposable {
  readonly socket: string;
  readonly exportName: string;
  readonly pid: number;
  #child: Deno.ChildProcess;
  #stderr: Promise<string>;
  #stopped = false;

  private constructor(child: Deno.ChildProcess, socket: string, exportName: string) {
    this.#child = child;
    this.pid = child.pid;
    this.socket = socket;
    this.exportName = exportName;
    this.#stderr = new Response(child.stderr).text().catch(() => "");
  }

  /** `nbd+unix:///<export>?socket=<path>`. */
  get uri(): string {
    return `nbd+unix:///${this.exportName}?socket=${this.socket}`;
  }

  /** Starts qemu-nbd and waits until its socket accepts connections. */
  static async start(options: QemuNbdOptions): Promise<QemuNbdServer> {
    const exportName = options.exportName ?? "disk";
    const args = [
      "-f",
      options.format,
      "-k",
      options.socket,
      "-x",
      exportName,
      "-t",
      "-e",
      String(options.shared ?? 8),
    ];
    if (options.readOnly) args.push("-r");
    for (const b of options.bitmaps ?? []) args.push("-B", b);
    args.push(...(options.extraArgs ?? []), options.image);
    const child = spawnWithWatchdog("qemu-nbd", args);
    const server = new QemuNbdServer(child, options.socket, exportName);
    const deadline = Date.now() + (options.timeoutMs ?? 10_000);
    let exited = false;
    child.status.then(() => exited = true);
    for (;;) {
      if (exited) {
        if ((await child.status).code === EXEC_FAILED) {
          throw new VoltError(`qemu-nbd not found: ${installHint("qemu-nbd")}`);
        }
        const msg = lastLine(await server.#stderr);
        throw new VoltError(`qemu-nbd could not serve '${options.image}': ${msg || "it exited"}`);
      }
      try {
        const conn = await Deno.connect({ transport: "unix", path: options.socket });
        conn.close();
        return server;
      } catch {
        // Not listening yet.
      }
      if (Date.now() > deadline) {
        await server.stop();
        throw new VoltError(
          `qemu-nbd did not open '${options.socket}' within ${options.timeoutMs ?? 10_000} ms`,
        );
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Stops the server (SIGTERM, then SIGKILL after 5 s) and removes its socket. Idempotent. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    try {
      this.#child.kill("SIGTERM");
    } catch {
      // Already gone.
    }
    const timer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 5000);
    await this.#child.status;
    clearTimeout(timer);
    await this.#stderr;
    await Deno.remove(this.socket).catch(() => {});
  }

  /** Kills the server abruptly (SIGKILL), as a crash would; for failure tests. */
  kill(): void {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* gone */ }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}
