/**
 * `volt nbd map` and `volt nbd copy`: the NBD engine from the command line, also the tools to
 * reach for when a backup misbehaves.
 *
 * @module
 */

import {
  type CommandSpec,
  intOpt,
  OUTPUT_FORMAT_OPTION,
  outputFormat,
  type ParsedArgs,
  stringOpt,
} from "../cli/command.ts";
import { formatTable } from "../cli/table.ts";
import { UsageError, VoltError } from "../errors.ts";
import { CopyCancelledError, copyNbd, type CopyProgress, type CopyStats } from "../nbd/copy.ts";
import { BASE_ALLOCATION, dirtyBitmapContext, type Extent, readExtents } from "../nbd/extents.ts";
import { type CopySink, nbdSink, nullSink, rawSink } from "../nbd/sink.ts";
import { connectNbd, type NbdSource, parseNbdSource, sourceUri } from "../nbd/source.ts";
import { withTermination } from "../signals.ts";
import { formatBytes, parseSize } from "../size.ts";

/** Options of {@link runNbdMap}. */
export interface NbdMapOptions {
  source: NbdSource;
  bitmap?: string;
}

/**
 * Reads the merged map of an export: allocation, zero and (with a bitmap) dirty flags.
 *
 * @example
 * ```ts ignore
 * import { runNbdMap } from "./nbd.ts";
 * const extents = runNbdMap({ source: { socket: "/tmp/s" }, bitmap: "b0" });
 * ```
 */
export function runNbdMap(options: NbdMapOptions): Extent[] {
  const metaContexts = [BASE_ALLOCATION];
  if (options.bitmap !== undefined) metaContexts.push(dirtyBitmapContext(options.bitmap));
  using h = connectNbd(options.source, { metaContexts });
  return [...readExtents(h, { bitmap: options.bitmap })];
}

/** Options of {@link runNbdCopy}. */
export interface NbdCopyOptions {
  source: NbdSource;
  /** A raw file path, an NBD URI, or `null:`. */
  destination: string;
  bitmap?: string;
  depth?: number;
  connections?: number;
  requestSize?: number;
  bwlimitKiB?: number;
  /** fdatasync a raw file before reporting success. */
  sync?: boolean;
  /** The NBD target already reads as zeros. */
  targetIsZero?: boolean;
  /** Print progress lines on stderr. */
  progress?: boolean;
  signal?: AbortSignal;
}

/**
 * Copies an export (or its dirty ranges) to a file, an NBD export or nowhere (`null:`).
 *
 * @example
 * ```ts ignore
 * import { runNbdCopy } from "./nbd.ts";
 * const stats = await runNbdCopy({ source: { socket: "/tmp/s" }, destination: "/tmp/d.raw" });
 * ```
 */
export function runNbdCopy(options: NbdCopyOptions): Promise<CopyStats> {
  const dst = options.destination;
  let sink: CopySink;
  if (dst === "null:") {
    sink = nullSink();
  } else if (dst.includes("://")) {
    const target = parseNbdSource(dst);
    sink = nbdSink(target, { targetIsZero: options.targetIsZero || undefined });
  } else {
    sink = rawSink(dst, { sync: options.sync });
  }
  const tty = Deno.stderr.isTerminal();
  const encoder = new TextEncoder();
  const onProgress = options.progress
    ? (p: CopyProgress) => {
      const line = progressLine(p);
      Deno.stderr.writeSync(encoder.encode(tty ? `\r${line}\x1b[K` : `${line}\n`));
    }
    : undefined;
  return copyNbd({
    source: options.source,
    bitmap: options.bitmap,
    sink,
    depth: options.depth,
    connections: options.connections,
    requestSize: options.requestSize,
    bwlimitKiB: options.bwlimitKiB,
    onProgress,
    progressInterval: tty ? 250 : 1000,
    signal: options.signal,
  }).finally(() => {
    if (onProgress && tty) Deno.stderr.writeSync(encoder.encode("\n"));
  });
}

/** One progress line: bytes done of total, percentage, rate. */
export function progressLine(p: CopyProgress): string {
  const pct = p.bytesTotal > 0 ? Math.floor((100 * p.bytesDone) / p.bytesTotal) : 0;
  return `copied ${formatBytes(p.bytesDone)} of ${formatBytes(p.bytesTotal)} (${pct}%), ` +
    `read ${formatBytes(p.bytesRead)}, ${formatBytes(p.rate)}/s`;
}

/** The summary printed after a copy. */
export function copySummary(s: CopyStats): string {
  const rate = s.seconds > 0 ? s.bytesRead / s.seconds : 0;
  return `read ${formatBytes(s.bytesRead)}, wrote ${formatBytes(s.bytesWritten)}, ` +
    `zeroed ${formatBytes(s.bytesZeroed)}, zero bytes skipped ` +
    `${formatBytes(s.bytesSkipped)}, ${s.seconds.toFixed(2)} s, ${formatBytes(rate)}/s`;
}

