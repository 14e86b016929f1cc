/**
 * Restore never lets qemu open a file it should not: crafted backups whose image names a
 * backing file outside the guest's backup directory (absolute, `..`, another guest, json:, a
 * symlink out) or uses an external data file are refused before anything is read or
 * allocated. The crafted backups are otherwise valid (manifest and checksums), so it is the
 * chain check that stops them.
 */

import assert from "node:assert/strict";
import { fileDigest } from "../lib/backup/checksum.ts";
import {
  type BackupEnv,
  backupEnv,
  backupOk,
  dirNames,
  listVolumes,
  oneDiskGuest,
} from "./helpers/backup.ts";
import { sh, TempDir, volt, voltCommand } from "./helpers/volt.ts";

const MiB = 1024 * 1024;

/** Writes a backup directory by hand around an image made by `makeImage(path)`. */
async function craftBackup(
  e: BackupEnv,
  time: number,
  makeImage: (path: string) => Promise<void>,
): Promise<string> {
  const dir = `${e.backupRoot}/100/qemu-${time}`;
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/guest.conf`, "memory: 512\nscsi0: x:100/vm-100-disk-0.raw\n");
  const image = `${dir}/scsi0.qcow2`;
  await makeImage(image);
  const files = [];
  for (const name of ["guest.conf", "scsi0.qcow2"]) {
    const st = await Deno.stat(`${dir}/${name}`);
    files.push({
      name,
      size: st.size,
      digest: st.isFile
        ? (await fileDigest(`${dir}/${name}`)).digest
        : `sha256-64m:${"0".repeat(64)}`,
    });
  }
  const manifest = {
    format: "volt-backup",
    version: 1,
    type: "qemu",
    vmid: 100,
    time,
    devices: { scsi0: { file: "scsi0.qcow2", size: MiB, kind: "full", clusterSize: 65536 } },
    files,
  };
  await Deno.writeTextFile(`${dir}/manifest.json`, JSON.stringify(manifest));
  return `backup:backup/100/qemu-${time}`;
}

/** qemu-img create without opening the backing file (-u). */
function overlay(backing: string, format = "qcow2") {
  return (path: string) =>
    sh("qemu-img", ["create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", format, path, "1M"])
      .then(() => {});
}

/** `volt restore`, killed after 30 s if it hangs (a FIFO opened for reading would block). */
async function restoreWithTimeout(e: BackupEnv, volid: string) {
  const [cmd, ...pre] = voltCommand();
  const out = await new Deno.Command(cmd, {
    args: [...pre, "restore", volid, "200", "--storage", "local"],
    env: { NO_COLOR: "1", ...e.env },
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("restore refuses crafted backups with unsafe backing files or data files, reading nothing", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  // A real backup of another guest, and a FIFO where an escaping chain points: opening it
  // for reading would block, so a restore that returns proves nothing was opened.
  const { args } = await oneDiskGuest(tmp, 4 * MiB, ["write -P 0x61 0 1M"], "memory: 512\n");
  const other = await backupOk(e, 101, args);
  const otherDir = other.split("/").slice(-2).join("/"); // 101/qemu-…
  await Deno.mkdir(`${e.backupRoot}/other`, { recursive: true });
  await sh("mkfifo", [`${e.backupRoot}/other/disk.qcow2`]);
  await Deno.mkdir(tmp.join("outside"));
  await sh("mkfifo", [tmp.join("outside/secret.qcow2")]);

  const cases: [string, (path: string) => Promise<void>, RegExp][] = [
    [
      "backing file /etc/passwd",
      overlay("/etc/passwd", "raw"),
      /'\/etc\/passwd' is an absolute path/,
    ],
    [
      "backing file ../../other/…",
      overlay("../../other/disk.qcow2"),
      /outside the guest's backup directory/,
    ],
    [
      "another guest's backup",
      overlay(`../../${otherDir}/scsi0.qcow2`),
      /outside the guest's backup directory/,
    ],
    [
      "a json: backing file",
      overlay('json:{"driver":"raw","file":{"driver":"file","filename":"/etc/passwd"}}', "raw"),
      /is a protocol or json: name/,
    ],
    [
      "a protocol backing file",
      overlay("nbd+unix:///x?socket=/tmp/x.sock", "raw"),
      /protocol or json: name/,
    ],
    [
      "an external data file",
      (path) =>
        sh("qemu-img", [
          "create",
          "-q",
          "-f",
          "qcow2",
          "-o",
          `data_file=${tmp.join("data.raw")}`,
          path,
          "1M",
        ])
          .then(() => {}),
      /uses an external data file/,
    ],
    [
      "a backing file that is a symlink out",
      async (path) => {
        const dir = path.slice(0, path.lastIndexOf("/"));
        await Deno.symlink(tmp.join("outside/secret.qcow2"), `${dir}/base.qcow2`);
        await overlay("base.qcow2")(path);
      },
      /resolves to .*outside the guest's backup directory/,
    ],
    [
      "an image that is itself a symlink out",
      (path) => Deno.symlink(tmp.join("outside/secret.qcow2"), path),
      /outside the guest's backup directory/,
    ],
    [
      "a backing chain that loops",
      async (path) => {
        const dir = path.slice(0, path.lastIndexOf("/"));
        await overlay("scsi0.qcow2")(`${dir}/loop.qcow2`);
        await overlay("loop.qcow2")(path);
      },
      /loops|deeper than/,
    ],
  ];
  let time = 1_700_000_000;
  for (const [what, make, reason] of cases) {
    const volid = await craftBackup(e, time++, make);
    const r = await restoreWithTimeout(e, volid);
    assert.equal(r.code, 1, `${what}: ${r.stderr}`);
    const lines = r.stderr.trim().split("\n").filter((l) => l.startsWith("volt: "));
    assert.equal(lines.length, 1, `${what}: ${r.stderr}`);
    assert.match(lines[0], /unsafe backup image '.*scsi0\.qcow2'|unsafe backup image/, what);
    assert.match(lines[0], /refusing to read it/, what);
    assert.match(lines[0], reason, `${what}: ${lines[0]}`);
    assert.deepEqual(await listVolumes(e, "local"), [], `${what}: a volume was left allocated`);
    assert.deepEqual(await dirNames(`${e.home}/qemu-server`), [], `${what}: a config was written`);
    const v = await volt(["verify", volid], { env: e.env });
    assert.equal(v.code, 1, `${what}: verify passed`);
    assert.match(v.stderr, /scsi0\.qcow2/);
  }
  // The legitimate backup still restores.
  const ok = await volt(["restore", other, "200", "--storage", "local"], { env: e.env });
  assert.equal(ok.code, 0, ok.stderr);
});
