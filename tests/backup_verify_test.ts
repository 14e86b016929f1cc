/** `volt verify`: checksums, images and chains of stored backups. */

import assert from "node:assert/strict";
import { qemuIo } from "./helpers/nbd_server.ts";
import { backupEnv, backupOk, flipByte, oneDiskGuest } from "./helpers/backup.ts";
import { sh, TempDir, volt } from "./helpers/volt.ts";

const MiB = 1024 * 1024;

/** Flips every bit of one byte of a file. */
async function setup(tmp: TempDir) {
  const e = backupEnv(tmp);
  const { img, args } = await oneDiskGuest(tmp, 8 * MiB, ["write -P 0x71 0 2M"], "memory: 512\n");
  const full = await backupOk(e, 100, args);
  await qemuIo(img, ["write -P 0x72 4M 1M"]);
  const inc = await backupOk(e, 100, args);
  const dir = (volid: string) => `${e.backupRoot}/100/${volid.split("/").at(-1)}`;
  return { e, full, inc, dir };
}

Deno.test("verify passes for a full and an incremental backup", async () => {
  await using tmp = new TempDir();
  const { e, full, inc } = await setup(tmp);
  for (const volid of [full, inc]) {
    const r = await volt(["verify", volid], { env: e.env });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /verified: 2 files .* and 1 images, no problem found/);
  }
  const j = await volt(["verify", inc, "--output-format", "json"], { env: e.env });
  assert.equal(JSON.parse(j.stdout).ok, true);
});

Deno.test("a flipped byte in a backup image makes verify fail naming the file", async () => {
  await using tmp = new TempDir();
  const { e, inc, dir } = await setup(tmp);
  await flipByte(`${dir(inc)}/scsi0.qcow2`, 65536 + 100); // first data cluster
  const r = await volt(["verify", inc], { env: e.env });
  assert.equal(r.code, 1);
  const last = r.stderr.trim().split("\n").at(-1)!;
  assert.match(
    last,
    /^volt: backup .* failed verification: scsi0\.qcow2 does not match its checksum/,
  );
});

Deno.test("a flipped byte in the parent's image makes verify of the incremental fail", async () => {
  await using tmp = new TempDir();
  const { e, full, inc, dir } = await setup(tmp);
  await flipByte(`${dir(full)}/scsi0.qcow2`, 65536 + 7);
  const r = await volt(["verify", inc], { env: e.env });
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /scsi0: qemu-\d+\/scsi0\.qcow2, a base of this backup, does not match its checksum/,
  );
  const f = await volt(["verify", full], { env: e.env });
  assert.equal(f.code, 1);
  assert.match(f.stderr, /scsi0\.qcow2 does not match its checksum/);
});

Deno.test("verify reports a changed configuration, an extra file and a damaged manifest", async () => {
  await using tmp = new TempDir();
  const { e, full, inc, dir } = await setup(tmp);
  await Deno.writeTextFile(`${dir(full)}/guest.conf`, "memory: 4096\n");
  let r = await volt(["verify", full], { env: e.env });
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /guest\.conf has \d+ bytes, the manifest says \d+|guest\.conf does not match/,
  );
  // Restore checks the configuration too.
  const restore = await volt(["restore", full, "200", "--storage", "local"], { env: e.env });
  assert.equal(restore.code, 1);
  assert.match(restore.stderr, /guest\.conf does not match its checksum/);

  await Deno.writeTextFile(`${dir(inc)}/notes.txt`, "hello");
  r = await volt(["verify", inc], { env: e.env });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /notes\.txt is not listed in the manifest/);
  await Deno.remove(`${dir(inc)}/notes.txt`);

  const m = `${dir(inc)}/manifest.json`;
  await Deno.writeTextFile(m, (await Deno.readTextFile(m)).replace('"version": 1', '"version": 7'));
  r = await volt(["verify", inc], { env: e.env });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /manifest: version 7 is not 1/);
});

Deno.test("verify of something that is not a backup", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  const r = await volt(["verify", "backup:backup/100/qemu-1"], { env: e.env });
  assert.equal(r.code, 1);
  assert.equal(r.stderr.trim(), "volt: backup 'backup:backup/100/qemu-1' does not exist");
  const bad = await volt(["verify", "backup:backup/100/../x"], { env: e.env });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /invalid volume/);
});

Deno.test("an image larger than one digest chunk: hashed while written, checkable by hand", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  const { img, args } = await oneDiskGuest(
    tmp,
    256 * MiB,
    ["write -P 0x73 0 150M", "write -P 0x74 200M 30M"],
    "memory: 512\n",
  );
  const volid = await backupOk(e, 100, args);
  const r = await volt(["verify", volid], { env: e.env });
  assert.equal(r.code, 0, r.stderr);
  const dir = `${e.backupRoot}/100/${volid.split("/").at(-1)}`;
  const manifest = JSON.parse(await Deno.readTextFile(`${dir}/manifest.json`));
  const entry = manifest.files.find((f: { name: string }) => f.name === "scsi0.qcow2");
  assert.ok(entry.size > 2 * 64 * MiB, "spans several chunks");
  const byHand = await sh("bash", [
    "-c",
    `split -b 64M --filter='sha256sum | head -c 64 | tr a-f A-F | basenc --base16 -d' ` +
    `'${dir}/scsi0.qcow2' | sha256sum | head -c 64`,
  ]);
  assert.equal(entry.digest, `sha256-64m:${byHand}`);

  // An incremental image of several chunks (written over a backing file) as well.
  await qemuIo(img, ["write -P 0x75 10M 140M"]);
  const inc = await backupOk(e, 100, args);
  const v = await volt(["verify", inc], { env: e.env });
  assert.equal(v.code, 0, v.stderr);
});
