/**
 * The tar payload of `tar+size` and `rootdir+meta`: GNU tar of a subvolume's contents with
 * Proxmox's flags (`@COMMON_TAR_FLAGS` in its Plugin.pm), created with `-cf - -C <dir> .` and
 * extracted with `-C <dir> -xf -`. Also the plumbing shared with other child processes whose
 * output is part of a stream (nbdcopy): straight into stdout when the sink is stdout, through
 * the sink otherwise.
 *
 * @module
 */

import type { StreamSink, StreamSource } from "../../plugins/api.ts";
import { VoltError } from "../errors.ts";
import { lastLine, spawnTool } from "../run.ts";
import { interrupted } from "./fd.ts";
import { ZEROS } from "../../ffi/libc_fd.ts";

/** Proxmox's tar flags for subvolume streams, in its order. */
export const COMMON_TAR_FLAGS: readonly string[] = [
  "--one-file-system",
  "-p",
  "--sparse",
  "--numeric-owner",
  "--acls",
  "--xattrs",
  "--xattrs-include=user.*",
  "--xattrs-include=security.capability",
];

/**
 * Runs `cmd args` and makes its stdout the rest of the stream: inherited when `sink` is this
 * process's stdout, copied into `sink` otherwise. Throws with the program's last stderr line
 * when it fails; kills it when `signal` fires.
 */
export async function childIntoSink(
  cmd: string,
  args: string[],
  sink: StreamSink,
  signal?: AbortSignal,
): Promise<void> {
  const direct = sink.fd === 1;
  const child = spawnTool(cmd, args, {
    stdin: "null",
    stdout: direct ? "inherit" : "piped",
    stderr: "piped",
    signal,
  });
  const stderr = new Response(child.stderr).text();
  let copyError: unknown;
  if (!direct) {
    try {
      for await (const chunk of child.stdout) await sink.write(chunk);
    } catch (err) {
      copyError = err;
      try {
        child.kill();
      } catch { /* already gone */ }
    }
  }
  const status = await child.status;
  const message = await stderr;
  if (signal?.aborted) throw interrupted(signal);
  if (copyError) throw copyError;
  if (status.signal === "SIGPIPE") {
    throw new VoltError(`${cmd}: the output was closed before the end of the stream (broken pipe)`);
  }
  if (!status.success) {
    throw new VoltError(`${cmd} failed: ${lastLine(message) || `exit code ${status.code}`}`);
  }
}

/**
 * Runs `cmd args` with the rest of `source` as its stdin: inherited when the source is this
 * process's stdin, fed chunk by chunk otherwise.
 */
export async function sourceIntoChild(
  cmd: string,
  args: string[],
  source: StreamSource,
  signal?: AbortSignal,
): Promise<void> {
  const direct = source.fd === 0;
  const child = spawnTool(cmd, args, {
    stdin: direct ? "inherit" : "piped",
    stdout: "null",
    stderr: "piped",
    signal,
  });
  const stderr = new Response(child.stderr).text();
  let feedError: unknown;
  if (!direct) {
    const writer = child.stdin.getWriter();
    try {
      for await (const chunk of source.chunks()) {
        if ("data" in chunk) {
          // A copy: the source reuses its buffer.
          await writer.write(chunk.data.slice());
          continue;
        }
        for (let left = chunk.zeros; left > 0;) {
          const n = Math.min(left, ZEROS.length);
          await writer.write(new Uint8Array(n));
          left -= n;
        }
      }
      await writer.close();
    } catch (err) {
      feedError = err;
      await writer.abort().catch(() => {});
    }
  }
  const status = await child.status;
  const message = await stderr;
  if (signal?.aborted) throw interrupted(signal);
  if (!status.success) {
    throw new VoltError(`${cmd} failed: ${lastLine(message) || `exit code ${status.code}`}`);
  }
  if (feedError) throw feedError;
}

/** Writes the subvolume directory `dir` into `sink` as a GNU tar stream. */
export function tarCreate(dir: string, sink: StreamSink, signal?: AbortSignal): Promise<void> {
  return childIntoSink("tar", [...COMMON_TAR_FLAGS, "-cf", "-", "-C", dir, "."], sink, signal);
}

/** Extracts the rest of `source` (a GNU tar stream) into the subvolume directory `dir`. */
export function tarExtract(
  dir: string,
  source: StreamSource,
  signal?: AbortSignal,
): Promise<void> {
  return sourceIntoChild("tar", [...COMMON_TAR_FLAGS, "-C", dir, "-xf", "-"], source, signal);
}
