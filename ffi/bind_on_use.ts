/**
 * Binding a library's symbols when they are used. `Deno.dlopen` binds every symbol it is given
 * (~70 µs each in one call here, measured; a call for one symbol alone costs 150 to 480 µs in
 * a running program), and each Worker binds its own. So the symbols a thread surely needs are
 * bound in one call when it opens the library (the copy engine's reader: ~30 of the ~65
 * libnbd and libc functions volt declares, on the path every copy waits for), and any other
 * one alone on its first use: the main thread's closing `close()` binds `close`, not the ~30
 * others it would have bound with it.
 *
 * @module
 */

/**
 * Opens `path` with the symbols named in `eager` bound now; every other symbol of `table` is
 * a getter that binds that symbol alone on its first use and then is a plain property.
 * Throws what `Deno.dlopen` throws for a missing library or a missing eager symbol; a missing
 * lazy symbol throws `missing(name)` on its first use (default: an Error naming it).
 *
 * @example
 * ```ts
 * import { bindOnUse } from "./bind_on_use.ts";
 * const libc = bindOnUse("libc.so.6", {
 *   getpid: { parameters: [], result: "i32" },
 *   getppid: { parameters: [], result: "i32" },
 * }, ["getpid"]);
 * console.assert(libc.getpid() === Deno.pid && libc.getppid() === Deno.ppid);
 * ```
 */
export function bindOnUse<S extends Deno.ForeignLibraryInterface>(
  path: string,
  table: S,
  eager: readonly (keyof S & string)[],
  missing: (name: string) => Error = (name) => new Error(`${path} has no function ${name}`),
): Deno.DynamicLibrary<S>["symbols"] {
  const now = new Set<string>(eager);
  const first = Object.fromEntries(Object.entries(table).filter(([name]) => now.has(name)));
  const symbols = { ...Deno.dlopen(path, first).symbols } as Record<string, unknown>;
  for (const name of Object.keys(table)) {
    if (now.has(name)) continue;
    Object.defineProperty(symbols, name, {
      configurable: true,
      enumerable: true,
      get() {
        let fn: unknown;
        try {
          fn = Deno.dlopen(path, { [name]: table[name] }).symbols[name];
        } catch {
          throw missing(name);
        }
        Object.defineProperty(symbols, name, { value: fn, enumerable: true });
        return fn;
      },
    });
  }
  return symbols as Deno.DynamicLibrary<S>["symbols"];
}
