/**
 * Container backups through the CLI, as root, with the real tar, mksquashfs and unsquashfs:
 * `volt backup --type lxc --directory …` into the directory backup storage (tar and squashfs
 * modes), `volt restore` into a new subvolume, `volt verify`, `volt list`; a container tree
 * with uid 100000, setuid, symlinks, a hard link, a sparse 1 GiB file, xattrs and ACLs must
 * come back identically, excluded paths must not be in the archive, and every failure must
 * leave nothing behind.
 */

import assert from "node:assert/strict";
import { runContainerRestore } from "../lib/backup/container_restore.ts";
import { rewriteContainerConfig } from "../lib/backup/guest_config.ts";
import { parseManifest } from "../lib/backup/manifest.ts";
import { runRestore } from "../lib/backup/restore.ts";
import { Storages } from "../lib/storage/storages.ts";
import { type BackupEnv, backupEnv, dirNames, flipByte, listVolumes } from "./helpers/backup.ts";
import {
  archiveMembers,
  buildContainerTree,
  EXCLUDED,
  EXCLUDES,
  isExcluded,
  randomBytes,
  withoutAcls,
  writeWithMode,
} from "./helpers/container_tree.ts";
import { type TreeEntry, treeListing } from "./helpers/tree_listing.ts";
import { sh, TempDir, volt, voltCommand } from "./helpers/volt.ts";

const isRoot = Deno.uid() === 0;
const GiB = 1024 ** 3;
/** An example provider that backs up VMs only. */
const VM_ONLY_PROVIDER = new URL("../plugins/examples/zstd_backup.ts", import.meta.url).pathname;
/** The directory provider under another name, failing on purpose in `$THROW_IN`. */
const THROWING = new URL("./fixtures/throwing_backup.ts", import.meta.url).pathname;

const CT_CONF = "arch: amd64\nhostname: ct100\nmemory: 512\n" +
  "rootfs: local:100/subvol-100-disk-0.subvol,size=8G\n" +
  "mp0: local:100/subvol-100-disk-1.subvol,mp=/data,backup=1\nmp1: /srv/shared,mp=/shared\n" +
  "unprivileged: 1\n";
const FIREWALL = "[OPTIONS]\nenable: 1\n";

/**
 * A volt home with `local` (a dir storage for images and container subvolumes), `backup`
 * (lxc-backup-mode tar, the default), `sqfs` (lxc-backup-mode squashfs) and `isos` (a dir
 * storage that holds no container file systems); the container's tree and configurations.
 */
async function containerEnv(tmp: TempDir, tree: { sparse: boolean } | undefined) {
  const e = backupEnv(tmp);
  const cfg = tmp.join("storage.cfg");
  await Deno.writeTextFile(
    cfg,
    `dir: local\n\tpath ${e.home}\n\tcontent images,rootdir\n\n` +
      `backup-dir: backup\n\tpath ${e.backupRoot}\n\n` +
      `backup-dir: sqfs\n\tpath ${tmp.join("sqfs")}\n\tlxc-backup-mode squashfs\n\n` +
      `dir: isos\n\tpath ${tmp.join("isos")}\n\tcontent iso\n`,
  );
  e.env.VOLT_CONFIG = cfg;
  const rootfs = tmp.join("rootfs");
  await Deno.mkdir(rootfs);
  if (tree) await buildContainerTree(rootfs, tree);
  await Deno.writeTextFile(tmp.join("ct.conf"), CT_CONF);
  await Deno.writeTextFile(tmp.join("fw.conf"), FIREWALL);
  const args = (storage: string, extra: string[] = []) => [
    "--type",
    "lxc",
    "--storage",
    storage,
    "--directory",
    rootfs,
    "--config",
    tmp.join("ct.conf"),
    ...extra,
  ];
  return { e, cfg, rootfs, args };
}

