/**
 * The shape of a CLI command and the parsing shared by all of them.
 *
 * Each command lives in `lib/commands/<name>.ts` and exports a {@link CommandSpec} whose `run`
 * turns parsed flags into a call of the engine's `runX(options)`. `main.ts` only picks the spec
 * and calls {@link parseCommandLine}.
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { FlagError, type FlagSpec, parseFlags } from "./flags.ts";

/** One option of a command: how it parses ({@link FlagSpec}), and how help shows it. */
export interface OptionSpec extends FlagSpec {
  /** Placeholder shown in help, e.g. `FORMAT`. */
  arg?: string;
  description: string;
  default?: string | boolean;
}

/** Flags and positionals after parsing. */
export interface ParsedArgs {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

/** A CLI command: its help text, its flags, and what it does. */
export interface CommandSpec {
  /** Words after `volt`, e.g. `alloc` or `nbd map`. */
  name: string;
  summary: string;
  /** Positional part of the usage line, e.g. `<storage> <vmid> <filename|auto> <size>`. */
  args: string;
  /** Longer explanation printed by `--help`. */
  details?: string;
  options?: Record<string, OptionSpec>;
  /** Minimum and maximum number of positionals. */
  positionals: [number, number];
  /** Does the work; resolves to the exit code (0 when omitted). */
  run(args: ParsedArgs): Promise<number | void>;
}

/** Options every command accepts. */
export const GLOBAL_OPTIONS: Record<string, OptionSpec> = {
  config: {
    type: "string",
    arg: "FILE",
    description: "storage configuration (default: $VOLT_CONFIG, /etc/volt/storage.cfg, built-in)",
  },
  plugin: {
    type: "string",
    multiple: true,
    arg: "FILE",
    description: "load a storage plugin module from FILE (repeatable)",
  },
  help: { type: "boolean", short: "h", description: "show this help" },
};

/** The `--output-format` option for commands that print tables. */
export const OUTPUT_FORMAT_OPTION: Record<string, OptionSpec> = {
  "output-format": {
    type: "string",
    arg: "text|json",
    description: "print a table (text, default) or JSON",
    default: "text",
  },
};

/**
 * Parses `argv` (the words after the command name) against a spec. Throws {@link UsageError}
 * with a one-line message for unknown options, missing values or a wrong positional count.
 */
export function parseCommandLine(spec: CommandSpec, argv: string[]): ParsedArgs {
  const options = { ...GLOBAL_OPTIONS, ...spec.options };
  let parsed;
  try {
    parsed = parseFlags(argv, options);
  } catch (err) {
    if (!(err instanceof FlagError)) throw err;
    const hint = err.message.startsWith("unknown option") ? `: see 'volt ${spec.name} --help'` : "";
    throw new UsageError(`volt ${spec.name}: ${err.message}${hint}`);
  }
  const values = parsed.values as ParsedArgs["values"];
  for (const [name, o] of Object.entries(options)) {
    if (values[name] === undefined && o.default !== undefined) values[name] = o.default;
  }
  if (values.help) return { values, positionals: parsed.positionals };
  const [min, max] = spec.positionals;
  const n = parsed.positionals.length;
  if (n < min) {
    throw new UsageError(
      `volt ${spec.name}: missing argument (usage: volt ${spec.name} ${spec.args})`,
    );
  }
  if (n > max) {
    throw new UsageError(
      `volt ${spec.name}: unexpected argument '${
        parsed.positionals[max]
      }' (usage: volt ${spec.name} ${spec.args})`,
    );
  }
  return { values, positionals: parsed.positionals };
}

/** The `--help` text of a command. */
export function commandHelp(spec: CommandSpec): string {
  // The command's own options first; a command may give a global name its own meaning.
  const options = { ...spec.options };
  for (const [name, o] of Object.entries(GLOBAL_OPTIONS)) if (!(name in options)) options[name] = o;
  const rows = Object.entries(options).map(([name, o]) => {
    const flag = `${o.short ? `-${o.short}, ` : "    "}--${name}${o.arg ? ` ${o.arg}` : ""}`;
    return [
      flag,
      o.description + (o.multiple && !o.description.includes("repeat") ? " (repeatable)" : ""),
    ];
  });
  const width = Math.max(...rows.map(([f]) => f.length));
  const lines = [
    `usage: volt ${spec.name} ${spec.args}`.trimEnd(),
    "",
    spec.summary,
  ];
  if (spec.details) lines.push("", spec.details.trim());
  lines.push("", "options:", ...rows.map(([f, d]) => `  ${f.padEnd(width)}  ${d}`));
  return lines.join("\n");
}

/** A string option's value, or undefined. */
export function stringOpt(args: ParsedArgs, name: string): string | undefined {
  const v = args.values[name];
  return typeof v === "string" ? v : undefined;
}

/** A repeatable string option's values (empty when absent). */
export function listOpt(args: ParsedArgs, name: string): string[] {
  const v = args.values[name];
  if (Array.isArray(v)) return v;
  return typeof v === "string" ? [v] : [];
}

/** A non-negative integer option, with a usage error naming it when malformed. */
export function intOpt(args: ParsedArgs, name: string): number | undefined {
  const v = stringOpt(args, name);
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new UsageError(`--${name}: '${v}' is not a non-negative integer`);
  return Number(v);
}

/** `--output-format`, validated. */
export function outputFormat(args: ParsedArgs): "text" | "json" {
  const v = stringOpt(args, "output-format") ?? "text";
  if (v !== "text" && v !== "json") {
    throw new UsageError(`--output-format: '${v}' is not one of text, json`);
  }
  return v;
}
