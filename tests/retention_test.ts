/**
 * Retention through the CLI with real backups of small qcow2 disks: `volt prune` (dry run,
 * keep options, the storage's prune-backups, protected backups, --vmid/--type, a removal that
 * fails, a third-party provider's storage), `volt protect` with max-protected-backups,
 * `volt notes`, and the backup columns of `volt list`. The period rules themselves are
 * table-tested in `prune_test.ts`.
 */

import assert from "node:assert/strict";
import { createImage, imagesEqual, qemuIo } from "./helpers/nbd_server.ts";
import {
  type BackupEnv,
  backupEnv,
  backupOk,
  listVolumes,
  restoreOk,
  snapshotFile,
} from "./helpers/backup.ts";
import { TempDir, volt, type VoltResult } from "./helpers/volt.ts";

const MiB = 1024 * 1024;
const BACKUP_DIR_PLUGIN = new URL("../plugins/backup_dir.ts", import.meta.url).href;
const EXAMPLE = new URL("../plugins/examples/zstd_backup.ts", import.meta.url).pathname;

/** What `volt prune --output-format json` prints. */
interface PruneJson {
  keep: Record<string, number>;
  keepSource: string;
  decisions: { volid: string; vmid?: number; type: string; mark: string; reason?: string }[];
  removed: string[];
  dryRun: boolean;
}

/** One row of `volt list --output-format json` with the retention fields. */
interface ListedBackup {
  volid: string;
  parent?: string;
  subtype?: string;
  notes?: string;
  protected?: boolean;
  chainLength?: number;
}

function run(e: BackupEnv, args: string[]): Promise<VoltResult> {
  return volt(args, { env: e.env });
}

