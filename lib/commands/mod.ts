/**
 * The table of CLI commands, in the order `volt --help` lists them. Each command's module is
 * loaded only when that command runs (a literal `import()`, so bundling still finds it): a
 * command does not pay for loading the others (about 40 ms per start when all were loaded).
 * Adding a command: write `lib/commands/<name>.ts` exporting a `CommandSpec`, list it here.
 *
 * @module
 */

import type { CommandSpec } from "../cli/command.ts";

/** A command's name (the words after `volt`) and how to load its spec. */
export interface CommandEntry {
  name: string;
  load(): Promise<CommandSpec>;
}

/** Every command volt knows. */
export const COMMANDS: CommandEntry[] = [
  { name: "status", load: async () => (await import("./status.ts")).statusCommand },
  { name: "list", load: async () => (await import("./list.ts")).listCommand },
  { name: "alloc", load: async () => (await import("./alloc.ts")).allocCommand },
  { name: "free", load: async () => (await import("./free.ts")).freeCommand },
  { name: "path", load: async () => (await import("./path.ts")).pathCommand },
  { name: "info", load: async () => (await import("./info.ts")).infoCommand },
  { name: "snapshots", load: async () => (await import("./snapshots.ts")).snapshotsCommand },
  { name: "snapshot", load: async () => (await import("./snapshot.ts")).snapshotCommand },
  { name: "rollback", load: async () => (await import("./rollback.ts")).rollbackCommand },
  { name: "delsnapshot", load: async () => (await import("./delsnapshot.ts")).delSnapshotCommand },
  { name: "check", load: async () => (await import("./check.ts")).checkCommand },
  { name: "export", load: async () => (await import("./export.ts")).exportCommand },
  { name: "import", load: async () => (await import("./import.ts")).importCommand },
  { name: "export-formats", load: async () => (await import("./formats.ts")).exportFormatsCommand },
  { name: "import-formats", load: async () => (await import("./formats.ts")).importFormatsCommand },
  { name: "migrate", load: async () => (await import("./migrate.ts")).migrateCommand },
  { name: "backup", load: async () => (await import("./backup.ts")).backupCommand },
  { name: "restore", load: async () => (await import("./restore.ts")).restoreCommand },
  { name: "verify", load: async () => (await import("./verify.ts")).verifyCommand },
  { name: "prune", load: async () => (await import("./prune.ts")).pruneCommand },
  { name: "notes", load: async () => (await import("./notes.ts")).notesCommand },
  { name: "protect", load: async () => (await import("./protect.ts")).protectCommand },
  { name: "plugins", load: async () => (await import("./plugins.ts")).pluginsCommand },
  { name: "config show", load: async () => (await import("./config.ts")).configShowCommand },
  { name: "add", load: async () => (await import("./config.ts")).addCommand },
  { name: "set", load: async () => (await import("./config.ts")).setCommand },
  { name: "remove", load: async () => (await import("./config.ts")).removeCommand },
  { name: "nbd map", load: async () => (await import("./nbd.ts")).nbdMapCommand },
  { name: "nbd copy", load: async () => (await import("./nbd.ts")).nbdCopyCommand },
];
