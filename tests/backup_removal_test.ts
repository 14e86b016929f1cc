/**
 * Removing backups that others depend on (`volt free`; `plugins/backup_dir/remove_backup.ts`):
 * a chain full → inc1 → inc2 → inc3 of two small disks (scsi1 grows before inc1, so it is a
 * full image inside an incremental backup), built once per test through the CLI, with a copy
 * of each disk as it was at each backup. Every remaining backup must restore exactly that copy
 * and pass `volt verify` after each removal, after a removal killed (SIGKILL) at each of its
 * crash points, and after the removal is run again.
 */

import assert from "node:assert/strict";
import { imagesEqual, qemuIo } from "./helpers/nbd_server.ts";
import {
  type BackupEnv,
  backupEnv,
  backupOk,
  dirNames,
  listVolumes,
  restoreOk,
  snapshotFile,
} from "./helpers/backup.ts";
import { treeListing } from "./helpers/tree_listing.ts";
import { sh, TempDir, volt, voltCommand } from "./helpers/volt.ts";
import { readManifest, writeManifest } from "../lib/backup/manifest.ts";
import { OsCallError } from "../ffi/libc.ts";
import { exchangePaths, ExchangeUnsupportedError } from "../ffi/libc_rename.ts";
import {
  REMOVAL_FAULT_POINTS,
  type RemovalFaultPoint,
  removeBackups,
} from "../plugins/backup_dir/remove_backup.ts";

const MiB = 1024 * 1024;
const VMID = 100;

/** The disks written before each backup of the chain. */
const STEPS: { scsi0: string[]; scsi1: string[]; growScsi1?: number }[] = [
  { scsi0: ["write -P 0x11 0 3M", "write -P 0x12 40M 1M"], scsi1: ["write -P 0x21 0 1M"] },
  {
    growScsi1: 20 * MiB,
    scsi0: ["write -P 0x31 1M 1M", "write -z 40M 64k"],
    scsi1: ["write -P 0x41 17M 1M"],
  },
  { scsi0: ["write -P 0x51 8M 2M", "discard 0 64k"], scsi1: ["write -P 0x61 0 64k"] },
  { scsi0: ["write -P 0x71 60M 1M", "write -P 0x72 1536k 64k"], scsi1: [] },
];

/** A chain of four backups and the disks as each captured them. */
interface Chain {
  tmp: TempDir;
  /** The environment the chain was made in (its home is the template for the others). */
  e: BackupEnv;
  /** `qemu-<epoch>` of full, inc1, inc2, inc3. */
  names: string[];
  /** Backup name → device → the disk as it was at that backup. */
  disks: Map<string, Record<string, string>>;
  /** `volt backup` arguments for one more backup of the same disks. */
  backupArgs: string[];
}

async function buildChain(tmp: TempDir): Promise<Chain> {
  const e = backupEnv(tmp);
  const source = { scsi0: tmp.join("disk0.qcow2"), scsi1: tmp.join("disk1.qcow2") };
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", source.scsi0, String(64 * MiB)]);
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", source.scsi1, String(16 * MiB)]);
  await Deno.writeTextFile(
    tmp.join("guest.conf"),
    "scsi0: local:100/vm-100-disk-0.qcow2,size=64M\nscsi1: local:100/vm-100-disk-1.qcow2,size=16M\n",
  );
  const backupArgs = [
    "--disk",
    `scsi0=${source.scsi0}`,
    "--disk",
    `scsi1=${source.scsi1}`,
    "--config",
    tmp.join("guest.conf"),
  ];
  await Deno.mkdir(tmp.join("disks"));
  const names: string[] = [];
  const disks = new Map<string, Record<string, string>>();
  for (const [i, step] of STEPS.entries()) {
    if (step.growScsi1) {
      await sh("qemu-img", ["resize", "-q", "-f", "qcow2", source.scsi1, String(step.growScsi1)]);
    }
    await qemuIo(source.scsi0, step.scsi0);
    await qemuIo(source.scsi1, step.scsi1);
    const copies: Record<string, string> = {};
    for (const [dev, path] of Object.entries(source)) {
      copies[dev] = tmp.join("disks", `b${i}-${dev}.qcow2`);
      await snapshotFile(path, copies[dev]);
    }
    const name = (await backupOk(e, VMID, backupArgs)).split("/").at(-1)!;
    names.push(name);
    disks.set(name, copies);
  }
  const manifests = await Promise.all(names.map((n) => readManifest(guestPath(e, n))));
  assert.deepEqual(manifests.map((m) => m.parent), [undefined, ...names.slice(0, 3)]);
  assert.equal(manifests[1].devices.scsi1.kind, "full", "scsi1 grew: a full image in inc1");
  return { tmp, e, names, disks, backupArgs };
}