/** Runs volt and returns stdout, failing the test on a non-zero exit. */
async function ok(e: BackupEnv, args: string[]): Promise<string> {
  const r = await run(e, args);
  assert.equal(r.code, 0, `volt ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** Runs volt expecting exit `code` and exactly one stderr line matching `pattern`. */
async function fails(e: BackupEnv, args: string[], code: number, pattern: RegExp): Promise<void> {
  const r = await run(e, args);
  assert.equal(r.code, code, `volt ${args.join(" ")}: ${r.stdout}${r.stderr}`);
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `volt ${args.join(" ")}: one error line, got:\n${r.stderr}`);
  assert.match(lines[0], pattern);
}

async function prune(e: BackupEnv, args: string[]): Promise<PruneJson> {
  return JSON.parse(await ok(e, ["prune", ...args, "--output-format", "json"])) as PruneJson;
}

async function listed(e: BackupEnv, storage = "backup"): Promise<ListedBackup[]> {
  return (await listVolumes(e, storage)) as ListedBackup[];
}

let writes = 0;

/**
 * Backs guest `vmid` up `count` times, writing something new into its disk before each, and
 * keeps a copy of the disk as each backup saw it. Backups in a row get consecutive times.
 */
async function backUp(
  e: BackupEnv,
  vmid: number,
  count: number,
  extra: string[] = [],
): Promise<{ volids: string[]; disk: string; states: string[] }> {
  const disk = e.tmp.join(`disk-${vmid}.qcow2`);
  const conf = e.tmp.join(`guest-${vmid}.conf`);
  try {
    await Deno.stat(disk);
  } catch {
    await createImage(disk, 8 * MiB);
    await Deno.writeTextFile(conf, `memory: 512\nscsi0: local:${vmid}/vm-${vmid}-disk-0.qcow2\n`);
  }
  const volids: string[] = [];
  const states: string[] = [];
  for (let i = 0; i < count; i++) {
    const n = writes++;
    await qemuIo(disk, [`write -P ${(n % 200) + 1} ${(n % 7) * MiB} 64k`]);
    const state = e.tmp.join(`state-${vmid}-${n}.qcow2`);
    await snapshotFile(disk, state);
    states.push(state);
    volids.push(
      await backupOk(e, vmid, ["--disk", `scsi0=${disk}`, "--config", conf, ...extra]),
    );
  }
  return { volids, disk, states };
}

/** Restores `volid` and compares its disk with `state`. */
async function assertRestores(e: BackupEnv, volid: string, state: string, vmid: number) {
  const restored = await restoreOk(e, volid, vmid);
  assert.ok(await imagesEqual(restored.scsi0, "raw", state, "qcow2"), `${volid} differs`);
}

/** The backup directory of a volume id on the `backup` storage. */
function backupDir(e: BackupEnv, volid: string): string {
  return `${e.backupRoot}/${volid.split(":")[1].replace(/^backup\//, "")}`;
}

Deno.test("prune --dry-run prints the table and removes nothing; --keep-last 2 removes the older incrementals newest first and the rest still restore", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  const { volids, states } = await backUp(e, 100, 4);

  const dry = await run(e, ["prune", "backup", "--keep-last", "2", "--dry-run"]);
  assert.equal(dry.code, 0, dry.stderr);
  const rows = dry.stdout.trimEnd().split("\n").map((l) => l.split(/\s{2,}/));
  assert.deepEqual(rows[0], ["Backup", "Time", "Mark", "Reason"]);
  assert.deepEqual(rows.slice(1).map((r) => [r[0], r[2], r[3]]), [
    [volids[3], "keep", "keep-last"],
    [volids[2], "keep", "keep-last"],
    [volids[1], "remove", undefined],
    [volids[0], "remove", undefined],
  ]);
  for (const r of rows.slice(1)) assert.match(r[1], /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
  assert.match(dry.stderr, /would remove 2 of 4 backups \(retention keep-last=2\)/);
  assert.deepEqual((await listed(e)).map((v) => v.volid), volids, "a dry run removes nothing");
  const json = await prune(e, ["backup", "--keep-last", "2", "--dry-run"]);
  assert.equal(json.dryRun, true);
  assert.deepEqual(json.removed, []);
  assert.deepEqual(json.keep, { "keep-last": 2 });
  assert.equal(json.keepSource, "options");
  assert.deepEqual(json.decisions.map((d) => d.mark), ["keep", "keep", "remove", "remove"]);
  assert.deepEqual((await listed(e)).map((v) => v.volid), volids);

  const r = await run(e, ["prune", "backup", "--keep-last", "2"]);
  assert.equal(r.code, 0, r.stderr);
  const removing = r.stderr.split("\n").filter((l) => l.startsWith("removing backup"));
  assert.deepEqual(removing, [
    `removing backup '${volids[1]}' (1 of 2)`,
    `removing backup '${volids[0]}' (2 of 2)`,
  ], "newest first, one at a time");
  assert.match(r.stderr, /removed 2 of 4 backups/);
  const left = await listed(e);
  assert.deepEqual(left.map((v) => v.volid), volids.slice(2));
  // Every remaining backup's chain is whole and its length adds up.
  for (const v of left) {
    const parent = left.find((p) => p.volid === v.parent);
    assert.ok(v.parent === undefined || parent, `${v.volid}: parent ${v.parent} is gone`);
    assert.equal(v.chainLength, parent ? parent.chainLength! + 1 : 1);
  }
  await assertRestores(e, volids[2], states[2], 202);
  await assertRestores(e, volids[3], states[3], 203);
  for (const v of volids.slice(2)) assert.equal((await run(e, ["verify", v])).code, 0);
});

Deno.test("prune without options uses the storage's prune-backups, without that keeps everything; given options replace the storage's", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  await ok(e, ["set", "backup", "vm-backup-mode=full"]);
  const { volids, states } = await backUp(e, 100, 3);

  const none = await run(e, ["prune", "backup"]);
  assert.equal(none.code, 0, none.stderr);
  assert.match(
    none.stderr,
    /removed 0 of 3 backups \(retention keep-all=1: no keep options given or configured\)/,
  );
  assert.deepEqual((await listed(e)).map((v) => v.volid), volids);
  const dflt = await prune(e, ["backup", "--dry-run"]);
  assert.equal(dflt.keepSource, "default");
  assert.deepEqual(dflt.decisions.map((d) => d.reason), ["keep-all", "keep-all", "keep-all"]);

  await ok(e, ["set", "backup", "prune-backups=keep-last=2"]);
  const planned = await prune(e, ["backup", "--dry-run"]);
  assert.equal(planned.keepSource, "storage");
  assert.deepEqual(planned.keep, { "keep-last": 2 });
  // Options given on the command line replace the storage's, even all-zero ones (keep all).
  const zero = await prune(e, ["backup", "--keep-last", "0", "--dry-run"]);
  assert.deepEqual(zero.decisions.map((d) => d.mark), ["keep", "keep", "keep"]);
  const all = await prune(e, ["backup", "--keep-all", "--dry-run"]);
  assert.deepEqual(all.decisions.map((d) => d.reason), ["keep-all", "keep-all", "keep-all"]);
  const daily = await prune(e, ["backup", "--keep-daily", "1", "--dry-run"]);
  assert.deepEqual(daily.keep, { "keep-daily": 1 });

  const r = await run(e, ["prune", "backup"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stderr,
    /removed 1 of 3 backups \(retention keep-last=2 from the storage's prune-backups\)/,
  );
  assert.deepEqual((await listed(e)).map((v) => v.volid), volids.slice(1));
  await assertRestores(e, volids[1], states[1], 201);
  await assertRestores(e, volids[2], states[2], 202);
});

Deno.test("a protected backup is kept by prune without counting, and cannot be freed until unprotected", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  await ok(e, ["set", "backup", "vm-backup-mode=full"]);
  const { volids } = await backUp(e, 100, 3);
  assert.equal(await ok(e, ["protect", volids[1]]), "0\n");
  const p = await run(e, ["protect", volids[1], "1"]);
  assert.equal(p.code, 0, p.stderr);
  assert.match(p.stderr, /^protected '/);
  assert.equal(await ok(e, ["protect", volids[1]]), "1\n");
  assert.equal(await ok(e, ["protect", volids[0]]), "0\n");

  const result = await prune(e, ["backup", "--keep-last", "1"]);
  assert.deepEqual(result.decisions.map((d) => [d.volid, d.mark, d.reason]), [
    [volids[2], "keep", "keep-last"],
    [volids[1], "protected", undefined],
    [volids[0], "remove", undefined],
  ]);
  assert.deepEqual(result.removed, [volids[0]]);
  const left = await listed(e);
  assert.deepEqual(left.map((v) => [v.volid, v.protected]), [
    [volids[1], true],
    [volids[2], false],
  ]);

  // keep-last 1 again: the protected one still does not use up the slot.
  assert.deepEqual((await prune(e, ["backup", "--keep-last", "1"])).removed, []);
  await fails(e, ["free", volids[1]], 1, /protected/);
  assert.ok((await Deno.stat(backupDir(e, volids[1]))).isDirectory);
  await ok(e, ["protect", volids[1], "0"]);
  assert.equal(await ok(e, ["protect", volids[1]]), "0\n");
  await ok(e, ["free", volids[1]]);
  assert.deepEqual((await listed(e)).map((v) => v.volid), [volids[2]]);
});

Deno.test("volt protect refuses more than max-protected-backups protected backups of a guest", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  const { volids } = await backUp(e, 100, 3);
  const other = (await backUp(e, 101, 1)).volids[0];
  await ok(e, ["set", "backup", "max-protected-backups=1"]);
  await ok(e, ["protect", volids[0], "1"]);
  await ok(e, ["protect", other, "1"]); // another guest has its own limit
  await fails(
    e,
    ["protect", volids[1], "1"],
    1,
    /protected backups per guest is limited to 1 on storage 'backup'/,
  );
  assert.equal(await ok(e, ["protect", volids[1]]), "0\n");
  await ok(e, ["protect", volids[0], "1"]); // already protected: not one more
  await ok(e, ["protect", volids[0], "0"]);
  await ok(e, ["protect", volids[1], "1"]);
  assert.deepEqual((await listed(e)).map((v) => v.protected), [false, true, false, true]);

  await ok(e, ["set", "backup", "max-protected-backups=0"]);
  await fails(e, ["protect", volids[2], "1"], 1, /limited to 0/);
  await ok(e, ["protect", volids[1], "0"]); // removing protection is always allowed
  await ok(e, ["set", "backup", "max-protected-backups=-1"]);
  for (const v of volids) await ok(e, ["protect", v, "1"]);
  assert.deepEqual((await listed(e)).map((v) => v.protected), [true, true, true, true]);
});

Deno.test("volt notes sets, shows and clears notes; volt list shows notes, protection, parent and chain length", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  const { volids } = await backUp(e, 100, 3);
  assert.equal(await ok(e, ["notes", volids[1]]), "");
  const set = await run(e, ["notes", volids[1], "--set", "before the upgrade\nsecond line"]);
  assert.equal(set.code, 0, set.stderr);
  assert.match(set.stderr, /updated the notes/);
  assert.equal(await ok(e, ["notes", volids[1]]), "before the upgrade\nsecond line\n");
  const long = "x".repeat(60);
  await ok(e, ["notes", volids[2], "--set", long]);
  await ok(e, ["protect", volids[2], "1"]);

  const json = await listed(e);
  assert.deepEqual(
    json.map((v) => [v.volid, v.subtype, v.parent, v.chainLength, v.protected, v.notes]),
    [
      [volids[0], "qemu", undefined, 1, false, undefined],
      [volids[1], "qemu", volids[0], 2, false, "before the upgrade\nsecond line"],
      [volids[2], "qemu", volids[1], 3, true, long],
    ],
  );
  const text = (await ok(e, ["list", "backup"])).trimEnd().split("\n");
  assert.deepEqual(text[0].split(/\s+/), [
    "Volid",
    "Format",
    "Type",
    "Size",
    "Used",
    "VMID",
    "Parent",
    "Chain",
    "Protected",
    "Notes",
  ]);
  const row = (volid: string) => text.find((l) => l.startsWith(`${volid} `))!;
  assert.match(row(volids[0]), / 1 +0$/);
  assert.match(row(volids[1]), new RegExp(`${volids[0]} +2 +0 +before the upgrade$`));
  assert.match(row(volids[2]), new RegExp(` 3 +1 +${"x".repeat(39)}…$`));
  // The side files do not disturb verification.
  assert.equal((await run(e, ["verify", volids[1]])).code, 0);
  assert.equal((await run(e, ["verify", volids[2]])).code, 0);

  const clear = await run(e, ["notes", volids[1], "--set", ""]);
  assert.equal(clear.code, 0, clear.stderr);
  assert.match(clear.stderr, /removed the notes/);
  assert.equal(await ok(e, ["notes", volids[1]]), "");
  assert.equal((await listed(e))[1].notes, undefined);
  await assert.rejects(Deno.stat(`${backupDir(e, volids[1])}/notes`), Deno.errors.NotFound);
  await fails(e, ["notes", volids[1], "--set", "y".repeat(33 * 1024)], 1, /limited to 32768/);

  // Image listings keep their columns; a storage without attributes says so.
  const image = /'(local:[^']+)'/.exec(await ok(e, ["alloc", "local", "100", "auto", "1M"]))![1];
  const images = await ok(e, ["list", "local"]);
  assert.doesNotMatch(images, /Notes|Chain|Protected/);
  await fails(
    e,
    ["notes", image],
    1,
    /^volt: storage 'local' \(type dir\) does not support notes$/,
  );
  await fails(
    e,
    ["protect", image, "1"],
    1,
    /^volt: storage 'local' \(type dir\) does not support protection$/,
  );
});

