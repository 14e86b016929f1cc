/**
 * volt: the command line. Picks the command, parses its flags, runs it, and turns any error
 * into one line on stderr (a stack trace only with `VOLT_DEBUG=1`).
 *
 * @module
 */

import { commandHelp, parseCommandLine } from "./lib/cli/command.ts";
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

/**
 * Moves global options given before the command (`volt --config F status`) behind it, where
 * the command's parser reads them.
 */
function hoistGlobalOptions(argv: string[]): string[] {
  const leading: string[] = [];
  let i = 0;
  while (i < argv.length && /^--(config|plugin)(=|$)/.test(argv[i])) {
    const takesNext = !argv[i].includes("=");
    leading.push(...argv.slice(i, i + (takesNext ? 2 : 1)));
    i += takesNext ? 2 : 1;
  }
  if (leading.length === 0) return argv;
  const rest = argv.slice(i);
  const words = rest.length > 1 && !rest[1].startsWith("-") &&
      COMMANDS.some((c) => c.name === `${rest[0]} ${rest[1]}`)
    ? 2
    : 1;
  return [...rest.slice(0, words), ...leading, ...rest.slice(words)];
}

/** Runs volt with the given arguments and resolves to the process exit code. */
export async function main(rawArgv: string[]): Promise<number> {
  const argv = hoistGlobalOptions(rawArgv);
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
    const args = parseCommandLine(spec, found.rest);
    if (args.values.help) {
      console.log(commandHelp(spec));
      return 0;
    }
    return (await spec.run(args)) ?? 0;
  } catch (err) {
    if (Deno.env.get("VOLT_DEBUG") === "1") console.error(err);
    console.error(`volt: ${errorLine(err)}`);
    return err instanceof VoltError ? err.exitCode : 1;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