/** `volt backup …` that must succeed; the new container backup's volume id. */
async function backupCt(e: BackupEnv, vmid: number, args: string[]): Promise<string> {
  const r = await volt(["backup", String(vmid), ...args], { env: e.env });
  assert.equal(r.code, 0, `volt backup failed: ${r.stderr}`);
  const volid = r.stdout.trim();
  assert.match(volid, new RegExp(`^[a-z]+:backup/${vmid}/lxc-\\d+$`));
  return volid;
}

/** Guest 100's container, whose tree is one file of `bytes` random bytes, backed up. */
async function oneFileBackup(tmp: TempDir, storage: string, bytes: number) {
  const env = await containerEnv(tmp, undefined);
  await writeWithMode(`${env.rootfs}/data.bin`, randomBytes(bytes));
  return { ...env, volid: await backupCt(env.e, 100, env.args(storage)) };
}

/** `volt restore … --storage local` that must succeed; the new rootfs volume and its path. */
async function restoreCt(e: BackupEnv, volid: string, vmid: number) {
  const r = await volt(["restore", volid, String(vmid), "--storage", "local"], { env: e.env });
  assert.equal(r.code, 0, `volt restore failed: ${r.stderr}`);
  const m = /^rootfs=(local:\S+)$/.exec(r.stdout.trim());
  assert.ok(m, r.stdout);
  const p = await volt(["path", m[1]], { env: e.env });
  assert.equal(p.code, 0, p.stderr);
  return { rootfs: m[1], path: p.stdout.trim(), stderr: r.stderr };
}

/** The directory of a backup volume id. */
async function backupDir(e: BackupEnv, volid: string): Promise<string> {
  const p = await volt(["path", volid], { env: e.env });
  assert.equal(p.code, 0, p.stderr);
  return p.stdout.trim();
}

/** What the listing of the acceptance tree must show, so a broken tree cannot compare equal. */
function assertTreeFeatures(list: TreeEntry[], { acls }: { acls: boolean }) {
  const at = (path: string) => list.find((e) => e.path === path)!;
  assert.equal(at(".").uid, 100000);
  assert.equal(at("usr/bin/sudo").mode, "4755");
  assert.equal(at("usr/bin/wall").mode, "2755");
  assert.equal(at("tmp").mode, "1777");
  assert.equal(at("etc/shadow").gid, 100042);
  assert.equal(at("home/user/.config/settings").uid, 101000);
  assert.equal(at("usr/bin/sh").target, "busybox");
  assert.equal(at("etc/localtime").target, "/usr/share/zoneinfo/Europe/Vienna");
  assert.equal(at("etc/passwd.hardlink").hardLink, "etc/passwd");
  assert.deepEqual(at("usr/bin/busybox").xattrs, { "user.checksum": "0x00ff10" });
  const disk = at("var/lib/images/disk.raw");
  assert.equal(disk.size, GiB);
  assert.equal(disk.sparse, true);
  if (acls) {
    assert.ok(at("srv/shared").acl?.includes("user:101000:rwx"));
    assert.ok(at("srv/shared").acl?.includes("default:user:101000:rwx"));
    assert.ok(at("srv/shared/report.txt").acl?.includes("user:101000:rw-"));
  }
}

/** The backup's archive lists no excluded path and every other path of the tree. */
async function assertArchiveMembers(
  format: "tar" | "squashfs",
  archive: string,
  before: TreeEntry[],
) {
  const members = await archiveMembers(format, archive);
  for (const x of EXCLUDED) {
    assert.ok(!members.some((m) => m === x || m.startsWith(`${x}/`)), `${x} is in the archive`);
  }
  assert.deepEqual(
    members.sort(),
    before.filter((e) => !isExcluded(e.path)).map((e) => e.path).sort(),
  );
}

