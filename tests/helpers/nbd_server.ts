/**
 * Test helpers: real NBD servers on unix sockets in a temporary directory — `qemu-nbd` and
 * `qemu-storage-daemon` — and the `qemu-img` / `qemu-io` steps that build test images.
 *
 * A server is started as a child process, waited for until its socket accepts connections,
 * and stopped by the PID we started (SIGTERM, then SIGKILL); its directory is removed.
 *
 * @example
 * ```ts ignore
 * await using server = await startQemuNbd(image, { readOnly: true, bitmap: "b0" });
 * console.log(server.uri);
 * ```
 *
 * @module
 */

import { sh } from "./volt.ts";

/** A running NBD server. Disposing it stops it and removes its socket directory. */
export interface NbdServer extends AsyncDisposable {
  /** The unix socket path. */
  readonly socket: string;
  /** The export name ("" for qemu-nbd's default). */
  readonly exportName: string;
  /** `nbd+unix:///EXPORT?socket=PATH`. */
  readonly uri: string;
  /** PID of the server process we started. */
  readonly pid: number;
  /** Sends a signal to the server (e.g. SIGKILL to simulate a crash). */
  kill(signal?: Deno.Signal): void;
  /** Stops the server (SIGTERM, SIGKILL after 5 s) and removes its directory. */
  stop(): Promise<void>;
}

/** Options for {@link startQemuNbd}. */
export interface QemuNbdOptions {
  /** Image format (default qcow2). */
  format?: "qcow2" | "raw";
  /** Export read-only (`-r`). */
  readOnly?: boolean;
  /** Export this dirty bitmap (`-B NAME`). */
  bitmap?: string;
  /** Export name (`-x`), default "". */
  exportName?: string;
  /** Allow this many clients at once (`-e N`); qemu-nbd then advertises multi-conn. */
  shared?: number;
  /** Extra qemu-nbd arguments. */
  extraArgs?: string[];
}

/** Options for {@link startStorageDaemon}. */
export interface StorageDaemonOptions {
  /** Image format (default qcow2). */
  format?: "qcow2" | "raw";
  /** Writable export (default false: read-only). */
  writable?: boolean;
  /** Dirty bitmaps to export. */
  bitmaps?: string[];
  /** Export name (default "drive0"). */
  exportName?: string;
}

/**
 * Starts `qemu-nbd -t -k SOCK` (persistent: serves any number of connections in turn) on
 * `image` and waits until it accepts connections.
 */
export function startQemuNbd(image: string, options: QemuNbdOptions = {}): Promise<NbdServer> {
  const exportName = options.exportName ?? "";
  return startServer("qemu-nbd", exportName, (socket) => [
    "-t",
    "-k",
    socket,
    "-f",
    options.format ?? "qcow2",
    ...(options.readOnly ? ["-r"] : []),
    ...(options.bitmap !== undefined ? ["-B", options.bitmap] : []),
    ...(exportName ? ["-x", exportName] : []),
    ...(options.shared !== undefined ? ["-e", String(options.shared)] : []),
    ...(options.extraArgs ?? []),
    image,
  ]);
}

/**
 * Starts `qemu-storage-daemon` exporting `image` over NBD (what a running VM's QEMU does in a
 * backup) and waits until it accepts connections.
 */
export function startStorageDaemon(
  image: string,
  options: StorageDaemonOptions = {},
): Promise<NbdServer> {
  const exportName = options.exportName ?? "drive0";
  const readOnly = !options.writable;
  return startServer("qemu-storage-daemon", exportName, (socket) => [
    "--blockdev",
    JSON.stringify({
      driver: "file",
      "node-name": "file0",
      filename: image,
      "read-only": readOnly,
    }),
    "--blockdev",
    JSON.stringify({
      driver: options.format ?? "qcow2",
      "node-name": "fmt0",
      file: "file0",
      "read-only": readOnly,
    }),
    "--nbd-server",
    JSON.stringify({ addr: { type: "unix", path: socket } }),
    "--export",
    JSON.stringify({
      type: "nbd",
      id: "exp0",
      "node-name": "fmt0",
      name: exportName,
      writable: !readOnly,
      ...(options.bitmaps ? { bitmaps: options.bitmaps } : {}),
    }),
  ]);
}

