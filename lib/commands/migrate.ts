/**
 * `volt migrate <src-volid> <dst-storage>[:<volname>]`: export a volume into an import on this
 * host, in the format both sides agree on, with an optional bandwidth limit and a progress line
 * on stderr for long transfers.
 *
 * @module
 */

import { type CommandSpec, intOpt } from "../cli/command.ts";
import { VoltError } from "../errors.ts";
import { formatBytes } from "../size.ts";
import { withTermination } from "../signals.ts";
import type { Storages, VolumeHandle } from "../storage/storages.ts";
import { StreamChannel } from "../streams/channel.ts";
import { negotiateFormat } from "../streams/formats.ts";
import { storagesFromArgs } from "./common.ts";

/** Options of {@link runMigrate}. */
export interface MigrateOptions {
  /** Volume to copy. */
  source: string;
  /** Target storage, or `storage:volname` (default: the source's volume name). */
  target: string;
  /** Carry the snapshots (qcow2/vmdk). */
  withSnapshots?: boolean;
  /** When the target exists, use the next free disk name. */
  allowRename?: boolean;
  /** Bandwidth limit in KiB/s. */
  bwlimit?: number;
  /** Called about every two seconds during the copy (after the first two). */
  progress?: (line: string) => void;
  /** Called once the format is agreed on. */
  onFormat?: (format: string) => void;
}

/** Copies the volume and returns the volume id created. */
export async function runMigrate(storages: Storages, options: MigrateOptions): Promise<string> {
  const src = await storages.volume(options.source);
  const dst: VolumeHandle = options.target.includes(":")
    ? await storages.volume(options.target)
    : await storages.volume(`${options.target}:${src.volname}`);
  if (src.volid === dst.volid) {
    throw new VoltError(`'${src.volid}' is both source and target: give another storage or name`);
  }
  const ws = options.withSnapshots === true;
  const exporter = src.plugin;
  const importer = dst.plugin;
  if (!exporter.volumeExport || !exporter.volumeExportFormats) {
    throw new VoltError(`storage type '${src.storage.type}' does not support export`);
  }
  if (!importer.volumeImport || !importer.volumeImportFormats) {
    throw new VoltError(`storage type '${dst.storage.type}' does not support import`);
  }
  const offered = await exporter.volumeExportFormats(src.storage, src.volname, {
    withSnapshots: ws,
  });
  const accepted = await importer.volumeImportFormats(dst.storage, dst.volname, {
    withSnapshots: ws,
  });
  const format = negotiateFormat(offered, accepted);
  if (!format) {
    const hint = !ws && /\.(qcow2|vmdk)$/.test(dst.volname)
      ? "; a qcow2/vmdk target needs --with-snapshots, or name a .raw target"
      : "";
    throw new VoltError(
      `no common stream format ${ws ? "with" : "without"} snapshots: '${src.volid}' offers ${
        offered.join(", ") || "none"
      }, '${dst.volid}' accepts ${accepted.join(", ") || "none"}${hint}`,
    );
  }
  options.onFormat?.(format);

  const started = performance.now();
  let lastReport = started;
  const report = (bytes: number, final: boolean) => {
    const now = performance.now();
    const secs = (now - started) / 1000;
    if (!options.progress || secs < 2) return;
    if (!final && now - lastReport < 2000) return;
    lastReport = now;
    const rate = formatBytes(Math.round(bytes / Math.max(secs, 0.001)));
    options.progress(
      `${final ? "transferred" : "transferring:"} ${formatBytes(bytes)} in ${
        secs.toFixed(1)
      } s (${rate}/s)`,
    );
  };
  const channel = new StreamChannel({
    bwlimit: options.bwlimit ? options.bwlimit * 1024 : undefined,
    onProgress: (bytes) => report(bytes, false),
  });
  const log = (_level: string, message: string) => console.error(message);
  const volname = await withTermination(async (signal) => {
    const exporting = exporter.volumeExport!(src.storage, src.volname, format, channel.sink, {
      withSnapshots: ws,
      signal,
      log,
    }).then(
      () => channel.close(),
      (err) => {
        channel.fail(err);
        throw err;
      },
    );
    const importing = importer.volumeImport!(dst.storage, dst.volname, format, channel.source, {
      withSnapshots: ws,
      allowRename: options.allowRename,
      signal,
      log,
    }).catch((err) => {
      channel.cancel(err);
      throw err;
    });
    const [e, i] = await Promise.allSettled([exporting, importing]);
    if (i.status === "rejected") throw i.reason;
    if (e.status === "rejected") throw e.reason;
    return i.value;
  });
  report(channel.bytes, true);
  return `${dst.storage.id}:${volname}`;
}

/** `volt migrate`. */
export const migrateCommand: CommandSpec = {
  name: "migrate",
  summary: "copy a volume to another storage on this host through a stream",
  args: "<src-volid> <dst-storage>[:<volname>]",
  details: "Negotiates the format as export/import do (the first of the source's formats the " +
    "target accepts). Prints \"successfully imported '<volid>'\" on success.",
  positionals: [2, 2],
  options: {
    "with-snapshots": { type: "boolean", description: "carry the snapshots (qcow2/vmdk)" },
    "allow-rename": {
      type: "boolean",
      description: "if the target exists, use the next free disk name",
    },
    bwlimit: { type: "string", arg: "KiB/s", description: "limit the transfer rate" },
  },
  async run(args) {
    const [source, target] = args.positionals;
    const used = await runMigrate(await storagesFromArgs(args), {
      source,
      target,
      withSnapshots: args.values["with-snapshots"] === true,
      allowRename: args.values["allow-rename"] === true,
      bwlimit: intOpt(args, "bwlimit") || undefined,
      progress: (line) => console.error(line),
      onFormat: (format) => console.error(`migrating '${source}' as ${format}`),
    });
    console.log(`successfully imported '${used}'`);
  },
};
