/**
 * The directory backup storage as a storage (default configuration, volume names, listing,
 * removal) and its options (vm-backup-mode, vm-backup-mechanism), plus the pieces backups
 * are made of (manifest checks, guest configuration rewriting).
 */

import assert from "node:assert/strict";
import { parseBackupVolname } from "../plugins/backup_dir/layout.ts";
import { parseManifest } from "../lib/backup/manifest.ts";
import { proxmoxSize, rewriteGuestConfig } from "../lib/backup/guest_config.ts";
import { parseDiskArg } from "../lib/backup/sources.ts";
import { createImage, imagesEqual, qemuIo } from "./helpers/nbd_server.ts";
import {
  backup,
  backupEnv,
  backupOk,
  imageBitmaps,
  listVolumes,
  restoreOk,
  snapshotFile,
} from "./helpers/backup.ts";
import { sh, TempDir, volt } from "./helpers/volt.ts";

const MiB = 1024 * 1024;

Deno.test("the built-in default configuration has a backup storage under VOLT_HOME", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  const show = await volt(["config", "show"], { env: e.env });
  assert.match(show.stdout, new RegExp(`^backup-dir: backup\\n\\tpath ${e.home}/backup$`, "m"));
  assert.match(show.stdout, /^dir: local$/m);
  const s = await volt(["status"], { env: e.env });
  assert.equal(s.code, 0, s.stderr);
  assert.match(s.stdout, /^backup\s+backup-dir\s+active/m);
  const a = await volt(["alloc", "backup", "100", "auto", "1M"], { env: e.env });
  assert.equal(a.code, 1);
  assert.match(a.stderr, /holds backups only/);
});

Deno.test("backup volume names are backup/<vmid>/qemu-<epoch> and nothing else", () => {
  assert.deepEqual(parseBackupVolname("backup/100/qemu-1700000000"), {
    vmid: 100,
    type: "qemu",
    time: 1700000000,
    dirName: "qemu-1700000000",
  });
  for (
    const bad of [
      "backup/100/../x",
      "backup/0/qemu-1",
      "100/qemu-1",
      "backup/100/qemu-x",
      "backup/100/qemu-1/scsi0.qcow2",
    ]
  ) {
    assert.throws(() => parseBackupVolname(bad), TypeError, bad);
  }
});

Deno.test("after removing the newest backup the next backup is full", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  const img = tmp.join("disk.qcow2");
  await createImage(img, 8 * MiB);
  await qemuIo(img, ["write -P 0x81 0 1M"]);
  await Deno.writeTextFile(tmp.join("guest.conf"), "memory: 512\n");
  const args = ["--disk", `scsi0=${img}`, "--config", tmp.join("guest.conf")];
  const v1 = await backupOk(e, 100, args);
  await qemuIo(img, ["write -P 0x82 2M 1M"]);
  const v2 = await backupOk(e, 100, args);
  // (Removing v1 instead would merge it into v2: tests/backup_removal_test.ts.)
  const p = await volt(["path", v2], { env: e.env });
  assert.equal(p.stdout.trim(), `${e.backupRoot}/100/${v2.split("/").at(-1)}`);
  const info = await volt(["info", v2, "--output-format", "json"], { env: e.env });
  assert.equal(JSON.parse(info.stdout).format, "directory");

  // The disk's bitmap is relative to v2; once v2 is gone, an incremental on v1 would miss
  // the changes v2 held: the provider must start over with a full backup.
  assert.equal((await volt(["free", v2], { env: e.env })).code, 0);
  await qemuIo(img, ["write -P 0x83 5M 64k"]);
  const v3 = await backupOk(e, 100, args);
  const listed = await listVolumes(e);
  assert.deepEqual(listed.map((v) => [v.volid, v.parent]), [[v1, undefined], [v3, undefined]]);
  const r = await restoreOk(e, v3, 200);
  assert.ok(await imagesEqual(r.scsi0, "raw", img, "qcow2"));
  assert.equal((await volt(["free", v1], { env: e.env })).code, 0);
  assert.deepEqual((await listVolumes(e)).map((v) => v.volid), [v3]);
});