function volid(name: string): string {
  return `backup:backup/${VMID}/${name}`;
}

function guestPath(e: BackupEnv, name = ""): string {
  return `${e.backupRoot}/${VMID}${name ? `/${name}` : ""}`;
}

/** A copy of the environment `from` (its whole volt home) as `<tmp>/<label>/home`. */
async function cloneEnv(chain: Chain, from: BackupEnv, label: string): Promise<BackupEnv> {
  const base = chain.tmp.join(label);
  await Deno.mkdir(base);
  const home = `${base}/home`;
  await sh("cp", ["-a", from.home, home]);
  return {
    tmp: chain.tmp,
    env: { ...from.env, VOLT_HOME: home },
    home,
    backupRoot: `${home}/backup`,
  };
}

let nextVmid = 200;

/**
 * The listing holds at least `after` and at most `before` (in chain order), and each listed
 * backup restores exactly the disks it captured and verifies.
 */
async function assertRestoresExactly(
  e: BackupEnv,
  chain: Chain,
  after: string[],
  before = after,
): Promise<string[]> {
  const listed = (await listVolumes(e)).map((v) => v.volid.split("/").at(-1)!);
  const what = `listed: ${listed.join(" ")}`;
  for (const name of after) assert.ok(listed.includes(name), `${name} is missing; ${what}`);
  for (const name of listed) assert.ok(before.includes(name), `${name} is unexpected; ${what}`);
  for (const name of listed) {
    const expected = chain.disks.get(name)!;
    const restored = await restoreOk(e, volid(name), nextVmid++);
    assert.deepEqual(Object.keys(restored).sort(), Object.keys(expected).sort());
    for (const [dev, copy] of Object.entries(expected)) {
      assert.ok(
        await imagesEqual(restored[dev], "raw", copy, "qcow2"),
        `${name}: ${dev} does not restore to the disk it captured`,
      );
    }
    const v = await volt(["verify", volid(name)], { env: e.env });
    assert.equal(v.code, 0, `${name}: ${v.stderr}`);
  }
  return listed;
}

/**
 * The listing is exactly `names`, each verifies, and each has the manifest it has in
 * `reference` (a state checked with {@link assertRestoresExactly}): with the digests it lists,
 * the same files, so the same disks.
 */
async function assertSameBackups(
  e: BackupEnv,
  reference: BackupEnv,
  names: string[],
  what: string,
): Promise<void> {
  const listed = (await listVolumes(e)).map((v) => v.volid.split("/").at(-1)!);
  assert.deepEqual(listed, names, what);
  for (const name of names) {
    const v = await volt(["verify", volid(name)], { env: e.env });
    assert.equal(v.code, 0, `${what}: ${name}: ${v.stderr}`);
    assert.deepEqual(
      await readManifest(guestPath(e, name)),
      await readManifest(guestPath(reference, name)),
      `${what}: ${name}`,
    );
  }
}

/** `volt free`, expected to succeed; returns its stderr. */
async function freeOk(e: BackupEnv, name: string): Promise<string> {
  const r = await volt(["free", volid(name)], { env: e.env });
  assert.equal(r.code, 0, `volt free ${name}: ${r.stderr}`);
  return r.stderr;
}

async function parentOf(e: BackupEnv, name: string): Promise<string | undefined> {
  return (await readManifest(guestPath(e, name))).parent;
}

