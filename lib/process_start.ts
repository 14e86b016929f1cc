/**
 * Which process left something behind, and is it still running? A pid alone is not enough:
 * pids are handed out again. The pid together with the process's start time (clock ticks
 * since boot, field 22 of `/proc/<pid>/stat`) names one process for the machine's uptime.
 *
 * @module
 */

/**
 * The start time of process `pid` (or this one) in clock ticks since boot, or undefined when
 * there is no such process.
 *
 * @example
 * ```ts
 * import { processStart } from "./process_start.ts";
 * console.assert(processStart("self")! > 0);
 * ```
 */
export function processStart(pid: number | "self"): number | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // "pid (comm) state ppid …": comm may hold spaces and parentheses; the fields resume
    // after the last ')'. starttime is field 22, the 20th after it.
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]);
  } catch {
    return undefined;
  }
}

/**
 * Whether the process that had `pid` and `start` ({@link processStart}) still runs. A start of
 * 0 (its owner could not read `/proc`) counts as running while any process has that pid: when
 * in doubt, something is kept rather than taken from a live process.
 *
 * @example
 * ```ts
 * import { processStart, stillRunning } from "./process_start.ts";
 * console.assert(stillRunning(Deno.pid, processStart("self")!));
 * ```
 */
export function stillRunning(pid: number, start: number): boolean {
  const now = processStart(pid);
  return now !== undefined && (start === 0 || now === start);
}
