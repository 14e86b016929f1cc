/**
 * Command-line flag parsing: long options (`--name value`, `--name=value`, booleans
 * `--name`), one-letter short booleans (`-h`), repeatable options, positionals, and `--`
 * ending the options. It accepts what `node:util`'s `parseArgs` accepts in strict mode with
 * positionals allowed, and gives the same values (tests/cli_flags_test.ts compares the two);
 * volt has its own because loading `node:util` cost ~4.5 ms of every start (measured), and
 * every `volt` process, a 1 MiB incremental copy included, pays its start-up.
 *
 * @module
 */

/** How one option is parsed. */
export interface FlagSpec {
  type: "string" | "boolean";
  /** Collect every occurrence, in order (else the last one wins). */
  multiple?: boolean;
  /** A one-letter alias (`h` for `-h`). */
  short?: string;
}

/** Parsed flags: values by option name (absent options are not set) and the positionals. */
export interface ParsedFlags {
  values: Record<string, string | boolean | string[] | boolean[] | undefined>;
  positionals: string[];
}

/** A malformed command line; the message names the option and what is wrong. */
export class FlagError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FlagError";
  }
}

/**
 * Parses `argv` against `specs`. Throws {@link FlagError} for an unknown option, a string
 * option without a value (a following word that starts with `-` is not taken as one: give
 * it as `--name=-value`), or a value given to a boolean.
 *
 * @example
 * ```ts
 * import { parseFlags } from "./flags.ts";
 * const { values, positionals } = parseFlags(["a", "--depth", "8", "--sync", "-"], {
 *   depth: { type: "string" },
 *   sync: { type: "boolean" },
 * });
 * console.assert(values.depth === "8" && values.sync === true);
 * console.assert(positionals.join(" ") === "a -");
 * ```
 */
export function parseFlags(argv: string[], specs: Record<string, FlagSpec>): ParsedFlags {
  const shorts = new Map<string, string>();
  for (const [name, spec] of Object.entries(specs)) if (spec.short) shorts.set(spec.short, name);
  const values: ParsedFlags["values"] = {};
  const positionals: string[] = [];
  const store = (name: string, value: string | boolean) => {
    if (!specs[name].multiple) {
      values[name] = value;
      return;
    }
    const list = (values[name] ??= []) as (string | boolean)[];
    list.push(value);
  };

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      positionals.push(arg);
      continue;
    }
    let name: string;
    let inline: string | undefined;
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      inline = eq < 0 ? undefined : arg.slice(eq + 1);
      if (!Object.hasOwn(specs, name)) throw new FlagError(`unknown option '--${name}'`);
    } else {
      // Short options: each letter a boolean (`-h`), or one string option taking the rest
      // of the word or the next word (`-oFILE`, `-o FILE`).
      for (let j = 1; j < arg.length; j++) {
        const letter = arg[j];
        const long = shorts.get(letter);
        if (long === undefined) throw new FlagError(`unknown option '-${letter}'`);
        if (specs[long].type === "boolean") {
          store(long, true);
          continue;
        }
        const rest = arg.slice(j + 1);
        if (rest !== "") store(long, rest);
        else i = takeValue(argv, i, `-${letter}`, (v) => store(long, v));
        break;
      }
      continue;
    }
    const spec = specs[name];
    if (spec.type === "boolean") {
      if (inline !== undefined) throw new FlagError(`--${name} takes no value`);
      store(name, true);
    } else if (inline !== undefined) {
      store(name, inline);
    } else {
      i = takeValue(argv, i, `--${name}`, (v) => store(name, v));
    }
  }
  return { values, positionals };
}

/** Takes the word after `argv[i]` as the value of `flag`; returns the index consumed. */
function takeValue(argv: string[], i: number, flag: string, store: (v: string) => void): number {
  const value = argv[i + 1];
  if (value === undefined) throw new FlagError(`${flag} needs a value`);
  if (value.startsWith("-") && value !== "-") {
    throw new FlagError(`${flag} needs a value; one starting with '-' is given as ${flag}=VALUE`);
  }
  store(value);
  return i + 1;
}