/** Names in the guest directory that belong to unfinished operations. */
async function leftovers(e: BackupEnv): Promise<string[]> {
  return (await dirNames(guestPath(e))).filter((n) => n.startsWith(".tmp-"));
}

Deno.test("freeing inc1, then the full, then pruning to one: every remaining backup restores exactly", async () => {
  await using tmp = new TempDir();
  const chain = await buildChain(tmp);
  const { e, names } = chain;
  const [full, inc1, inc2, inc3] = names;
  await assertRestoresExactly(e, chain, names);

  // inc1: inc2 is merged with it and based on the full backup.
  const said = await freeOk(e, inc1);
  assert.match(said, new RegExp(`merging ${inc1} into ${inc2} \\(scsi0: .*, scsi1: .*\\)`));
  assert.match(said, new RegExp(`removed '${volid(inc1)}'`));
  assert.equal(await parentOf(e, inc2), full);
  const m2 = await readManifest(guestPath(e, inc2));
  assert.equal(m2.devices.scsi0.kind, "incremental");
  assert.equal(m2.devices.scsi0.backing, `../${full}/scsi0.qcow2`);
  assert.equal(m2.devices.scsi1.kind, "full", "inc1 held scsi1 in full");
  assert.equal(await parentOf(e, inc3), inc2);
  assert.deepEqual(await leftovers(e), []);
  await assertRestoresExactly(e, chain, [full, inc2, inc3]);
  assert.match(
    await Deno.readTextFile(`${guestPath(e, inc2)}/backup.log`),
    new RegExp(`${inc1} removed and merged into this backup; it is now based on ${full}\\n$`),
  );

  // The full backup: inc2 becomes a full backup.
  assert.match(await freeOk(e, full), new RegExp(`${inc2} is now a full backup`));
  assert.equal(await parentOf(e, inc2), undefined);
  assert.equal((await readManifest(guestPath(e, inc2))).devices.scsi0.kind, "full");
  await assertRestoresExactly(e, chain, [inc2, inc3]);

  // Down to one.
  const pruned = await volt(["prune", "backup", "--keep-last", "1"], { env: e.env });
  assert.equal(pruned.code, 0, pruned.stderr);
  assert.match(pruned.stderr, new RegExp(`merging ${inc2} into ${inc3} .*now a full backup`));
  assert.equal(await parentOf(e, inc3), undefined);
  await assertRestoresExactly(e, chain, [inc3]);
  assert.deepEqual(await dirNames(guestPath(e)), [".lock", "previous-info", inc3]);

  // The newest backup goes too: previous-info named it, so the next backup is a full one.
  await freeOk(e, inc3);
  assert.deepEqual(await dirNames(guestPath(e)), [".lock"]);
  const next = (await backupOk(e, VMID, chain.backupArgs)).split("/").at(-1)!;
  assert.equal(await parentOf(e, next), undefined);
  const m = await readManifest(guestPath(e, next));
  assert.deepEqual(Object.values(m.devices).map((d) => d.kind), ["full", "full"]);
  chain.disks.set(next, chain.disks.get(inc3)!); // No write since inc3.
  await assertRestoresExactly(e, chain, [next]);
});

/** A removal to kill: from which state, which backup, what must remain. */
interface KillScenario {
  label: string;
  from: BackupEnv;
  /** The backup removed. */
  free: string;
  /** The command that removes it (run again after the kill). */
  command: string[];
  before: string[];
  after: string[];
  /** The state the removal leads to when not killed. */
  reference: BackupEnv;
  points: readonly RemovalFaultPoint[];
}