Deno.test("prune --vmid and --type limit the run to one guest or guest type", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  await ok(e, ["set", "backup", "vm-backup-mode=full"]);
  const a = (await backUp(e, 100, 2)).volids;
  const b = (await backUp(e, 101, 2)).volids;

  const one = await prune(e, ["backup", "--vmid", "100", "--keep-last", "1"]);
  assert.deepEqual(one.decisions.map((d) => d.volid), [a[1], a[0]]);
  assert.deepEqual(one.removed, [a[0]]);
  assert.deepEqual((await listed(e)).map((v) => v.volid), [a[1], ...b]);

  const lxc = await run(e, ["prune", "backup", "--type", "lxc", "--keep-last", "1"]);
  assert.equal(lxc.code, 0, lxc.stderr);
  assert.equal(lxc.stdout, "");
  assert.match(lxc.stderr, /no backups on 'backup' to prune/);
  assert.deepEqual((await listed(e)).map((v) => v.volid), [a[1], ...b]);

  const qemu = await prune(e, ["backup", "--type", "qemu", "--keep-last", "1"]);
  assert.deepEqual(qemu.decisions.map((d) => [d.vmid, d.type, d.mark]), [
    [100, "qemu", "keep"],
    [101, "qemu", "keep"],
    [101, "qemu", "remove"],
  ]);
  assert.deepEqual((await listed(e)).map((v) => v.volid), [a[1], b[1]]);
});

