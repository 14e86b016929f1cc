/**
 * The main job end to end through the CLI: a full backup and three incrementals of two
 * offline qcow2 disks (a sparse 8 GiB one written past 4 GiB, and one whose size is not a
 * multiple of 64 KiB), each restored and compared with the disk as it was; the guest and
 * firewall configurations round trip byte for byte.
 */

import assert from "node:assert/strict";
import { imagesEqual, qemuIo } from "./helpers/nbd_server.ts";
import {
  backupEnv,
  backupOk,
  dirNames,
  imageBitmaps,
  listVolumes,
  restoreOk,
  snapshotFile,
} from "./helpers/backup.ts";
import { sh, TempDir, volt } from "./helpers/volt.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

const GUEST_CONF = "# guest 100: ünïcödé survives\r\nboot: order=scsi0\n" +
  "scsi0: local:100/vm-100-disk-0.qcow2,discard=on,size=8G\n" +
  "scsi1: local:100/vm-100-disk-1.qcow2,size=10243K\n" +
  "ide2: none,media=cdrom\n" +
  "virtio3: local:100/vm-100-disk-3.raw,size=1G\n" +
  "parent: snap1\n" +
  "\n[snap1]\nscsi0: local:100/vm-100-disk-0.qcow2,size=8G\nsnaptime: 1700000000";
const FIREWALL_CONF = "[OPTIONS]\nenable: 1\n\n[RULES]\nIN ACCEPT -p tcp -dport 22 # ssh\n";

Deno.test("full then three incrementals of two disks restore to exactly the disks as they were", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  const disk0 = tmp.join("disk0.qcow2");
  const disk1 = tmp.join("disk1.qcow2");
  const size1 = 10 * MiB + 3 * KiB; // not a multiple of 64 KiB
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", disk0, String(8 * GiB)]);
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", disk1, String(size1)]);
  await Deno.writeTextFile(tmp.join("guest.conf"), GUEST_CONF);
  await Deno.writeTextFile(tmp.join("fw.conf"), FIREWALL_CONF);
  const args = [
    "--disk",
    `scsi0=${disk0}`,
    "--disk",
    `scsi1=${disk1}`,
    "--config",
    tmp.join("guest.conf"),
    "--firewall",
    tmp.join("fw.conf"),
  ];
  const steps: { disk0: string[]; disk1: string[] }[] = [
    {
      disk0: [
        "write -P 0x11 0 1M",
        `write -P 0x12 ${4 * GiB + 64 * KiB} 512k`,
        `write -P 0x13 ${8 * GiB - 64 * KiB} 64k`,
      ],
      disk1: ["write -P 0x21 0 2M", `write -P 0x22 ${10 * MiB} 3k`],
    },
    {
      disk0: [`write -P 0x31 ${5 * GiB} 1M`, "write -z 0 64k", `discard ${4 * GiB + 64 * KiB} 64k`],
      disk1: ["write -P 0x32 1M 4k"],
    },
    {
      disk0: [`write -P 0x41 ${4 * GiB - 32 * KiB} 64k`],
      disk1: [`write -P 0x42 ${10 * MiB + KiB} 2k`, "write -z 1M 64k"],
    },
    { disk0: [`write -P 0x51 ${7 * GiB} 2M`], disk1: [] },
  ];
  const volids: string[] = [];
  for (const [i, step] of steps.entries()) {
    await qemuIo(disk0, step.disk0);
    await qemuIo(disk1, step.disk1);
    await snapshotFile(disk0, tmp.join(`s${i}-disk0.qcow2`));
    await snapshotFile(disk1, tmp.join(`s${i}-disk1.qcow2`));
    volids.push(await backupOk(e, 100, args));
    const bitmaps = await imageBitmaps(disk0);
    assert.deepEqual(Object.keys(bitmaps), ["volt-backup"], "only the consumed bitmap is left");
  }

  // The listing: four backups, each incremental based on the one before.
  const listed = await listVolumes(e);
  assert.deepEqual(listed.map((v) => v.volid), volids);
  assert.equal(listed[0].parent, undefined);
  for (let i = 1; i < 4; i++) assert.equal(listed[i].parent, volids[i - 1]);
  for (const v of listed) {
    assert.equal(v.content, "backup");
    assert.equal(v.subtype, "qemu");
    assert.equal(v.vmid, 100);
    assert.ok(v.size > 0);
  }
  // Incrementals hold only what changed (a few MiB at most), not the 8 GiB disk.
  for (const v of listed.slice(1)) assert.ok(v.size < 4 * MiB, `${v.volid}: ${v.size} bytes`);
  const text = await volt(["list", "backup"], { env: e.env });
  assert.match(text.stdout, /Parent/);
  assert.match(text.stdout, /backup\/qemu/);

  // Each backup restores to exactly the disks as they were at that backup.
  for (const [i, volid] of volids.entries()) {
    const restored = await restoreOk(e, volid, 200 + i);
    assert.ok(
      await imagesEqual(restored.scsi0, "raw", tmp.join(`s${i}-disk0.qcow2`), "qcow2"),
      `backup ${i}: scsi0 differs`,
    );
    assert.ok(
      await imagesEqual(restored.scsi1, "raw", tmp.join(`s${i}-disk1.qcow2`), "qcow2"),
      `backup ${i}: scsi1 differs`,
    );
    assert.equal((await Deno.stat(restored.scsi1)).size, size1);
    const v = await volt(["verify", volid], { env: e.env });
    assert.equal(v.code, 0, v.stderr);
  }
  // And into qcow2 volumes.
  const q = await restoreOk(e, volids[3], 300, ["--format", "qcow2"]);
  assert.ok(await imagesEqual(q.scsi0, "qcow2", disk0, "qcow2"));
  assert.ok(await imagesEqual(q.scsi1, "qcow2", disk1, "qcow2"));

  // Configurations: stored byte for byte; the firewall restored byte for byte; the guest
  // configuration restored with its disks pointing at the new volumes.
  const stored = `${e.backupRoot}/100/${volids[2].split("/").at(-1)}`;
  assert.deepEqual(
    await Deno.readFile(`${stored}/guest.conf`),
    await Deno.readFile(tmp.join("guest.conf")),
  );
  assert.deepEqual(
    await Deno.readFile(`${stored}/firewall.conf`),
    await Deno.readFile(tmp.join("fw.conf")),
  );
  assert.deepEqual(
    await Deno.readFile(`${e.home}/firewall/202.fw`),
    await Deno.readFile(tmp.join("fw.conf")),
  );
  assert.equal(
    await Deno.readTextFile(`${e.home}/qemu-server/202.conf`),
    "# guest 100: ünïcödé survives\r\nboot: order=scsi0\n" +
      "scsi0: local:202/vm-202-disk-0.raw,discard=on,size=8G\n" +
      "scsi1: local:202/vm-202-disk-1.raw,size=10243K\n" +
      "ide2: none,media=cdrom\n" +
      "#virtio3: local:100/vm-100-disk-3.raw,size=1G\n",
  );
  assert.deepEqual(
    (await dirNames(`${e.backupRoot}/100`)).filter((n) => n.startsWith(".tmp")),
    [],
  );
});