function describe(e: Extent): string {
  const kind = [e.allocated ? "" : "hole", e.zero ? "zero" : ""].filter(Boolean).join(",");
  return kind || "data";
}

function source(args: ParsedArgs): NbdSource {
  return parseNbdSource(args.positionals[0]);
}

function positiveOpt(args: ParsedArgs, name: string): number | undefined {
  const v = intOpt(args, name);
  if (v === 0) throw new UsageError(`--${name}: must be at least 1`);
  return v;
}

/** `volt nbd map`. */
export const nbdMapCommand: CommandSpec = {
  name: "nbd map",
  summary: "show an NBD export's allocation (and dirty bitmap) map",
  args: "<uri>",
  details: `
<uri> is an NBD URI (nbd+unix:///EXPORT?socket=PATH) or a unix socket path.
Like 'nbdinfo --map', with base:allocation and qemu:dirty-bitmap:NAME merged: each
range says whether it is allocated, reads as zero, and is dirty.`,
  options: {
    bitmap: { type: "string", arg: "NAME", description: "merge the dirty bitmap NAME" },
    ...OUTPUT_FORMAT_OPTION,
  },
  positionals: [1, 1],
  run(args) {
    const format = outputFormat(args);
    const bitmap = stringOpt(args, "bitmap");
    const extents = runNbdMap({ source: source(args), bitmap });
    if (format === "json") {
      console.log(JSON.stringify(extents, null, 2));
    } else {
      const header = ["Offset", "Length", "Type", ...(bitmap !== undefined ? ["Dirty"] : [])];
      const rows = extents.map((e) => [
        e.offset,
        e.length,
        describe(e),
        ...(bitmap !== undefined ? [e.dirty ? "dirty" : "clean"] : []),
      ]);
      console.log(formatTable(header, rows));
    }
    return Promise.resolve(0);
  },
};

/** `volt nbd copy`. */
export const nbdCopyCommand: CommandSpec = {
  name: "nbd copy",
  summary: "copy an NBD export (or its dirty ranges) to a raw file or another export",
  args: "<src-uri> <dst>",
  details: `
<dst> is a raw file (created sparse when missing, resized to the export), a block device,
an NBD URI of a writable export at least as large, or 'null:' to only read.
Without --bitmap everything allocated is copied (holes become holes). With --bitmap only
the dirty ranges are copied, and dirty ranges that now read as zero are zeroed on <dst>:
apply an incremental copy on top of the previous full copy.
A summary (bytes read, written, zero bytes skipped, time, rate) goes to stderr.`,
  options: {
    bitmap: { type: "string", arg: "NAME", description: "copy only what bitmap NAME marks" },
    depth: { type: "string", arg: "N", description: "read requests in flight (default 4)" },
    connections: {
      type: "string",
      arg: "N",
      description: "source connections when the server allows multi-conn (default 1)",
    },
    "request-size": {
      type: "string",
      arg: "SIZE",
      description: "largest read request (default 1M)",
    },
    bwlimit: { type: "string", arg: "KiB/s", description: "limit the read bandwidth" },
    progress: { type: "boolean", description: "print progress on stderr" },
    sync: { type: "boolean", description: "flush a raw file to disk before finishing" },
    "target-is-zero": {
      type: "boolean",
      description: "the NBD target reads as zeros already (default: ask its map)",
    },
    ...OUTPUT_FORMAT_OPTION,
  },
  positionals: [2, 2],
  async run(args) {
    const format = outputFormat(args);
    const requestSizeText = stringOpt(args, "request-size");
    const options: NbdCopyOptions = {
      source: source(args),
      destination: args.positionals[1],
      bitmap: stringOpt(args, "bitmap"),
      depth: positiveOpt(args, "depth"),
      connections: positiveOpt(args, "connections"),
      requestSize: requestSizeText === undefined ? undefined : parseSize(requestSizeText),
      bwlimitKiB: intOpt(args, "bwlimit"),
      sync: args.values.sync === true,
      targetIsZero: args.values["target-is-zero"] === true,
      progress: args.values.progress === true,
    };
    const from = sourceUri(options.source);
    let stats: CopyStats;
    try {
      stats = await withTermination((signal) => runNbdCopy({ ...options, signal }));
    } catch (err) {
      if (err instanceof CopyCancelledError) {
        throw new VoltError(
          `nbd copy interrupted after ${formatBytes(err.bytesDone)} of ` +
            `${formatBytes(err.bytesTotal)}: ${options.destination} is incomplete` +
            " (a file the copy created was removed)",
        );
      }
      throw err;
    }
    console.error(`copied ${from} to ${options.destination}; ${copySummary(stats)}`);
    if (format === "json") console.log(JSON.stringify(stats, null, 2));
    return 0;
  },
};