/**
 * A directory backup storage whose removal fails for the volume named by `fail-on`, and
 * which protects the volume named by `protect-on-first-free` when the first removal starts
 * (as a concurrent `volt protect` would): the backup-dir plugin itself otherwise.
 */
function faultyPlugin(): string {
  return `
import { plugin as base } from "${BACKUP_DIR_PLUGIN}";
let first = true;
export const plugin = {
  ...base,
  type: "faulty-backup-dir",
  description: "test: backup-dir with injected failures",
  features: [],
  newBackupProvider: undefined,
  options: {
    ...base.options,
    "fail-on": { type: "string", description: "volume name whose removal fails" },
    "protect-on-first-free": { type: "string", description: "volume name to protect" },
  },
  async freeImage(storage, volname) {
    const protect = storage.options["protect-on-first-free"];
    if (first && protect) await Deno.writeFile(base.path(storage, protect) + "/protected", new Uint8Array());
    first = false;
    if (volname === storage.options["fail-on"]) throw new Error("injected removal failure");
    return base.freeImage(storage, volname);
  },
};
`;
}

Deno.test("prune stops at the first failed removal: what was removed stays removed, the rest is untouched; a backup protected meanwhile is skipped", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  await ok(e, ["set", "backup", "vm-backup-mode=full"]);
  const { volids } = await backUp(e, 100, 5);
  const volname = (v: string) => v.split(":")[1];
  const plugin = tmp.join("faulty.ts");
  await Deno.writeTextFile(plugin, faultyPlugin());
  await Deno.writeTextFile(
    e.env.VOLT_CONFIG,
    (await Deno.readTextFile(e.env.VOLT_CONFIG)) +
      `\nfaulty-backup-dir: faulty\n\tpath ${e.backupRoot}\n\tcontent backup\n` +
      `\tfail-on ${volname(volids[1])}\n\tprotect-on-first-free ${volname(volids[2])}\n`,
  );
  const r = await run(e, ["--plugin", plugin, "prune", "faulty", "--keep-last", "1"]);
  assert.equal(r.code, 1, r.stderr);
  const lines = r.stderr.trimEnd().split("\n");
  const f = (v: string) => v.replace(/^backup:/, "faulty:");
  assert.deepEqual(lines.slice(0, -1), [
    `removing backup '${f(volids[3])}' (1 of 4)`,
    `warning: backup '${f(volids[2])}' was protected after it was listed: kept`,
    `removing backup '${f(volids[1])}' (3 of 4)`,
  ]);
  assert.match(
    lines.at(-1)!,
    new RegExp(
      `^volt: prune stopped after removing 1, at '${f(volids[1])}': injected removal failure$`,
    ),
  );
  assert.deepEqual((await listed(e)).map((v) => [v.volid, v.protected]), [
    [volids[0], false],
    [volids[1], false],
    [volids[2], true],
    [volids[4], false],
  ]);
});

