/**
 * The table of CLI commands, in the order `volt --help` lists them.
 * Adding a command: write `lib/commands/<name>.ts` exporting a `CommandSpec`, list it here.
 *
 * @module
 */

import type { CommandSpec } from "../cli/command.ts";
import { allocCommand } from "./alloc.ts";
import { backupCommand } from "./backup.ts";
import { checkCommand } from "./check.ts";
import { addCommand, configShowCommand, removeCommand, setCommand } from "./config.ts";
import { delSnapshotCommand } from "./delsnapshot.ts";
import { exportCommand } from "./export.ts";
import { exportFormatsCommand, importFormatsCommand } from "./formats.ts";
import { freeCommand } from "./free.ts";
import { importCommand } from "./import.ts";
import { infoCommand } from "./info.ts";
import { listCommand } from "./list.ts";
import { migrateCommand } from "./migrate.ts";
import { nbdCopyCommand, nbdMapCommand } from "./nbd.ts";
import { pathCommand } from "./path.ts";
import { pluginsCommand } from "./plugins.ts";
import { restoreCommand } from "./restore.ts";
import { rollbackCommand } from "./rollback.ts";
import { snapshotCommand } from "./snapshot.ts";
import { snapshotsCommand } from "./snapshots.ts";
import { statusCommand } from "./status.ts";
import { verifyCommand } from "./verify.ts";

/** Every command volt knows. */
export const COMMANDS: CommandSpec[] = [
  statusCommand,
  listCommand,
  allocCommand,
  freeCommand,
  pathCommand,
  infoCommand,
  snapshotsCommand,
  snapshotCommand,
  rollbackCommand,
  delSnapshotCommand,
  checkCommand,
  exportCommand,
  importCommand,
  exportFormatsCommand,
  importFormatsCommand,
  migrateCommand,
  backupCommand,
  restoreCommand,
  verifyCommand,
  pluginsCommand,
  configShowCommand,
  addCommand,
  setCommand,
  removeCommand,
  nbdMapCommand,
  nbdCopyCommand,
];
