/**
 * Where an NBD export is ({@link NbdSource}) and connecting a handle to it.
 *
 * @module
 */

import { NbdHandle } from "../../ffi/nbd_handle.ts";
import { NbdError } from "../../ffi/libnbd.ts";
import { UsageError, VoltError } from "../errors.ts";

/**
 * An NBD export: a libnbd URI (`nbd+unix:///export?socket=/run/x.sock`, `nbd://host/export`)
 * or a unix socket path with an optional export name.
 */
export type NbdSource = { uri: string } | { socket: string; export?: string };

/** Options for {@link connectNbd}. */
export interface ConnectOptions {
  /** Meta contexts to negotiate (`base:allocation`, `qemu:dirty-bitmap:NAME`). */
  metaContexts?: string[];
  /** Name shown in libnbd debug output. */
  name?: string;
}

/**
 * Parses a command-line NBD address: a URI (`nbd:`, `nbd+unix:`, `nbds:`…) or a unix socket
 * path (`/run/qemu.sock`, optionally `/run/qemu.sock:exportname`).
 *
 * @example
 * ```ts
 * import { parseNbdSource } from "./source.ts";
 * const s = parseNbdSource("nbd+unix:///drive0?socket=/tmp/s");
 * console.assert("uri" in s && s.uri === "nbd+unix:///drive0?socket=/tmp/s");
 * ```
 */
export function parseNbdSource(text: string): NbdSource {
  if (/^nbds?(\+(unix|vsock|tcp))?:\/\//.test(text)) return { uri: text };
  if (text.includes("://")) {
    throw new UsageError(`'${text}' is not an NBD URI: use nbd+unix:///EXPORT?socket=PATH`);
  }
  if (text === "") throw new UsageError("empty NBD address: give a URI or a socket path");
  const colon = text.lastIndexOf(":");
  if (colon > 0) return { socket: text.slice(0, colon), export: text.slice(colon + 1) };
  return { socket: text };
}

/**
 * The URI form of a source, for messages and for tools like `nbdinfo`.
 *
 * @example
 * ```ts
 * import { sourceUri } from "./source.ts";
 * console.assert(sourceUri({ socket: "/tmp/s", export: "d0" }) === "nbd+unix:///d0?socket=/tmp/s");
 * ```
 */
export function sourceUri(source: NbdSource): string {
  if ("uri" in source) return source.uri;
  return `nbd+unix:///${encodeURIComponent(source.export ?? "")}?socket=${source.socket}`;
}

/**
 * Creates a handle, asks for the meta contexts and connects it. Reads are not pre-zeroed
 * (`nbd_set_pread_initialize(false)`): every read either fills its buffer or fails.
 * A refused connection is a {@link VoltError} naming the address, with the {@link NbdError}
 * as cause.
 *
 * @example
 * ```ts ignore
 * import { connectNbd } from "./source.ts";
 * using h = connectNbd({ socket: "/tmp/nbd.sock" }, { metaContexts: ["base:allocation"] });
 * console.log(h.size());
 * ```
 */
export function connectNbd(source: NbdSource, options: ConnectOptions = {}): NbdHandle {
  const h = new NbdHandle(options.name ?? "volt");
  try {
    h.setPreadInitialize(false);
    for (const ctx of options.metaContexts ?? []) h.addMetaContext(ctx);
    if ("uri" in source) {
      h.connectUri(source.uri);
    } else {
      h.setExportName(source.export ?? "");
      h.connectUnix(source.socket);
    }
    return h;
  } catch (err) {
    h.close();
    if (err instanceof NbdError) {
      throw new VoltError(`cannot connect to ${sourceUri(source)}: ${err.message}`, { cause: err });
    }
    throw err;
  }
}
