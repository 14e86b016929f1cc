/**
 * The example backup provider (`plugins/examples/zstd_backup.ts`), loaded by path with
 * `--plugin` like any third-party one, passes the conformance suite (`conformance.ts`).
 */

import { conformanceSuite } from "./conformance.ts";

conformanceSuite({
  name: "zstd-backup (example)",
  pluginPath: new URL("../../plugins/examples/zstd_backup.ts", import.meta.url).pathname,
  storageSection: "zstd-backup: zbk\n\tpath {dir}\n",
});
