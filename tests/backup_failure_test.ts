/**
 * Backups that fail: the NBD server killed mid-copy, volt interrupted mid-copy, a provider
 * that throws; each leaves nothing listed, no working directory, the dirty bitmap as it was,
 * and the next incremental still correct. Plus the bandwidth limit and bad input.
 */

import assert from "node:assert/strict";
import {
  addBitmap,
  createImage,
  imagesEqual,
  nbdinfoMap,
  qemuIo,
  startQemuNbd,
  startStorageDaemon,
} from "./helpers/nbd_server.ts";
import {
  backup,
  backupEnv,
  backupOk,
  dirNames,
  imageBitmaps,
  listVolumes,
  oneDiskGuest,
  restoreOk,
  snapshotFile,
} from "./helpers/backup.ts";
import { sh, spawnVolt, TempDir, volt } from "./helpers/volt.ts";

const MiB = 1024 * 1024;
const FIXTURE = new URL("./fixtures/throwing_backup.ts", import.meta.url).pathname;

/** Starts `volt backup args…` and waits until it is copying. */
async function backupCopying(env: Record<string, string>, args: string[]) {
  const run = spawnVolt(["backup", ...args], { env });
  assert.ok(await run.waitFor(/scsi0: .* of /, 20_000), `not copying; stderr: ${run.stderr()}`);
  return run;
}

/** The dirty map of a bitmap, read through a read-only qemu-nbd. */
async function dirtyMap(image: string, bitmap: string) {
  await using server = await startQemuNbd(image, { readOnly: true, bitmap });
  return await nbdinfoMap(server.uri, `qemu:dirty-bitmap:${bitmap}`);
}

function tempDirs(names: string[]): string[] {
  return names.filter((n) => n.startsWith(".tmp"));
}

Deno.test("the NBD server killed mid-backup: cleanup ran, nothing listed, bitmap unchanged, next incremental correct", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  const img = tmp.join("live.qcow2");
  await createImage(img, 64 * MiB);
  await qemuIo(img, ["write -P 0x11 0 4M"]);
  await addBitmap(img, "b0");
  await Deno.writeTextFile(tmp.join("guest.conf"), "memory: 1024\n");
  const args = (uri: string) => [
    "100",
    "--disk",
    `scsi0=${uri}`,
    "--bitmap",
    "b0",
    "--config",
    tmp.join("guest.conf"),
  ];
  let v1: string;
  {
    await using server = await startStorageDaemon(img, { bitmaps: ["b0"] });
    v1 = await backupOk(e, 100, args(server.uri).slice(1));
  }
  // The bitmap's owner resets it after the committed backup; then the guest writes.
  await sh("qemu-img", ["bitmap", "--clear", img, "b0"]);
  await qemuIo(img, ["write -P 0x22 8M 24M", "write -z 0 64k"]);
  await snapshotFile(img, tmp.join("expected.qcow2"));
  const bitmapsBefore = await imageBitmaps(img);
  const mapBefore = await dirtyMap(img, "b0");

  {
    await using server = await startStorageDaemon(img, { bitmaps: ["b0"] });
    const run = await backupCopying(e.env, [...args(server.uri), "--bwlimit", "4096"]);
    await new Promise((r) => setTimeout(r, 500));
    server.kill("SIGKILL");
    const r = await run.done();
    assert.equal(r.code, 1, r.stderr);
    const last = r.stderr.trim().split("\n").at(-1)!;
    assert.match(last, /^volt: backup of guest 100 failed: /);
    assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack trace");
    assert.match(r.stderr, /removed its working directory/, "the provider's cleanup ran");
  }
  assert.deepEqual((await listVolumes(e)).map((v) => v.volid), [v1]);
  const names = await dirNames(`${e.backupRoot}/100`);
  assert.deepEqual(tempDirs(names), []);
  assert.ok(names.includes("last-failed-backup.log"));
  assert.deepEqual(await imageBitmaps(img), bitmapsBefore);
  assert.deepEqual(await dirtyMap(img, "b0"), mapBefore);

  await using server = await startStorageDaemon(img, { bitmaps: ["b0"] });
  const v2 = await backupOk(e, 100, args(server.uri).slice(1));
  const listed = await listVolumes(e);
  assert.equal(listed.at(-1)!.parent, v1);
  assert.ok(listed.at(-1)!.size < 30 * MiB);
  const restored = await restoreOk(e, v2, 200);
  assert.ok(await imagesEqual(restored.scsi0, "raw", tmp.join("expected.qcow2"), "qcow2"));
});

