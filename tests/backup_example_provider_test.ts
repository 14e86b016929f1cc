/**
 * The example backup provider (`plugins/examples/zstd_backup.ts`), loaded by path: what is
 * particular to it. The scenarios every provider must pass (backup, restore, interruption,
 * verify, prune) run in `tests/providers/example_test.ts`.
 */

import assert from "node:assert/strict";
import { createImage, imagesEqual, qemuIo } from "./helpers/nbd_server.ts";
import { type BackupEnv, backupEnv, dirNames } from "./helpers/backup.ts";
import { sh, TempDir, volt } from "./helpers/volt.ts";

const EXAMPLE = new URL("../plugins/examples/zstd_backup.ts", import.meta.url).pathname;
const P = ["--plugin", EXAMPLE];
const MiB = 1024 * 1024;

/** An environment with `local` (dir) and the example's storage `zbk` under `<tmp>/zbk`. */
async function exampleEnv(tmp: TempDir): Promise<BackupEnv> {
  const e = backupEnv(tmp);
  e.backupRoot = tmp.join("zbk");
  const cfg = tmp.join("storage.cfg");
  await Deno.writeTextFile(
    cfg,
    `dir: local\n\tpath ${e.home}\n\tcontent images\n\nzstd-backup: zbk\n\tpath ${e.backupRoot}\n`,
  );
  e.env.VOLT_CONFIG = cfg;
  await Deno.writeTextFile(tmp.join("guest.conf"), "memory: 512\n");
  return e;
}

/** A 16 MiB qcow2 disk with some data. */
async function sampleDisk(tmp: TempDir): Promise<string> {
  const img = tmp.join("disk.qcow2");
  await createImage(img, 16 * MiB);
  await qemuIo(img, ["write -P 0xb1 0 1M", "write -P 0xb2 6M 64k"]);
  return img;
}

function backupArgs(tmp: TempDir, disk: string): string[] {
  return ["backup", "100", "--storage", "zbk", "--disk", disk, "--config", tmp.join("guest.conf")];
}

Deno.test("the example stores each disk as one zstd stream that zstd -d turns back into the disk", async () => {
  await using tmp = new TempDir();
  const e = await exampleEnv(tmp);
  const img = await sampleDisk(tmp);
  const b = await volt([...backupArgs(tmp, `scsi0=${img}`), ...P], { env: e.env });
  assert.equal(b.code, 0, b.stderr);
  const dir = (await volt(["path", b.stdout.trim(), ...P], { env: e.env })).stdout.trim();
  assert.deepEqual(await dirNames(dir), ["disks.json", "guest.conf", "scsi0.raw.zst", "task.log"]);
  assert.deepEqual(JSON.parse(await Deno.readTextFile(`${dir}/disks.json`)), { scsi0: 16 * MiB });
  await sh("zstd", ["-q", "-d", "-o", tmp.join("plain.raw"), `${dir}/scsi0.raw.zst`]);
  assert.ok(await imagesEqual(tmp.join("plain.raw"), "raw", img, "qcow2"));
  assert.ok((await Deno.stat(`${dir}/scsi0.raw.zst`)).size < MiB, "compressed");
});

Deno.test("the example takes the next free second when a backup's name is taken", async () => {
  await using tmp = new TempDir();
  const e = await exampleEnv(tmp);
  const now = Math.floor(Date.now() / 1000);
  for (let t = now; t < now + 5; t++) {
    await Deno.mkdir(`${e.backupRoot}/100/qemu-${t}`, { recursive: true });
  }
  const b = await volt([...backupArgs(tmp, `scsi0=${await sampleDisk(tmp)}`), ...P], {
    env: e.env,
  });
  assert.equal(b.code, 0, b.stderr);
  assert.equal(b.stdout.trim(), `zbk:backup/100/qemu-${now + 5}`);
});

Deno.test("a restore of a damaged stream fails in one line and leaves no scratch file or volume", async () => {
  await using tmp = new TempDir();
  const e = await exampleEnv(tmp);
  const b = await volt([...backupArgs(tmp, `scsi0=${await sampleDisk(tmp)}`), ...P], {
    env: e.env,
  });
  assert.equal(b.code, 0, b.stderr);
  const volid = b.stdout.trim();
  const dir = (await volt(["path", volid, ...P], { env: e.env })).stdout.trim();
  await Deno.writeFile(`${dir}/scsi0.raw.zst`, new Uint8Array(64)); // not zstd any more

  const r = await volt(["restore", volid, "200", "--storage", "local", ...P], { env: e.env });
  assert.equal(r.code, 1);
  assert.match(
    r.stderr.trim(),
    /^volt: restore of zbk:backup\/100\/qemu-\d+ failed: zstd failed: /,
  );
  assert.deepEqual((await dirNames(e.backupRoot)).filter((n) => n.startsWith(".restore")), []);
  const local = await volt(["list", "local", "--output-format", "json"], { env: e.env });
  assert.deepEqual(JSON.parse(local.stdout), []);
});

Deno.test("a source that cannot be reached fails before the example provider is asked for anything", async () => {
  await using tmp = new TempDir();
  const e = await exampleEnv(tmp);
  const gone = await volt(
    [...backupArgs(tmp, "scsi0=nbd+unix:///x?socket=/nonexistent.sock"), ...P],
    { env: e.env },
  );
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /cannot connect/);
  assert.deepEqual(await dirNames(e.backupRoot), []);
});