Deno.test({
  name: "tar: a container tree backs up and restores identically; excluded paths are not archived",
  ignore: !isRoot,
  async fn() {
    await using tmp = new TempDir();
    const { e, rootfs, args } = await containerEnv(tmp, { sparse: true });
    const before = await treeListing(rootfs);
    const excludes = EXCLUDES.flatMap((x) => ["--exclude", x]);
    const volid = await backupCt(e, 100, [
      ...args("backup", excludes),
      "--firewall",
      tmp.join("fw.conf"),
    ]);

    // The backup: configurations, a GNU tar archive without the excluded paths, a manifest.
    const dir = await backupDir(e, volid);
    assert.deepEqual(await dirNames(dir), [
      "archive.tar",
      "backup.log",
      "firewall.conf",
      "guest.conf",
      "manifest.json",
    ]);
    assert.equal(await Deno.readTextFile(`${dir}/guest.conf`), CT_CONF);
    assert.equal(await Deno.readTextFile(`${dir}/firewall.conf`), FIREWALL);
    const manifest = parseManifest(await Deno.readTextFile(`${dir}/manifest.json`), "m");
    assert.equal(manifest.type, "lxc");
    assert.deepEqual(manifest.archive, { file: "archive.tar", format: "tar" });
    assert.deepEqual(manifest.devices, {});
    assert.deepEqual(manifest.files.map((f) => f.name), [
      "archive.tar",
      "firewall.conf",
      "guest.conf",
    ]);
    await assertArchiveMembers("tar", `${dir}/archive.tar`, before);
    assert.ok((await Deno.stat(`${dir}/archive.tar`)).size < 1024 * 1024, "holes are archived");
    // previous-info belongs to VM bitmaps: a container backup does not write it.
    assert.deepEqual(await dirNames(`${e.backupRoot}/100`), [".lock", volid.split("/")[2]]);

    // Restored: identical to the source without the excluded paths.
    const { rootfs: newVolid, path } = await restoreCt(e, volid, 200);
    assert.equal(newVolid, "local:200/subvol-200-disk-0.subvol");
    assert.equal(path, `${e.home}/images/200/subvol-200-disk-0.subvol`);
    const after = await treeListing(path);
    assert.deepEqual(after, before.filter((x) => !isExcluded(x.path)));
    assertTreeFeatures(after, { acls: true });
    assert.ok(after.some((x) => x.path === "srv/app/var/log/app.log"), "only /var/log is anchored");

    // The configuration points at the new subvolume; the original's volumes are commented out.
    assert.equal(
      await Deno.readTextFile(`${e.home}/lxc/200.conf`),
      "arch: amd64\nhostname: ct100\nmemory: 512\n" +
        `rootfs: ${newVolid},size=8G\n` +
        "#mp0: local:100/subvol-100-disk-1.subvol,mp=/data,backup=1\nmp1: /srv/shared,mp=/shared\n" +
        "unprivileged: 1\n",
    );
    assert.equal(await Deno.readTextFile(`${e.home}/firewall/200.fw`), FIREWALL);

    // Listed as a container backup; verified.
    const listed = (await listVolumes(e)).find((v) => v.volid === volid);
    assert.equal(listed?.subtype, "lxc");
    assert.equal(listed?.vmid, 100);
    const text = await volt(["list", "backup"], { env: e.env });
    assert.match(text.stdout, new RegExp(`^${volid}\\s+directory\\s+backup/lxc\\s`, "m"));
    const verified = await volt(["verify", volid], { env: e.env });
    assert.equal(verified.code, 0, verified.stderr);
    assert.match(verified.stderr, /verified: 3 files .*no problem found/);

    // A second restore of the same backup as the same guest: refused, nothing allocated.
    const again = await volt(["restore", volid, "200", "--storage", "local"], { env: e.env });
    assert.equal(again.code, 1);
    assert.match(again.stderr.trim(), /^volt: '.*\/lxc\/200\.conf' exists \(guest 200 has a/);
    assert.deepEqual(await dirNames(`${e.home}/images/200`), ["subvol-200-disk-0.subvol"]);
  },
});

Deno.test({
  name: "squashfs: a container tree restores identically except ACLs, which squashfs cannot hold",
  ignore: !isRoot,
  async fn() {
    await using tmp = new TempDir();
    const { e, rootfs, args } = await containerEnv(tmp, { sparse: true });
    const before = await treeListing(rootfs);
    const excludes = EXCLUDES.flatMap((x) => ["--exclude", x]);
    const backup = await volt(["backup", "100", ...args("sqfs", excludes)], { env: e.env });
    assert.equal(backup.code, 0, backup.stderr);
    const volid = backup.stdout.trim();
    assert.match(volid, /^sqfs:backup\/100\/lxc-\d+$/);
    // mksquashfs says it leaves the ACLs out; volt passes that on as a warning.
    assert.match(backup.stderr, /warning: mksquashfs: .*system\.posix_acl_access/);

    const dir = await backupDir(e, volid);
    assert.deepEqual(
      (await dirNames(dir)).filter((n) => n.startsWith("archive")),
      ["archive.sqfs"],
    );
    const manifest = parseManifest(await Deno.readTextFile(`${dir}/manifest.json`), "m");
    assert.deepEqual(manifest.archive, { file: "archive.sqfs", format: "squashfs" });
    await assertArchiveMembers("squashfs", `${dir}/archive.sqfs`, before);

    // Restored through the directory mechanism (unpacked by the provider, copied by volt).
    const { path, stderr } = await restoreCt(e, volid, 300);
    assert.match(
      stderr,
      /rootfs: restoring into local:300\/subvol-300-disk-0\.subvol \(directory\)/,
    );
    const after = await treeListing(path);
    // squashfs has no place for POSIX ACLs: everything else must be identical (a file with an
    // ACL keeps its mode bits, whose group bits are the ACL's mask).
    assert.deepEqual(after, withoutAcls(before.filter((x) => !isExcluded(x.path))));
    assertTreeFeatures(after, { acls: false });
    // The provider's unpacked copy is gone again.
    assert.deepEqual(
      (await dirNames(tmp.join("sqfs"))).filter((n) => n.startsWith(".tmp")),
      [],
    );
    const verified = await volt(["verify", volid], { env: e.env });
    assert.equal(verified.code, 0, verified.stderr);
  },
});

Deno.test({
  name:
    "a squashfs restore killed outright leaves its unpack directory; the next restore removes it",
  ignore: !isRoot,
  async fn() {
    await using tmp = new TempDir();
    const { e, volid } = await oneFileBackup(tmp, "sqfs", 64 * 1024);
    const leftovers = async () =>
      (await dirNames(tmp.join("sqfs"))).filter((n) => n.startsWith(".tmp-restore-"));

    const killed = await volt(["restore", volid, "300", "--storage", "local"], {
      env: { ...e.env, VOLT_FAULT_POINT: "restore-unpacked" },
    });
    assert.notEqual(killed.code, 0);
    const left = await leftovers();
    assert.equal(left.length, 1, "kill -9 runs no cleanup: the unpacked copy stays");
    assert.match(left[0], new RegExp(`^\\.tmp-restore-100-\\d+-\\d+-`));

    const { path, stderr } = await restoreCt(e, volid, 301);
    assert.match(
      stderr,
      new RegExp(`removing '${left[0]}', left by a restore that was killed \\(pid \\d+\\)`),
    );
    assert.deepEqual(await leftovers(), []);
    assert.equal((await Deno.stat(`${path}/data.bin`)).size, 64 * 1024);
  },
});

Deno.test({
  name: "verify finds a flipped byte in archive.tar; a restore that fails frees its subvolume",
  ignore: !isRoot,
  async fn() {
    await using tmp = new TempDir();
    const { e, volid } = await oneFileBackup(tmp, "backup", 256 * 1024);
    const archive = `${await backupDir(e, volid)}/archive.tar`;
    const ok = await volt(["verify", volid], { env: e.env });
    assert.equal(ok.code, 0, ok.stderr);

    const size = (await Deno.stat(archive)).size;
    await flipByte(archive, Math.floor(size / 2));
    const bad = await volt(["verify", volid], { env: e.env });
    assert.equal(bad.code, 1);
    assert.match(
      bad.stderr.trim().split("\n").at(-1)!,
      new RegExp(
        `^volt: backup ${volid} failed verification: archive\\.tar does not match its checksum`,
      ),
    );

    // A cut-off archive: tar fails half way, the new subvolume is freed, no configuration.
    await Deno.truncate(archive, Math.floor(size / 3));
    const r = await volt(["restore", volid, "200", "--storage", "local"], { env: e.env });
    assert.equal(r.code, 1);
    const last = r.stderr.trim().split("\n").at(-1)!;
    assert.match(
      last,
      new RegExp(`^volt: restore of ${volid} failed: extracting .* failed: tar: `),
    );
    assert.deepEqual(await dirNames(`${e.home}/images/200`), []);
    assert.deepEqual(await dirNames(`${e.home}/lxc`), []);
  },
});

Deno.test({
  name: "a failed or interrupted container backup leaves nothing but its log",
  ignore: !isRoot,
  async fn() {
    await using tmp = new TempDir();
    const { e, rootfs, args } = await containerEnv(tmp, undefined);

    // A directory that does not exist: one line, before the provider was asked for anything.
    const missing = await volt([
      "backup",
      "100",
      ...args("backup").map((a) => (a === rootfs ? tmp.join("nowhere") : a)),
    ], { env: e.env });
    assert.equal(missing.code, 1);
    assert.equal(
      missing.stderr.trim(),
      `volt: container directory '${tmp.join("nowhere")}' does not exist`,
    );
    assert.deepEqual(await dirNames(e.backupRoot), []);

    // A provider that fails in backupContainer: the same lifecycle as for VMs, cleanups ran.
    const throwing = tmp.join("throwing");
    await Deno.writeTextFile(
      e.env.VOLT_CONFIG,
      `${await Deno.readTextFile(e.env.VOLT_CONFIG)}\n` +
        `throwing-backup: tb\n\tpath ${throwing}\n\tcontent backup\n`,
    );
    const failed = await volt(["backup", "100", ...args("tb"), "--plugin", THROWING], {
      env: { ...e.env, THROW_IN: "backupContainer" },
    });
    assert.equal(failed.code, 1);
    assert.equal(
      failed.stderr.trim().split("\n").at(-1),
      "volt: backup of guest 100 failed: provider exploded on purpose in backupContainer",
    );
    assert.deepEqual((await Deno.readTextFile(`${throwing}/calls.log`)).trim().split("\n"), [
      "jobInit",
      "backupInit",
      "backupGetMechanism",
      "backupContainerPrepare",
      "backupContainer",
      "backupCleanup success=false",
      "backupHandleLogFile",
      "jobCleanup",
    ]);
    assert.deepEqual(await dirNames(`${throwing}/100`), [".lock", "last-failed-backup.log"]);

    // Interrupted while tar runs (4 MiB at 64 KiB/s): the working directory is removed.
    await writeWithMode(`${rootfs}/big.bin`, randomBytes(4 << 20));
    const [cmd, ...pre] = voltCommand();
    const child = new Deno.Command(cmd, {
      args: [...pre, "backup", "100", ...args("backup", ["--bwlimit", "64"])],
      env: { NO_COLOR: "1", ...e.env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = child.output();
    const guest = `${e.backupRoot}/100`;
    for (let i = 0;; i++) {
      const work = (await dirNames(guest)).find((n) => n.startsWith(".tmp-lxc-"));
      if (work && (await dirNames(`${guest}/${work}`)).includes("archive.tar")) break;
      assert.ok(i < 400, "the backup never started archiving");
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill("SIGTERM");
    const out = await output;
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 1, stderr);
    assert.match(
      stderr.trim().split("\n").at(-1)!,
      /^volt: backup of guest 100 interrupted by SIGTERM/,
    );
    assert.deepEqual(await dirNames(guest), [".lock", "last-failed-backup.log"]);
    assert.deepEqual(await listVolumes(e), []);
  },
});

Deno.test({
  name: "restore refuses a VM backup as a container and a container backup as a VM",
  ignore: !isRoot,
  async fn() {
    await using tmp = new TempDir();
    const { e, cfg, rootfs, args } = await containerEnv(tmp, undefined);
    await Deno.writeTextFile(`${rootfs}/hello`, "hi\n");
    const ct = await backupCt(e, 100, args("backup"));
    const disk = tmp.join("disk.raw");
    await sh("qemu-img", ["create", "-q", "-f", "raw", disk, "1M"]);
    await Deno.writeTextFile(tmp.join("vm.conf"), "memory: 512\n");
    const vm = await volt(
      ["backup", "101", "--disk", `scsi0=${disk}`, "--config", tmp.join("vm.conf")],
      { env: e.env },
    );
    assert.equal(vm.code, 0, vm.stderr);
    const vmVolid = vm.stdout.trim();

    const storages = await Storages.open({ configPath: cfg });
    const common = { storages, storage: "local", configOut: tmp.join("out.conf") };
    await assert.rejects(
      runContainerRestore({ ...common, backup: vmVolid, vmid: 200 }),
      new RegExp(`'${vmVolid}' is a VM backup, not a container backup`),
    );
    await assert.rejects(
      runRestore({ ...common, backup: ct, vmid: 200 }),
      new RegExp(`'${ct}' is a container backup, not a VM backup`),
    );

    // Through the CLI: a storage without container file systems, --format for a container.
    const isos = await volt(["restore", ct, "200", "--storage", "isos"], { env: e.env });
    assert.equal(isos.code, 1);
    assert.equal(
      isos.stderr.trim(),
      "volt: storage 'isos' does not hold container file systems (content iso): " +
        "choose one with content rootdir",
    );
    const format = await volt(["restore", ct, "200", "--storage", "local", "--format", "raw"], {
      env: e.env,
    });
    assert.equal(format.code, 1);
    assert.match(format.stderr.trim(), /^volt: --format is for VM backups: '.*' is a container/);
    assert.deepEqual(await dirNames(`${e.home}/images`), []);
    assert.deepEqual(await dirNames(`${e.home}/lxc`), []);
    await Deno.stat(tmp.join("out.conf")).then(
      () => assert.fail("a configuration was written"),
      () => {},
    );
  },
});

Deno.test({
  name: "container backup options: clear usage errors, and a provider without containers",
  ignore: !isRoot,
  async fn() {
    await using tmp = new TempDir();
    const { e, rootfs, args } = await containerEnv(tmp, undefined);
    const conf = tmp.join("ct.conf");
    const cases: [string[], RegExp][] = [
      [["--type", "vm", "--directory", rootfs], /^volt: --type: 'vm' is not one of qemu, lxc$/],
      [
        ["--directory", rootfs],
        /^volt backup: --directory is for containers \(--type lxc\)$/,
      ],
      [["--exclude", "*.tmp", "--disk", "scsi0=/x.raw"], /--exclude is for containers/],
      [["--type", "lxc", "--directory", rootfs, "--disk", "scsi0=/x.raw"], /--disk is for VMs/],
      [["--type", "lxc", "--directory", rootfs, "--mode", "full"], /--mode is for VMs/],
      [["--type", "lxc"], /--type lxc needs --directory DIR/],
      [
        ["--type", "lxc", "--directory", rootfs, "--exclude", "/"],
        /^volt: --exclude: exclude pattern '\/' is empty or excludes everything$/,
      ],
    ];
    for (const [extra, message] of cases) {
      const r = await volt(["backup", "100", "--config", conf, ...extra], { env: e.env });
      assert.equal(r.code, 2, `${extra.join(" ")}: ${r.stderr}`);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.match(r.stderr.trim(), message);
    }

    // The example provider backs up VMs only: refused before any of its methods is called.
    await Deno.writeTextFile(
      e.env.VOLT_CONFIG,
      `dir: local\n\tpath ${e.home}\n\nzstd-backup: zbk\n\tpath ${tmp.join("zbk")}\n`,
    );
    const r = await volt(["backup", "100", ...args("zbk"), "--plugin", VM_ONLY_PROVIDER], {
      env: e.env,
    });
    assert.equal(r.code, 1);
    assert.match(
      r.stderr.trim(),
      /^volt: the provider of storage 'zbk' \(.*\) does not back up containers: it has no backupContainer$/,
    );
    assert.deepEqual(await dirNames(tmp.join("zbk")), []);
    assert.deepEqual(await dirNames(e.backupRoot), []);
  },
});

Deno.test("a container manifest has one listed archive, no devices and no parent", () => {
  const digest = `sha256-64m:${"a".repeat(64)}`;
  const base = {
    format: "volt-backup",
    version: 1,
    type: "lxc",
    vmid: 100,
    time: 5,
    devices: {},
    archive: { file: "archive.sqfs", format: "squashfs" },
    files: [{ name: "archive.sqfs", size: 1, digest }],
  };
  const parse = (m: unknown) => parseManifest(JSON.stringify(m), "m");
  assert.deepEqual(parse(base).archive, { file: "archive.sqfs", format: "squashfs" });
  assert.throws(() => parse({ ...base, archive: undefined }), /container backup has no archive/);
  assert.throws(
    () => parse({ ...base, archive: { file: "archive.tar", format: "squashfs" } }),
    /archive file is not 'archive.sqfs'/,
  );
  assert.throws(() => parse({ ...base, archive: { ...base.archive, format: "zip" } }), /'zip'/);
  assert.throws(() => parse({ ...base, files: [] }), /archive is not in the file list/);
  assert.throws(() => parse({ ...base, parent: "qemu-4" }), /container backup has a parent/);
  assert.throws(
    () =>
      parse({
        ...base,
        devices: { scsi0: { file: "scsi0.qcow2", size: 1, kind: "full", clusterSize: 65536 } },
        files: [...base.files, { name: "scsi0.qcow2", size: 1, digest }],
      }),
    /container backup has devices/,
  );
  assert.throws(() => parse({ ...base, type: "qemu" }), /VM backup has an archive/);
  assert.throws(() => parse({ ...base, type: "openvz" }), /type 'openvz' is not 'qemu' or 'lxc'/);
});

Deno.test("the restored container configuration points rootfs at the new subvolume", () => {
  const conf = "arch: amd64\r\nrootfs: old:100/subvol-100-disk-0.subvol,size=8G,quota=1\r\n" +
    "mp0: old:100/subvol-100-disk-1.subvol,mp=/data\r\nmp1: /srv/x,mp=/x\r\n" +
    "unused0: old:100/subvol-100-disk-2.subvol\r\nlxc.apparmor.profile: unconfined\r\n" +
    "parent: before\r\n\r\n[before]\r\nrootfs: old:100/subvol-100-disk-0.subvol\r\n";
  assert.equal(
    rewriteContainerConfig(conf, "local:200/subvol-200-disk-0.subvol"),
    "arch: amd64\r\nrootfs: local:200/subvol-200-disk-0.subvol,size=8G,quota=1\r\n" +
      "#mp0: old:100/subvol-100-disk-1.subvol,mp=/data\r\nmp1: /srv/x,mp=/x\r\n" +
      "#unused0: old:100/subvol-100-disk-2.subvol\r\nlxc.apparmor.profile: unconfined\r\n",
  );
  // Without a rootfs line, one is added.
  assert.equal(
    rewriteContainerConfig("hostname: ct\n", "local:200/subvol-200-disk-0.subvol"),
    "hostname: ct\nrootfs: local:200/subvol-200-disk-0.subvol\n",
  );
});
