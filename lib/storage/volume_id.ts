/**
 * Volume ids (`storeid:volname`) and the checks that keep a volume name inside its storage.
 *
 * @module
 */

/** A volume id split at its first colon. */
export interface VolumeId {
  storeid: string;
  volname: string;
}

/**
 * Splits `storeid:volname`. Throws `TypeError` naming the id when either part is missing or
 * the name is unsafe (see {@link assertSafeVolname}).
 *
 * @example
 * ```ts
 * import { parseVolumeId } from "./volume_id.ts";
 * const { storeid, volname } = parseVolumeId("local:100/vm-100-disk-0.raw");
 * console.assert(storeid === "local" && volname === "100/vm-100-disk-0.raw");
 * ```
 */
export function parseVolumeId(volid: string): VolumeId {
  const i = volid.indexOf(":");
  if (i <= 0 || i === volid.length - 1) {
    throw new TypeError(`invalid volume id '${printable(volid)}': expected <storage>:<volname>`);
  }
  const storeid = volid.slice(0, i);
  const volname = volid.slice(i + 1);
  if (!/^[a-z][a-z0-9_.-]*[a-z0-9]$/i.test(storeid)) {
    throw new TypeError(`invalid volume id '${printable(volid)}': bad storage id '${storeid}'`);
  }
  assertSafeVolname(volname);
  return { storeid, volname };
}

/**
 * Refuses a volume name that could leave its storage or break a config line: empty, absolute,
 * with a `..` or `.` component, an empty component, NUL, or a control character (newline).
 *
 * @example
 * ```ts
 * import { assertSafeVolname } from "./volume_id.ts";
 * let refused = false;
 * try { assertSafeVolname("../etc/passwd"); } catch { refused = true; }
 * console.assert(refused);
 * ```
 */
export function assertSafeVolname(volname: string): void {
  const why = unsafeReason(volname);
  if (why) throw new TypeError(`invalid volume name '${printable(volname)}': ${why}`);
}

function unsafeReason(volname: string): string | undefined {
  if (volname.length === 0) return "empty";
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x1f\x7f]/.test(volname)) return "contains a control character (NUL, newline)";
  if (volname.startsWith("/")) return "absolute paths are not allowed";
  const parts = volname.split("/");
  if (parts.some((p) => p === "..")) return "'..' is not allowed";
  if (parts.some((p) => p === "." || p === "")) return "empty or '.' path component";
  return undefined;
}

/** A string with control characters escaped, safe for a one-line message. */
export function printable(s: string): string {
  return s.replace(
    // deno-lint-ignore no-control-regex
    /[\x00-\x1f\x7f]/g,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
}
