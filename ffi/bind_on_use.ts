/**
 * Binding a library's symbols in two steps: the ones a thread needs at once when it opens the
 * library, the rest on first use of any of them. `Deno.dlopen` binds every symbol it is given
 * (~70 µs each here, measured), and each Worker binds its own: the copy engine's reader binds
 * ~30 of the ~65 libnbd and libc functions volt declares, on the path every copy waits for.
 *
 * @module
 */

/**
 * Opens `path` with the symbols named in `eager` bound now; every other symbol of `table` is
 * a getter that binds all of them on its first use and then is a plain property. Throws what
 * `Deno.dlopen` throws (a missing library, a missing eager symbol).
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
): Deno.DynamicLibrary<S>["symbols"] {
  const now = new Set<string>(eager);
  const pick = (wanted: (name: string) => boolean) =>
    Object.fromEntries(Object.entries(table).filter(([name]) => wanted(name)));
  const symbols = { ...Deno.dlopen(path, pick((name) => now.has(name))).symbols } as Record<
    string,
    unknown
  >;
  const later = Object.keys(table).filter((name) => !now.has(name));
  let bound = false;
  const bindLater = () => {
    if (bound) return;
    bound = true;
    const rest = Deno.dlopen(path, pick((name) => !now.has(name))).symbols as Record<
      string,
      unknown
    >;
    for (const name of later) {
      Object.defineProperty(symbols, name, { value: rest[name], enumerable: true });
    }
  };
  for (const name of later) {
    Object.defineProperty(symbols, name, {
      configurable: true,
      enumerable: true,
      get() {
        bindLater();
        return symbols[name];
      },
    });
  }
  return symbols as Deno.DynamicLibrary<S>["symbols"];
}
