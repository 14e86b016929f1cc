/**
 * Crash points for tests: `faultPoint("name")` kills this process with SIGKILL when the
 * environment variable `VOLT_FAULT_POINT` equals `name`, exactly as a power cut or `kill -9`
 * at that moment would. Tests use it to prove an operation is crash-safe at every step; in
 * normal use the variable is unset and the call costs one environment lookup.
 *
 * @module
 */

let wanted: string | undefined | null = null;

/**
 * Dies here (SIGKILL, no cleanup, no `finally`) if `VOLT_FAULT_POINT` names this point.
 *
 * @example
 * ```ts
 * import { faultPoint } from "./fault_point.ts";
 * faultPoint("after-copy"); // returns: VOLT_FAULT_POINT is not "after-copy"
 * ```
 */
export function faultPoint(name: string): void {
  if (wanted === null) {
    try {
      wanted = Deno.env.get("VOLT_FAULT_POINT");
    } catch {
      wanted = undefined; // No --allow-env: never a fault.
    }
  }
  if (wanted === name) Deno.kill(Deno.pid, "SIGKILL");
}