async function startServer(
  program: string,
  exportName: string,
  argsFor: (socket: string) => string[],
): Promise<NbdServer> {
  const dir = await Deno.makeTempDir({ prefix: "volt-nbd-" });
  const socket = `${dir}/nbd.sock`;
  const child = new Deno.Command(program, {
    args: argsFor(socket),
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const stderrText = new Response(child.stderr).text();
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (!exited) {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      const timer = setTimeout(() => {
        try {
          if (!exited) child.kill("SIGKILL");
        } catch { /* already gone */ }
      }, 5000);
      await status;
      clearTimeout(timer);
    }
    await stderrText.catch(() => "");
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  // Wait for the socket to accept a connection (up to 10 s).
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (exited) {
      const err = (await stderrText).trim();
      await stop();
      throw new Error(`${program} exited before serving: ${err}`);
    }
    try {
      const conn = await Deno.connect({ transport: "unix", path: socket });
      conn.close();
      break;
    } catch {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`${program} did not create ${socket} within 10 s`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  const uri = `nbd+unix:///${exportName}?socket=${socket}`;
  return {
    socket,
    exportName,
    uri,
    pid: child.pid,
    kill(signal: Deno.Signal = "SIGTERM") {
      if (!exited) child.kill(signal);
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** `qemu-img create -f FORMAT image size` (qcow2 by default). */
export async function createImage(
  image: string,
  size: number | string,
  format: "qcow2" | "raw" = "qcow2",
): Promise<void> {
  await sh("qemu-img", ["create", "-q", "-f", format, image, String(size)]);
}

/** Adds a persistent dirty bitmap (`qemu-img bitmap --add`), granularity in bytes. */
export async function addBitmap(image: string, name: string, granularity?: number) {
  await sh("qemu-img", [
    "bitmap",
    "--add",
    ...(granularity ? ["-g", String(granularity)] : []),
    image,
    name,
  ]);
}

/**
 * Runs `qemu-io` commands on an image (e.g. `write -P 0xab 1M 64k`, `write -z 0 1M`,
 * `discard 2M 64k`); writes mark its enabled persistent bitmaps dirty.
 */
export async function qemuIo(image: string, commands: string[], format = "qcow2") {
  if (commands.length === 0) return;
  await sh("qemu-io", ["-f", format, ...commands.flatMap((c) => ["-c", c]), image]);
}

/**
 * `qemu-img compare` of two images; resolves to true when they read the same.
 * Formats are given explicitly so a raw file is never probed.
 */
export async function imagesEqual(
  a: string,
  aFormat: string,
  b: string,
  bFormat: string,
): Promise<boolean> {
  const out = await new Deno.Command("qemu-img", {
    args: ["compare", "-f", aFormat, "-F", bFormat, a, b],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (out.code === 0) return true;
  if (out.code === 1) return false;
  throw new Error(`qemu-img compare failed: ${new TextDecoder().decode(out.stderr)}`);
}

/** One entry of `nbdinfo --map --json`. */
export interface NbdinfoExtent {
  offset: number;
  length: number;
  type: number;
}

/**
 * `nbdinfo --map[=CONTEXT] --json URI`, with adjacent entries of the same type joined so
 * that maps can be compared regardless of how the server split its answers.
 */
export async function nbdinfoMap(uri: string, context?: string): Promise<NbdinfoExtent[]> {
  const out = await sh("nbdinfo", [context ? `--map=${context}` : "--map", "--json", uri]);
  const raw = JSON.parse(out) as NbdinfoExtent[];
  const joined: NbdinfoExtent[] = [];
  for (const e of raw) {
    const last = joined.at(-1);
    if (last && last.type === e.type && last.offset + last.length === e.offset) {
      last.length += e.length;
    } else {
      joined.push({ offset: e.offset, length: e.length, type: e.type });
    }
  }
  return joined;
}

/**
 * Builds a qcow2 test disk: `before` qemu-io commands, then a persistent bitmap `b0` (when
 * `bitmap` is not false), then `after` commands, which the bitmap records.
 */
export async function buildImage(
  path: string,
  size: number,
  before: string[],
  after: string[] = [],
  granularity?: number,
): Promise<string> {
  await createImage(path, size);
  await qemuIo(path, before);
  await addBitmap(path, "b0", granularity);
  await qemuIo(path, after);
  return path;
}
