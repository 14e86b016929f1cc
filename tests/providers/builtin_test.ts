/**
 * The built-in directory backup storage (`backup-dir`, `plugins/backup_dir.ts`) passes the
 * backup provider conformance suite (`conformance.ts`).
 */

import { conformanceSuite } from "./conformance.ts";

conformanceSuite({ name: "backup-dir", storageSection: "backup-dir: bk\n\tpath {dir}\n" });