Deno.test("volt interrupted mid-backup of an offline qcow2: its bitmap is untouched, the next incremental is correct", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  const { img, args } = await oneDiskGuest(tmp, 64 * MiB, ["write -P 0x11 0 2M"], "memory: 1024\n");
  const v1 = await backupOk(e, 100, args);
  await qemuIo(img, ["write -P 0x33 4M 24M"]);
  await snapshotFile(img, tmp.join("expected.qcow2"));
  const bitmapsBefore = await imageBitmaps(img);
  assert.deepEqual(Object.keys(bitmapsBefore), ["volt-backup"]);
  const mapBefore = await dirtyMap(img, "volt-backup");

  const run = await backupCopying(e.env, ["100", ...args, "--bwlimit", "4096"]);
  run.child.kill("SIGTERM");
  const r = await run.done();
  assert.equal(r.code, 1, r.stderr);
  assert.match(
    r.stderr.trim().split("\n").at(-1)!,
    /^volt: backup of guest 100 interrupted by SIGTERM/,
  );
  assert.deepEqual((await listVolumes(e)).map((v) => v.volid), [v1]);
  assert.deepEqual(tempDirs(await dirNames(`${e.backupRoot}/100`)), []);
  assert.deepEqual(await imageBitmaps(img), bitmapsBefore, "no pending bitmap left behind");
  assert.deepEqual(await dirtyMap(img, "volt-backup"), mapBefore);

  const v2 = await backupOk(e, 100, args);
  const restored = await restoreOk(e, v2, 200);
  assert.ok(await imagesEqual(restored.scsi0, "raw", tmp.join("expected.qcow2"), "qcow2"));
  assert.equal((await listVolumes(e)).at(-1)!.parent, v1);
});

/** A configuration with `local` and the test plugin's storage `tb`. */
async function throwingEnv(tmp: TempDir) {
  const e = backupEnv(tmp);
  const cfg = tmp.join("storage.cfg");
  await Deno.writeTextFile(
    cfg,
    `dir: local\n\tpath ${e.home}\n\tcontent images\n\nthrowing-backup: tb\n\tpath ${
      tmp.join("tb")
    }\n`,
  );
  e.env.VOLT_CONFIG = cfg;
  const img = tmp.join("disk.qcow2");
  await createImage(img, 16 * MiB);
  await qemuIo(img, ["write -P 0x44 0 1M"]);
  await Deno.writeTextFile(tmp.join("guest.conf"), "memory: 1024\n");
  const args = [
    "--storage",
    "tb",
    "--disk",
    `scsi0=${img}`,
    "--config",
    tmp.join("guest.conf"),
    "--plugin",
    FIXTURE,
  ];
  return { e, img, args };
}

Deno.test("a provider that throws in backupVm: the job fails with its message, every cleanup ran", async () => {
  await using tmp = new TempDir();
  const { e, img, args } = await throwingEnv(tmp);
  const r = await backup(e, 100, args);
  assert.equal(r.code, 1);
  const last = r.stderr.trim().split("\n").at(-1);
  assert.equal(
    last,
    "volt: backup of guest 100 failed: provider exploded on purpose in backupVm",
  );
  assert.doesNotMatch(r.stderr, /^\s+at /m);
  const calls = (await Deno.readTextFile(tmp.join("tb/calls.log"))).trim().split("\n");
  assert.deepEqual(calls, [
    "jobInit",
    "backupInit",
    "backupGetMechanism",
    "backupVmQueryIncremental",
    "backupVm",
    "backupCleanup success=false",
    "backupHandleLogFile",
    "jobCleanup",
  ]);
  const l = await volt(["list", "tb", "--plugin", FIXTURE, "--output-format", "json"], {
    env: e.env,
  });
  assert.equal(l.code, 0, l.stderr);
  assert.deepEqual(JSON.parse(l.stdout), []);
  assert.deepEqual(tempDirs(await dirNames(tmp.join("tb/100"))), []);
  assert.deepEqual(await imageBitmaps(img), {}, "no bitmap was created or left pending");
});

Deno.test("a provider whose backupCleanup throws: the job fails and the bitmap is not consumed", async () => {
  await using tmp = new TempDir();
  const { e, img, args } = await throwingEnv(tmp);
  e.env.THROW_IN = "backupCleanup";
  const r = await backup(e, 100, args);
  assert.equal(r.code, 1);
  assert.equal(
    r.stderr.trim().split("\n").at(-1),
    "volt: backup of guest 100 failed: provider exploded on purpose in backupCleanup",
  );
  const calls = (await Deno.readTextFile(tmp.join("tb/calls.log"))).trim().split("\n");
  assert.deepEqual(calls.slice(-3), [
    "backupCleanup success=true",
    "backupHandleLogFile",
    "jobCleanup",
  ]);
  assert.deepEqual(await imageBitmaps(img), {});
  // The next backup sweeps the working directory the broken cleanup left.
  e.env.THROW_IN = "nothing";
  const ok = await backup(e, 100, args);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stderr, /removing '\.tmp-qemu-\d+', left by an interrupted backup/);
  assert.deepEqual(Object.keys(await imageBitmaps(img)), ["volt-tb"]);
});

