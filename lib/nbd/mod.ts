/**
 * NBD for volt: connecting to exports, reading their allocation and dirty-bitmap map, and the
 * copy engine. Re-exports only.
 *
 * @module
 */

export {
  connectNbd,
  type ConnectOptions,
  type NbdSource,
  parseNbdSource,
  sourceUri,
} from "./source.ts";
export {
  BASE_ALLOCATION,
  dirtyBitmapContext,
  type Extent,
  mergeBlockStatus,
  readExtents,
  type ReadExtentsOptions,
} from "./extents.ts";
export { type CopyRange, planRanges, type RangeSelection, splitRequests } from "./plan.ts";
export {
  type BuiltinSink,
  type CallbackSink,
  type CopySink,
  isCallbackSink,
  type NbdSink,
  nbdSink,
  type NullSink,
  nullSink,
  type RawSink,
  rawSink,
} from "./sink.ts";
export {
  CopyCancelledError,
  copyNbd,
  type CopyOptions,
  type CopyProgress,
  type CopyStats,
  DEFAULT_DEPTH,
  DEFAULT_REQUEST_SIZE,
} from "./copy.ts";
export { NbdError } from "../../ffi/libnbd.ts";
