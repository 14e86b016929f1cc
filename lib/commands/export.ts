/**
 * `volt export <volid> <format> <file|->`: write a volume as a stream (like `pvesm export`).
 *
 * @module
 */

import type { CommandSpec } from "../cli/command.ts";
import { VoltError } from "../errors.ts";
import { InterruptedError, withTermination } from "../signals.ts";
import type { Storages } from "../storage/storages.ts";
import { FdSink } from "../streams/sink.ts";
import { storagesFromArgs } from "./common.ts";

/** Options of {@link runExport}. */
export interface ExportOptions {
  /** Volume to export. */
  volid: string;
  /** Stream format, e.g. `raw+size`, `images+meta`. */
  format: string;
  /** Output file, or `-` for stdout. */
  file: string;
  /** Carry the snapshots (qcow2/vmdk file as it is). */
  withSnapshots?: boolean;
}

/**
 * Writes the volume to the file (created or truncated) or to stdout. Nothing but stream bytes
 * reaches stdout. A file left by a failed or interrupted (SIGINT/SIGTERM) export is removed.
 * Into stdout, a signal ends volt at once as usual: the reader sees a short stream, which
 * `volt import` detects.
 */
export async function runExport(storages: Storages, options: ExportOptions): Promise<void> {
  const v = await storages.volume(options.volid);
  const exporter = v.plugin.volumeExport;
  if (!exporter) {
    throw new VoltError(`storage type '${v.storage.type}' does not support export`);
  }
  const go = async (sink: FdSink, signal?: AbortSignal) => {
    try {
      await exporter.call(v.plugin, v.storage, v.volname, options.format, sink, {
        withSnapshots: options.withSnapshots,
        signal,
        log: (_level, message) => console.error(message),
      });
      sink.close();
    } catch (err) {
      await sink.discard();
      if (signal?.aborted) {
        throw new InterruptedError(`export of '${v.volid}'`, String(signal.reason));
      }
      throw err;
    }
  };
  if (options.file === "-") return await go(FdSink.stdout());
  // Writing a file never blocks for long, so signals can be handled (and the file removed).
  await withTermination((signal) => go(FdSink.create(options.file), signal));
}

/** `volt export`. */
export const exportCommand: CommandSpec = {
  name: "export",
  summary: "write a volume as a stream (raw+size, tar+size, qcow2+size, vmdk+size, <vtype>+meta)",
  args: "<volid> <format> <file|->",
  details: "Formats a volume offers: 'volt export-formats <volid>'. '-' writes to stdout, " +
    "which must not be a terminal. Byte layouts: docs/formats.md.",
  positionals: [3, 3],
  options: {
    "with-snapshots": {
      type: "boolean",
      description: "carry the snapshots: the qcow2/vmdk file as it is (qcow2+size, vmdk+size)",
    },
  },
  async run(args) {
    const [volid, format, file] = args.positionals;
    await runExport(await storagesFromArgs(args), {
      volid,
      format,
      file,
      withSnapshots: args.values["with-snapshots"] === true,
    });
  },
};