Deno.test("a removal killed at any step leaves every backup restorable, and running it again finishes it", async () => {
  await using tmp = new TempDir();
  const chain = await buildChain(tmp);
  const [full, inc1, inc2, inc3] = chain.names;
  // The states of the first test: four backups; inc1 removed; the full one removed; one left.
  // Each restores exactly (checked there); a state reached after a kill must be the same.
  const s0 = chain.e;
  const s1 = await cloneEnv(chain, s0, "state1");
  await freeOk(s1, inc1);
  const s2 = await cloneEnv(chain, s1, "state2");
  await freeOk(s2, full);
  const s3 = await cloneEnv(chain, s2, "state3");
  await freeOk(s3, inc2); // What prune --keep-last 1 removes.
  const merging = REMOVAL_FAULT_POINTS.filter((p) => p !== "backup-remove:previous-info-removed");
  const scenarios: KillScenario[] = [
    {
      label: "free inc1",
      from: s0,
      free: inc1,
      command: ["free", volid(inc1)],
      before: [full, inc1, inc2, inc3],
      after: [full, inc2, inc3],
      reference: s1,
      points: merging,
    },
    {
      label: "free full",
      from: s1,
      free: full,
      command: ["free", volid(full)],
      before: [full, inc2, inc3],
      after: [inc2, inc3],
      reference: s2,
      points: merging,
    },
    {
      label: "prune to one",
      from: s2,
      free: inc2,
      command: ["prune", "backup", "--keep-last", "1"],
      before: [inc2, inc3],
      after: [inc3],
      reference: s3,
      points: merging,
    },
    {
      label: "free newest",
      from: s0,
      free: inc3,
      command: ["free", volid(inc3)],
      before: [full, inc1, inc2, inc3],
      after: [full, inc1, inc2],
      reference: s0,
      points: ["backup-remove:previous-info-removed", "backup-remove:renamed"],
    },
  ];
  const killedAt = new Set<string>();
  let n = 0;
  for (const s of scenarios) {
    for (const point of s.points) {
      const e = await cloneEnv(chain, s.from, `kill-${n++}`);
      const what = `${s.label} killed at ${point}`;
      const r = await volt(s.command, {
        env: { ...e.env, VOLT_FAULT_POINT: point },
      });
      assert.equal(r.code, 137, `${what}: not killed by SIGKILL (exit ${r.code}): ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /^removed '/m, what);
      killedAt.add(point);
      const listed = await assertRestoresExactly(e, chain, s.after, s.before);
      if (point === "backup-remove:exchanged" || point === "backup-remove:old-copy-removed") {
        assert.ok(listed.includes(s.free), `${what}: still listed, standing alone`);
      }
      if (point === "backup-remove:renamed" || point === "backup-remove:partly-deleted") {
        assert.ok(!listed.includes(s.free), `${what}: out of the listing`);
      }
      if (s.free === inc3) {
        assert.ok(!(await dirNames(guestPath(e))).includes("previous-info"), what);
      }
      // Again, without a fault: the removal completes and sweeps what the kill left.
      const again = await volt(s.command, { env: e.env });
      assert.equal(again.code, 0, `${what}, then again: ${again.stderr}`);
      if (s.command[0] === "prune" && (await leftovers(e)).length > 0) {
        // The backup had left the listing: prune found nothing to remove. What is left is
        // swept by the next backup or removal of the guest, or by 'volt free' of the backup.
        assert.deepEqual(await leftovers(e), [`.tmp-delete-${s.free}`], what);
        await freeOk(e, s.free);
      }
      assert.deepEqual(await leftovers(e), [], what);
      await assertSameBackups(e, s.reference, s.after, `${what}, then again`);
      await Deno.remove(e.home, { recursive: true });
    }
  }
  assert.deepEqual([...killedAt].sort(), [...REMOVAL_FAULT_POINTS].sort());
});

Deno.test("protected, missing and damaged backups are refused and nothing changes; notes and protection of a merged backup are kept", async () => {
  await using tmp = new TempDir();
  const chain = await buildChain(tmp);
  const { e } = chain;
  const [full, inc1, inc2, inc3] = chain.names;
  // The guest directory's own mtime may change (a working directory came and went).
  const tree = async () => (await treeListing(guestPath(e))).filter((x) => x.path !== ".");

  // Protected.
  await Deno.writeFile(`${guestPath(e, inc1)}/protected`, new Uint8Array());
  let before = await tree();
  let r = await volt(["free", volid(inc1)], { env: e.env });
  assert.equal(r.code, 1);
  assert.equal(
    r.stderr,
    `volt: backup '${volid(inc1)}' is protected: unprotect it first with ` +
      `'volt protect ${volid(inc1)} 0'\n`,
  );
  assert.deepEqual(await tree(), before);
  await Deno.remove(`${guestPath(e, inc1)}/protected`);

  // Missing.
  r = await volt(["free", volid("qemu-1234")], { env: e.env });
  assert.equal(r.code, 1);
  assert.equal(r.stderr, `volt: volume '${volid("qemu-1234")}' does not exist\n`);

  // Damaged: a byte of inc1's scsi0 image changed. Merging it would give its data fresh
  // checksums in inc2; refused instead.
  const image = `${guestPath(e, inc1)}/scsi0.qcow2`;
  const original = await Deno.readFile(image);
  const damaged = original.slice();
  damaged[damaged.length - 100] ^= 0xff;
  await Deno.writeFile(image, damaged);
  before = await tree();
  r = await volt(["free", volid(inc1)], { env: e.env });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /scsi0\.qcow2 does not match its checksum in the manifest; not merging/);
  assert.equal(r.stderr.trim().split("\n").at(-1)!.startsWith("volt: "), true);
  assert.deepEqual(await tree(), before);
  await Deno.writeFile(image, original);

  // The kept backup inc2 has notes and is protected: both carried over by the merge.
  const notes = "before the upgrade\nünïcödé\n";
  await Deno.writeTextFile(`${guestPath(e, inc2)}/notes`, notes);
  await Deno.writeFile(`${guestPath(e, inc2)}/protected`, new Uint8Array());
  await freeOk(e, inc1);
  assert.equal(await parentOf(e, inc2), full);
  assert.equal(await Deno.readTextFile(`${guestPath(e, inc2)}/notes`), notes);
  assert.ok((await Deno.stat(`${guestPath(e, inc2)}/protected`)).isFile);
  const listed = await listVolumes(e);
  assert.equal(listed.find((v) => v.volid === volid(inc2))?.parent, volid(full));
  await assertRestoresExactly(e, chain, [full, inc2, inc3]);

  // A container backup stands alone: protected it stays, otherwise it is simply removed.
  const rootfs = tmp.join("rootfs");
  await Deno.mkdir(rootfs);
  await Deno.writeTextFile(`${rootfs}/hello`, "hello\n");
  await Deno.writeTextFile(tmp.join("ct.conf"), "hostname: ct\nrootfs: local:101/x.subvol\n");
  const ct = await volt(
    ["backup", "101", "--type", "lxc", "--directory", rootfs, "--config", tmp.join("ct.conf")],
    { env: e.env },
  );
  assert.equal(ct.code, 0, ct.stderr);
  const ctVolid = ct.stdout.trim();
  const ctDir = `${e.backupRoot}/101/${ctVolid.split("/").at(-1)}`;
  await Deno.writeFile(`${ctDir}/protected`, new Uint8Array());
  r = await volt(["free", ctVolid], { env: e.env });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /is protected: unprotect it first/);
  await Deno.remove(`${ctDir}/protected`);
  r = await volt(["free", ctVolid], { env: e.env });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await dirNames(`${e.backupRoot}/101`), [".lock"]);
  assert.deepEqual((await listVolumes(e)).map((v) => v.volid), [full, inc2, inc3].map(volid));
});

Deno.test("a backup with two children is merged into both; several backups are removed in one go", async () => {
  await using tmp = new TempDir();
  const chain = await buildChain(tmp);
  const [full, inc1, inc2, inc3] = chain.names;

  // A second child of the full backup: a copy of inc1 under a later name.
  const e = await cloneEnv(chain, chain.e, "two-children");
  const sibling = `qemu-${Number(inc3.slice(5)) + 100}`;
  await sh("cp", ["-a", guestPath(e, inc1), guestPath(e, sibling)]);
  const m = await readManifest(guestPath(e, sibling));
  await writeManifest(guestPath(e, sibling), { ...m, time: Number(sibling.slice(5)) });
  chain.disks.set(sibling, chain.disks.get(inc1)!);
  await assertRestoresExactly(e, chain, [full, inc1, inc2, inc3, sibling]);
  const said = await freeOk(e, full);
  assert.match(
    said,
    new RegExp(`merging ${full} into ${inc1} .*\\n.*merging ${full} into ${sibling}`),
  );
  assert.equal(await parentOf(e, inc1), undefined);
  assert.equal(await parentOf(e, sibling), undefined);
  assert.equal(await parentOf(e, inc2), inc1);
  await assertRestoresExactly(e, chain, [inc1, inc2, inc3, sibling]);

  // inc1 and inc2 at once: inc3 is rebased once, straight onto the full backup (scsi0) and
  // onto nothing (scsi1, held in full by inc1); the removed ones go newest first.
  const logged: string[] = [];
  const r = await removeBackups(chain.e.backupRoot, VMID, [inc1, inc2], {
    storageId: "backup",
    log: (_level, message) => logged.push(message),
  });
  assert.deepEqual(r, {
    removed: [inc2, inc1],
    rewritten: [{ backup: inc3, merged: [inc2, inc1], parent: full }],
  });
  assert.deepEqual(logged.length, 1, logged.join("\n"));
  const m3 = await readManifest(guestPath(chain.e, inc3));
  assert.equal(m3.devices.scsi0.backing, `../${full}/scsi0.qcow2`);
  assert.equal(m3.devices.scsi1.kind, "full");
  await assertRestoresExactly(chain.e, chain, [full, inc3]);
});

Deno.test("exchangePaths swaps two directories in one step and names a missing one in its error", async () => {
  await using tmp = new TempDir();
  await Deno.mkdir(tmp.join("a"));
  await Deno.mkdir(tmp.join("b"));
  await Deno.writeTextFile(tmp.join("a", "f"), "A");
  await Deno.writeTextFile(tmp.join("b", "f"), "B");
  exchangePaths(tmp.join("a"), tmp.join("b"));
  assert.equal(await Deno.readTextFile(tmp.join("a", "f")), "B");
  assert.equal(await Deno.readTextFile(tmp.join("b", "f")), "A");
  assert.throws(
    () => exchangePaths(tmp.join("a"), tmp.join("missing")),
    (err: unknown) =>
      err instanceof OsCallError && !(err instanceof ExchangeUnsupportedError) &&
      err.errno === 2 && err.message.includes(tmp.join("missing")),
  );
  assert.equal(await Deno.readTextFile(tmp.join("a", "f")), "B", "nothing moved");
});

/** Whether a process waits in `/proc/locks` for a lock on the file with inode `ino`. */
async function someoneWaitsFor(ino: number): Promise<boolean> {
  const text = await Deno.readTextFile("/proc/locks");
  return text.split("\n").some((line) => {
    const m = /->\s+FLOCK\s+\S+\s+\S+\s+\d+\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s/.exec(line);
    return m !== null && Number(m[1]) === ino;
  });
}

Deno.test("SIGINT while volt free waits for the guest's lock stops it with one line; nothing changes", async () => {
  await using tmp = new TempDir();
  const chain = await buildChain(tmp);
  const { e } = chain;
  const inc1 = chain.names[1];
  const before = await treeListing(guestPath(e));
  // Hold the lock as a running backup would.
  using lock = await Deno.open(`${guestPath(e)}/.lock`, { read: true, write: true });
  await lock.lock(true);
  const ino = (await lock.stat()).ino!;
  const [cmd, ...pre] = voltCommand();
  const child = new Deno.Command(cmd, {
    args: [...pre, "free", volid(inc1)],
    env: { NO_COLOR: "1", ...e.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // Signal only once the kernel shows volt blocked on the lock (no timing guess).
  for (let i = 0; !(await someoneWaitsFor(ino)); i++) {
    assert.ok(i < 600, "volt free never waited for the lock");
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill("SIGINT");
  const out = await child.output();
  assert.equal(out.code, 1);
  assert.equal(
    new TextDecoder().decode(out.stderr),
    `volt: removal of ${volid(inc1)} interrupted by SIGINT; nothing was left half-written\n`,
  );
  await lock.unlock();
  assert.deepEqual(await treeListing(guestPath(e)), before);
});
