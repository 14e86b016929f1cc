/**
 * The example backup provider (`plugins/examples/raw_backup.ts`), loaded by path like any
 * third-party one: backup, list, restore and failure cleanup through volt's host side.
 */

import assert from "node:assert/strict";
import { createImage, imagesEqual, qemuIo } from "./helpers/nbd_server.ts";
import { backupEnv, dirNames } from "./helpers/backup.ts";
import { TempDir, volt } from "./helpers/volt.ts";

const EXAMPLE = new URL("../plugins/examples/raw_backup.ts", import.meta.url).pathname;
const MiB = 1024 * 1024;

Deno.test("the example raw-backup provider backs up and restores through volt", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  const cfg = tmp.join("storage.cfg");
  await Deno.writeTextFile(
    cfg,
    `dir: local\n\tpath ${e.home}\n\tcontent images\n\nraw-backup: rawbk\n\tpath ${
      tmp.join("rawbk")
    }\n`,
  );
  e.env.VOLT_CONFIG = cfg;
  const img = tmp.join("disk.qcow2");
  await createImage(img, 8 * MiB);
  await qemuIo(img, ["write -P 0xb1 0 1M", "write -P 0xb2 6M 64k"]);
  await Deno.writeTextFile(tmp.join("guest.conf"), "memory: 512\n");
  const p = ["--plugin", EXAMPLE];
  const b = await volt(
    [
      "backup",
      "100",
      "--storage",
      "rawbk",
      "--disk",
      `scsi0=${img}`,
      "--config",
      tmp.join("guest.conf"),
      ...p,
    ],
    { env: e.env },
  );
  assert.equal(b.code, 0, b.stderr);
  const volid = b.stdout.trim();
  assert.match(volid, /^rawbk:backup\/100\/qemu-\d+$/);
  const l = await volt(["list", "rawbk", "--output-format", "json", ...p], { env: e.env });
  assert.deepEqual(JSON.parse(l.stdout).map((v: { volid: string }) => v.volid), [volid]);
  const r = await volt(["restore", volid, "200", "--storage", "local", ...p], { env: e.env });
  assert.equal(r.code, 0, r.stderr);
  const path = (await volt(["path", r.stdout.trim().split("=")[1]], { env: e.env })).stdout.trim();
  assert.ok(await imagesEqual(path, "raw", img, "qcow2"));
  const v = await volt(["verify", volid, ...p], { env: e.env });
  assert.equal(v.code, 1);
  assert.match(v.stderr, /cannot verify backups/);

  // A source that cannot be reached fails before the provider is asked for anything.
  const gone = await volt(
    [
      "backup",
      "100",
      "--storage",
      "rawbk",
      "--disk",
      "scsi0=nbd+unix:///x?socket=/nonexistent.sock",
      "--config",
      tmp.join("guest.conf"),
      ...p,
    ],
    { env: e.env },
  );
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /cannot connect/);
  assert.deepEqual((await dirNames(tmp.join("rawbk/100"))).filter((n) => n.startsWith(".tmp")), []);
});