Deno.test("--bwlimit 10240 on a 50 MiB copy takes at least 4 s", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  const { args } = await oneDiskGuest(tmp, 64 * MiB, ["write -P 0x5a 0 50M"], "memory: 1024\n");
  const t0 = performance.now();
  await backupOk(e, 100, [
    ...args,
    "--bwlimit",
    "10240",
  ]);
  const seconds = (performance.now() - t0) / 1000;
  assert.ok(seconds >= 4, `took ${seconds.toFixed(2)} s`);
});

Deno.test("bad backup input gets one clear line and the right exit code", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  const img = tmp.join("disk.qcow2");
  await createImage(img, 4 * MiB);
  const conf = tmp.join("guest.conf");
  await Deno.writeTextFile(conf, "memory: 1024\n");
  await Deno.writeFile(
    tmp.join("latin1.conf"),
    new Uint8Array([0x6e, 0x61, 0x6d, 0x65, 0xe9, 0x0a]),
  );
  await Deno.writeFile(tmp.join("disk.bin"), new Uint8Array(4096));
  const cases: [string[], number, RegExp][] = [
    [["--config", conf], 2, /give at least one --disk/],
    [["--disk", `scsi0=${img}`], 2, /--config FILE is required/],
    [["--disk", `scsi0=${tmp.join("nope.qcow2")}`, "--config", conf], 1, /does not exist/],
    [["--disk", `scsi0=${tmp.join("disk.bin")}`, "--config", conf], 2, /add ',format=raw'/],
    [["--disk", `scsi0=${img}`, "--config", conf, "--storage", "local"], 1, /not a backup storage/],
    [["--disk", `scsi0=${img}`, "--config", tmp.join("latin1.conf")], 1, /is not UTF-8/],
    [["--disk", `scsi0=${img}`, "--disk", `scsi0=${img}`, "--config", conf], 1, /given twice/],
    [["--disk", `scsi0=${img}`, "--config", conf, "--mode", "weird"], 2, /--mode/],
    [["--disk", `../x=${img}`, "--config", conf], 2, /not a device name/],
    [["--disk", `scsi0=${img}`, "--config", conf, "--storage", "nope"], 1, /does not exist/],
  ];
  for (const [args, code, re] of cases) {
    const r = await backup(e, 100, args);
    assert.equal(r.code, code, `${args.join(" ")}: ${r.stderr}`);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, `${args.join(" ")}: ${r.stderr}`);
    assert.match(lines[0], /^volt( backup)?: /); // usage errors name the command
    assert.doesNotMatch(lines[0], /^volt: volt /);
    assert.match(lines[0], re);
  }
  assert.deepEqual(await listVolumes(e), []);
});

Deno.test("a --force restore that cannot write the firewall configuration keeps the existing configurations and frees its volumes", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  const { args } = await oneDiskGuest(tmp, 4 * MiB, [], "memory: 1024\nscsi0: local:100/x.qcow2\n");
  await Deno.writeTextFile(tmp.join("fw.conf"), "[OPTIONS]\nenable: 1\n");
  const volid = await backupOk(e, 100, [
    ...args,
    "--firewall",
    tmp.join("fw.conf"),
  ]);
  const config = tmp.join("etc/200.conf");
  await Deno.mkdir(tmp.join("etc"));
  await Deno.writeTextFile(config, "the old configuration\n");
  // The firewall's directory is a file: the second configuration cannot be written.
  await Deno.writeTextFile(tmp.join("fw"), "");
  const r = await volt([
    "restore",
    volid,
    "200",
    "--storage",
    "local",
    "--force",
    "--config-out",
    config,
    "--firewall-out",
    tmp.join("fw/200.fw"),
  ], { env: e.env });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr.trim().split("\n").at(-1)!, /^volt: restore of .* failed: .*fw/);
  assert.equal(await Deno.readTextFile(config), "the old configuration\n");
  assert.deepEqual(await dirNames(tmp.join("etc")), ["200.conf"]);
  assert.deepEqual(await listVolumes(e, "local"), []);
});