Deno.test("vm-backup-mechanism file-handle backs up raw files; qcow2 sources get a clear error", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  const cfg = tmp.join("storage.cfg");
  await Deno.writeTextFile(
    cfg,
    `dir: local\n\tpath ${e.home}\n\tcontent images\n\n` +
      `backup-dir: fh\n\tpath ${tmp.join("fh")}\n\tvm-backup-mechanism file-handle\n`,
  );
  e.env.VOLT_CONFIG = cfg;
  const raw = tmp.join("disk.raw");
  await sh("qemu-img", ["create", "-q", "-f", "raw", raw, String(6 * MiB + 4096)]);
  await qemuIo(
    raw,
    ["write -P 0x91 4k 8k", "write -P 0x92 1M 1M", `write -P 0x93 ${6 * MiB} 4k`],
    "raw",
  );
  await Deno.writeTextFile(tmp.join("guest.conf"), "memory: 512\n");
  const args = ["--storage", "fh", "--disk", `scsi0=${raw}`, "--config", tmp.join("guest.conf")];
  const v1 = await backupOk(e, 100, args);
  await qemuIo(raw, ["write -P 0x94 3M 4k"], "raw");
  const v2 = await backupOk(e, 100, args);
  const listed = await listVolumes(e, "fh");
  assert.deepEqual(listed.map((v) => [v.volid, v.parent]), [[v1, undefined], [v2, undefined]]);
  const r = await restoreOk(e, v2, 200);
  assert.ok(await imagesEqual(r.scsi0, "raw", raw, "raw"));
  const qcow = tmp.join("disk.qcow2");
  await createImage(qcow, 4 * MiB);
  const bad = await backup(e, 100, [
    "--storage",
    "fh",
    "--disk",
    `scsi0=${qcow}`,
    "--config",
    tmp.join("guest.conf"),
  ]);
  assert.equal(bad.code, 1);
  assert.match(
    bad.stderr.trim().split("\n").at(-1)!,
    /file handles .* this disk is a qcow2 image: set vm-backup-mechanism nbd/,
  );
  assert.equal((await listVolumes(e, "fh")).length, 2);
});

Deno.test("raw files over NBD, volume ids as sources, --mode full and vm-backup-mode full", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  const cfg = tmp.join("storage.cfg");
  await Deno.writeTextFile(
    cfg,
    `dir: local\n\tpath ${e.home}\n\tcontent images\n\nbackup-dir: backup\n\tpath ${e.backupRoot}\n\n` +
      `backup-dir: fulls\n\tpath ${tmp.join("fulls")}\n\tvm-backup-mode full\n`,
  );
  e.env.VOLT_CONFIG = cfg;
  const alloc = await volt(["alloc", "local", "100", "auto", "8M", "--format", "qcow2"], {
    env: e.env,
  });
  assert.equal(alloc.code, 0, alloc.stderr);
  const volid = /'([^']+)'/.exec(alloc.stdout)![1];
  const path = (await volt(["path", volid], { env: e.env })).stdout.trim();
  await qemuIo(path, ["write -P 0xa1 0 1M"]);
  const raw = tmp.join("data.img");
  await sh("qemu-img", ["create", "-q", "-f", "raw", raw, String(2 * MiB)]);
  await qemuIo(raw, ["write -P 0xa2 64k 64k"], "raw");
  await Deno.writeTextFile(tmp.join("guest.conf"), `scsi0: ${volid},size=8M\n`);
  const args = [
    "--disk",
    `scsi0=${volid}`,
    "--disk",
    `virtio1=${raw}`,
    "--config",
    tmp.join("guest.conf"),
  ];
  const v1 = await backupOk(e, 100, args);
  await qemuIo(path, ["write -P 0xa3 4M 64k"]);
  const v2 = await backupOk(e, 100, [...args, "--mode", "full"]);
  await qemuIo(path, ["write -P 0xa4 5M 64k"]);
  const v3 = await backupOk(e, 100, args);
  const listed = await listVolumes(e);
  assert.deepEqual(listed.map((v) => [v.volid, v.parent]), [[v1, undefined], [v2, undefined], [
    v3,
    v2,
  ]]);
  const r = await restoreOk(e, v3, 200);
  assert.ok(await imagesEqual(r.scsi0, "raw", path, "qcow2"));
  assert.ok(await imagesEqual(r.virtio1, "raw", raw, "raw"));

  const f1 = await backupOk(e, 100, ["--storage", "fulls", ...args]);
  await qemuIo(path, ["write -P 0xa5 6M 64k"]);
  await snapshotFile(path, tmp.join("at-f2.qcow2"));
  const f2 = await backupOk(e, 100, ["--storage", "fulls", ...args]);
  assert.deepEqual((await listVolumes(e, "fulls")).map((v) => [v.volid, v.parent]), [[
    f1,
    undefined,
  ], [f2, undefined]]);
  assert.deepEqual(Object.keys(await imageBitmaps(path)).sort(), ["volt-backup", "volt-fulls"]);
  const rf = await restoreOk(e, f2, 201);
  assert.ok(await imagesEqual(rf.scsi0, "raw", tmp.join("at-f2.qcow2"), "qcow2"));
});

