/**
 * The built-in plugins, imported statically so a bundled or compiled volt carries them. The
 * loader validates each exactly as it validates a third-party module.
 *
 * @module
 */

import * as backupDir from "./backup_dir.ts";
import * as dir from "./dir.ts";

/** Built-in plugin modules with the file each came from. */
export const BUILTIN_PLUGINS: { source: string; module: Record<string, unknown> }[] = [
  { source: "plugins/dir.ts", module: dir },
  { source: "plugins/backup_dir.ts", module: backupDir },
];
