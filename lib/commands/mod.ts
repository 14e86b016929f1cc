/**
 * The table of CLI commands, in the order `volt --help` lists them.
 * Adding a command: write `lib/commands/<name>.ts` exporting a `CommandSpec`, list it here.
 *
 * @module
 */

import type { CommandSpec } from "../cli/command.ts";

/** Every command volt knows. */
export const COMMANDS: CommandSpec[] = [];