Deno.test("--disk arguments", () => {
  assert.deepEqual(parseDiskArg("scsi0=nbd+unix:///drive-scsi0?socket=/run/q.sock"), {
    device: "scsi0",
    source: "nbd+unix:///drive-scsi0?socket=/run/q.sock",
  });
  assert.deepEqual(parseDiskArg("efidisk0=/dev/vg/lv,format=raw"), {
    device: "efidisk0",
    source: "/dev/vg/lv",
    format: "raw",
  });
  assert.throws(() => parseDiskArg("scsi0"), /expected DEVICE=SOURCE/);
  assert.throws(() => parseDiskArg("SCSI0=/x"), /not a device name/);
  assert.throws(() => parseDiskArg("scsi0=/x,format=vmdk"), /raw or qcow2/);
});

Deno.test("manifests with names that could leave the backup or lie about the chain are refused", () => {
  const base = {
    format: "volt-backup",
    version: 1,
    type: "qemu",
    vmid: 100,
    time: 5,
    devices: { scsi0: { file: "scsi0.qcow2", size: 1024, kind: "full", clusterSize: 65536 } },
    files: [{ name: "scsi0.qcow2", size: 1, digest: `sha256-64m:${"a".repeat(64)}` }],
  };
  const parse = (m: unknown) => parseManifest(JSON.stringify(m), "m");
  assert.equal(parse(base).vmid, 100);
  assert.throws(
    () =>
      parse({
        ...base,
        files: [{ name: "../x", size: 1, digest: `sha256-64m:${"a".repeat(64)}` }],
      }),
    /not a plain file name/,
  );
  assert.throws(() => parse({ ...base, devices: { "../a": base.devices.scsi0 } }), /device name/);
  assert.throws(
    () =>
      parse({
        ...base,
        devices: { scsi0: { ...base.devices.scsi0, kind: "incremental", backing: "/etc/passwd" } },
      }),
    /incremental but there is no parent/,
  );
  assert.throws(
    () =>
      parse({
        ...base,
        parent: "qemu-4",
        devices: {
          scsi0: { ...base.devices.scsi0, kind: "incremental", backing: "../../x/scsi0.qcow2" },
        },
      }),
    /backing is not '..\/qemu-4\/scsi0.qcow2'/,
  );
  assert.throws(() => parse({ ...base, parent: "../qemu-4" }), /not a backup name/);
  assert.throws(() => parseManifest("{", "m"), SyntaxError);
});

Deno.test("the restored guest configuration points at the new volumes", () => {
  const conf = "name: web\nscsi0: old:100/vm-100-disk-0.raw,size=1G,ssd=1\nsata1: old:100/x.raw\n" +
    "ide2: local:iso/debian.iso,media=cdrom\nparent: s1\n\n[s1]\nscsi0: old:100/vm-100-disk-0.raw\n";
  const out = rewriteGuestConfig(conf, {
    scsi0: { volid: "local:200/vm-200-disk-0.raw", size: 2 * 2 ** 30 },
    virtio2: { volid: "local:200/vm-200-disk-1.raw", size: 3 * MiB + 1024 },
  });
  assert.equal(
    out,
    "name: web\nscsi0: local:200/vm-200-disk-0.raw,size=2G,ssd=1\n#sata1: old:100/x.raw\n" +
      "ide2: local:iso/debian.iso,media=cdrom\nvirtio2: local:200/vm-200-disk-1.raw,size=3073K\n",
  );
  assert.equal(proxmoxSize(512), "512");
});