Deno.test("prune works on a third-party provider's storage through listVolumes and freeImage", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  await Deno.writeTextFile(
    e.env.VOLT_CONFIG,
    `dir: local\n\tpath ${e.home}\n\tcontent images\n\nzstd-backup: zbk\n\tpath ${
      tmp.join("zbk")
    }\n`,
  );
  const p = ["--plugin", EXAMPLE];
  const disk = tmp.join("disk.qcow2");
  await createImage(disk, 4 * MiB);
  await Deno.writeTextFile(tmp.join("guest.conf"), "memory: 512\n");
  const volids: string[] = [];
  for (let i = 0; i < 3; i++) {
    await qemuIo(disk, [`write -P ${i + 1} 0 64k`]);
    volids.push(
      (await ok(e, [
        "backup",
        "100",
        "--storage",
        "zbk",
        "--disk",
        `scsi0=${disk}`,
        "--config",
        tmp.join("guest.conf"),
        ...p,
      ])).trim(),
    );
  }
  const result = await prune(e, ["zbk", "--keep-last", "1", ...p]);
  assert.equal(result.keepSource, "options");
  assert.deepEqual(result.removed, [volids[1], volids[0]]);
  const left = JSON.parse(await ok(e, ["list", "zbk", "--output-format", "json", ...p]));
  assert.deepEqual(left.map((v: { volid: string }) => v.volid), [volids[2]]);
  const r = await run(e, ["restore", volids[2], "200", "--storage", "local", ...p]);
  assert.equal(r.code, 0, r.stderr);
  const path = (await ok(e, ["path", r.stdout.trim().split("=")[1]])).trim();
  assert.ok(await imagesEqual(path, "raw", disk, "qcow2"));
});

