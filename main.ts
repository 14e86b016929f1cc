/**
 * volt: the command line. Picks the command, parses its flags, runs it, and turns any error
 * into one line on stderr (a stack trace only with `VOLT_DEBUG=1`).
 *
 * @module
 */

import { commandHelp, type CommandSpec, parseCommandLine } from "./lib/cli/command.ts";
import { type CommandEntry, COMMANDS } from "./lib/commands/mod.ts";
import { errorLine, UsageError, VoltError } from "./lib/errors.ts";

const VERSION = "0.1.0";

async function mainHelp(): Promise<string> {
  const specs = await Promise.all(COMMANDS.map((c) => c.load()));
  const width = Math.max(...specs.map((c) => c.name.length));
  return [
    "usage: volt <command> [options]",
    "",
    "volt: volume streams, snapshot chains and NBD backups for QEMU/KVM hosts.",
    "",
    "commands:",
    ...specs.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    "Run 'volt <command> --help' for a command's options.",
  ].join("\n");
}

/** Finds the command named by the first one or two words of argv. */
function findCommand(argv: string[]): { entry: CommandEntry; rest: string[] } | undefined {
  for (const words of [2, 1]) {
    const name = argv.slice(0, words).join(" ");
    const entry = COMMANDS.find((c) => c.name === name);
    if (entry) return { entry, rest: argv.slice(words) };
  }
  return undefined;
}

/** Splits global options given before the command (`volt --config F status`) from the rest. */
function leadingGlobalOptions(argv: string[]): { leading: string[]; rest: string[] } {
  let i = 0;
  while (i < argv.length && /^--(config|plugin)(=|$)/.test(argv[i])) {
    i += argv[i].includes("=") ? 1 : 2;
  }
  return { leading: argv.slice(0, i), rest: argv.slice(i) };
}

/**
 * Leading global options for `spec`: a command that gives `--config` its own meaning (`volt
 * backup`: the guest config) takes the storage configuration as `--storage-config`.
 */
function globalOptionsFor(spec: CommandSpec, leading: string[]): string[] {
  if (!spec.options?.config || !spec.options["storage-config"]) return leading;
  return leading.map((a) => a.replace(/^--config(?==|$)/, "--storage-config"));
}

/** Runs volt with the given arguments and resolves to the process exit code. */
export async function main(rawArgv: string[]): Promise<number> {
  const { leading, rest: argv } = leadingGlobalOptions(rawArgv);
  if (argv.length === 0 || argv[0] === "--help" || argv[0] === "-h" || argv[0] === "help") {
    console.log(await mainHelp());
    return argv.length === 0 ? 2 : 0;
  }
  if (argv[0] === "--version") {
    console.log(`volt ${VERSION}`);
    return 0;
  }
  try {
    const found = findCommand(argv);
    if (!found) {
      const group = COMMANDS.filter((c) => c.name.startsWith(`${argv[0]} `));
      if (group.length > 0) {
        throw new UsageError(
          `volt ${argv[0]}: expected one of ${group.map((c) => c.name.split(" ")[1]).join(", ")}`,
        );
      }
      throw new UsageError(`unknown command '${argv[0]}': see 'volt --help'`);
    }
    const spec = await found.entry.load();
    const args = parseCommandLine(spec, [...found.rest, ...globalOptionsFor(spec, leading)]);
    if (args.values.help) {
      console.log(commandHelp(spec));
      return 0;
    }
    return (await spec.run(args)) ?? 0;
  } catch (err) {
    if (Deno.env.get("VOLT_DEBUG") === "1") console.error(err);
    // Usage errors already name the command ("volt list: …"); others get the program name.
    const line = errorLine(err);
    console.error(/^volt [a-z]/.test(line) ? line : `volt: ${line}`);
    return err instanceof VoltError ? err.exitCode : 1;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