Deno.test("retention commands refuse bad input with one line and a non-zero exit", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  const missing = "backup:backup/100/qemu-1700000000";
  const cases: [string[], number, RegExp][] = [
    [["prune"], 2, /missing argument/],
    [["prune", "backup", "--keep-last=-1"], 2, /--keep-last: '-1' is not a non-negative integer/],
    [["prune", "backup", "--keep-last", "-1"], 2, /--keep-last/],
    [["prune", "backup", "--keep-daily", "1.5"], 2, /--keep-daily: '1.5'/],
    [["prune", "backup", "--keep-weekly", "many"], 2, /--keep-weekly: 'many'/],
    [["prune", "backup", "--keep-all", "--keep-monthly", "2"], 2, /--keep-all cannot be combined/],
    [["prune", "backup", "--type", "openvz"], 2, /--type: 'openvz' is not one of qemu, lxc/],
    [["prune", "backup", "--vmid", "0"], 2, /--vmid: invalid vmid '0'/],
    [["prune", "backup", "--keep-often", "1"], 2, /keep-often/],
    [["prune", "nosuch"], 1, /storage 'nosuch' does not exist/],
    [["prune", "local"], 1, /storage 'local' does not hold backups/],
    [["protect", missing, "2"], 2, /'2' is not 0 or 1/],
    [["protect", missing, "1", "1"], 2, /unexpected argument/],
    [["protect", missing], 1, /volume 'backup:backup\/100\/qemu-1700000000' does not exist/],
    [["notes", missing, "--set", "x"], 1, /does not exist/],
    [["notes", "backup:backup/100/vm-100-disk-0.raw"], 1, /invalid volume name/],
    [["set", "backup", "prune-backups=keep-last=-1"], 1, /prune-backups/],
    [["set", "backup", "max-protected-backups=-2"], 1, /max-protected-backups/],
  ];
  for (const [args, code, pattern] of cases) {
    await fails(e, args, code, pattern);
  }
  const help = await ok(e, ["prune", "--help"]);
  assert.match(help, /--keep-last N/);
  assert.match(help, /--dry-run/);
});

Deno.test("volt backup --prune applies the storage's retention to the guest after the commit; a failing prune only warns", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  await ok(e, ["set", "backup", "prune-backups=keep-last=2"]);
  const { volids, states, disk } = await backUp(e, 100, 3, ["--prune"]);
  // Each backup was pruned right after its commit: the oldest (the full) was merged away.
  assert.deepEqual((await listed(e)).map((v) => v.volid), volids.slice(1));
  await assertRestores(e, volids[1], states[1], 201);
  await assertRestores(e, volids[2], states[2], 202);

  // The oldest backup's image is damaged: removing it (merging it into its child) fails.
  // The new backup stands, exit 0, one warning.
  const image = `${backupDir(e, volids[1])}/scsi0.qcow2`;
  await Deno.copyFile(image, e.tmp.join("good.qcow2"));
  {
    using f = await Deno.open(image, { write: true });
    await f.write(new Uint8Array(512));
  }
  const r = await run(e, [
    "backup",
    "100",
    "--disk",
    `scsi0=${disk}`,
    "--config",
    e.tmp.join("guest-100.conf"),
    "--prune",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const newVolid = r.stdout.trim();
  assert.match(r.stderr, /^warning: prune after the backup failed: .*; the backup .* stands$/m);
  assert.deepEqual((await listed(e)).map((v) => v.volid), [...volids.slice(1), newVolid]);
  // Repaired, the chain restores: the failed removal left the damaged backup as it was.
  await Deno.copyFile(e.tmp.join("good.qcow2"), image);
  await assertRestores(e, newVolid, states[2], 203);
});
