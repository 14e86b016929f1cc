import assert from "node:assert/strict";
import {
  applyWrites,
  assertAllImagesClean,
  assertPattern,
  assertSameContent,
  PATTERNS,
  SnapshotEnv,
  snapshotNames,
  twoSnapshotChain,
} from "./helpers/snapshots.ts";
import { sh } from "./helpers/volt.ts";

const MiB = 1024 * 1024;
const S1 = "snap-s1-vm-100-disk-0.qcow2";
const S2 = "snap-s2-vm-100-disk-0.qcow2";
const V = "vm-100-disk-0.qcow2";

interface ImageInfo {
  filename: string;
  "virtual-size": number;
  "cluster-size": number;
  "backing-filename"?: string;
  "backing-filename-format"?: string;
  "format-specific": { data: { "extended-l2"?: boolean } };
}

async function info(path: string): Promise<ImageInfo> {
  return JSON.parse(await sh("qemu-img", ["info", "--output=json", "-U", path])) as ImageInfo;
}

Deno.test("chain snapshots read back P0 and P0+P1, current reads P0+P1+P2", async () => {
  await using env = new SnapshotEnv();
  const { volid, path, refs } = await twoSnapshotChain(env);
  assert.deepEqual(env.listDir(), [".vm-100-disk-0.qcow2.lock", S1, S2, V]);
  await assertSameContent(env.file(S1), refs[0]);
  await assertSameContent(env.file(S2), refs[1]);
  await assertSameContent(path, refs[2]);
  await assertPattern(env.file(S1), PATTERNS[0][0]);
  await assertPattern(env.file(S2), PATTERNS[1][0]);
  await assertPattern(path, PATTERNS[2][1]);
  await assertAllImagesClean(env.dir());

  // Overlays as Proxmox creates them: relative backing name, qcow2, extended L2, 128k clusters.
  const top = await info(path);
  assert.equal(top["backing-filename"], S2);
  assert.equal(top["backing-filename-format"], "qcow2");
  assert.equal(top["cluster-size"], 128 * 1024);
  assert.equal(top["format-specific"].data["extended-l2"], true);
  assert.equal((await info(env.file(S2)))["backing-filename"], S1);
  assert.equal((await info(env.file(S1)))["backing-filename"], undefined);

  const r = await env.ok(["snapshots", volid, "--output-format", "json"]);
  const list = JSON.parse(r.stdout);
  assert.deepEqual(
    list.map((
      s: Record<string, unknown>,
    ) => [s.name, s.order, s.parent, s.child, s.volid, s.file, s.size]),
    [
      ["s1", 1, undefined, "s2", `st:100/${S1}`, env.file(S1), 256 * MiB],
      ["s2", 2, "s1", "current", `st:100/${S2}`, env.file(S2), 256 * MiB],
      ["current", 3, "s2", undefined, volid, path, 256 * MiB],
    ],
  );
  const now = Date.now() / 1000;
  for (const s of list.slice(0, 2)) assert.ok(Math.abs(s.ctime - now) < 600, "ctime is recent");
  assert.equal(list[2].ctime, undefined);

  const table = await env.ok(["snapshots", volid]);
  assert.match(table.stdout, /^Order\s+Name\s+Parent\s+Child\s+Size/);
  assert.match(table.stdout, /\n\s+2\s+s2\s+s1\s+current\s+256\.0 MiB/);

  const check = await env.ok(["check", volid]);
  assert.match(check.stdout, /: ok$/m);

  // Snapshot files are not volumes.
  const vols = JSON.parse((await env.ok(["list", "st", "--output-format", "json"])).stdout);
  assert.deepEqual(vols.map((v: { volid: string }) => v.volid), [volid]);
  await env.fails(["alloc", "st", "100", "snap-x-vm-100-disk-1.qcow2", "1M"], /snap-/);
});

Deno.test("rollback to s2 restores P0+P1; rollback to s1 while s2 exists names s2", async () => {
  await using env = new SnapshotEnv();
  const { volid, path, refs } = await twoSnapshotChain(env);
  const line = await env.fails(["rollback", volid, "s1"], /not the most recent snapshot/);
  assert.match(line, /newer: s2\b/);
  await assertSameContent(path, refs[2]);

  await env.ok(["rollback", volid, "s2"]);
  await assertSameContent(path, refs[1]);
  await assertSameContent(env.file(S2), refs[1]);
  await assertSameContent(env.file(S1), refs[0]);
  assert.equal((await info(path))["backing-filename"], S2);
  assert.deepEqual(await snapshotNames(env, volid), ["s1", "s2", "current"]);
  await assertAllImagesClean(env.dir());

  // Writing after a rollback and rolling back again drops the new data only.
  await applyWrites(path, "qcow2", PATTERNS[2]);
  await env.ok(["rollback", volid, "s2"]);
  await assertSameContent(path, refs[1]);

  await env.fails(["rollback", volid, "nosuch"], /snapshot 'nosuch' does not exist/);
  await env.ok(["check", volid]);
});

for (const order of [["s1", "s2"], ["s2", "s1"]]) {
  Deno.test(`delete ${order.join(" then ")}: the rest reads back exactly as before`, async () => {
    await using env = new SnapshotEnv();
    const { volid, path, refs } = await twoSnapshotChain(env);
    const expect: Record<string, string> = { s1: refs[0], s2: refs[1], current: refs[2] };
    const files: Record<string, string> = { s1: env.file(S1), s2: env.file(S2), current: path };
    const left = ["s1", "s2"];
    for (const snap of order) {
      await env.ok(["delsnapshot", volid, snap]);
      left.splice(left.indexOf(snap), 1);
      assert.deepEqual(await snapshotNames(env, volid), [...left, "current"]);
      for (const s of [...left, "current"]) await assertSameContent(files[s], expect[s]);
      await assertAllImagesClean(env.dir());
      assert.deepEqual(
        env.listDir(),
        [".vm-100-disk-0.qcow2.lock", ...left.map((s) => `snap-${s}-${V}`), V],
      );
      await env.ok(["check", volid]);
    }
    assert.equal((await info(path))["backing-filename"], undefined);
    await env.fails(["delsnapshot", volid, "s1"], /snapshot 's1' does not exist/);
  });
}

Deno.test("deleting a middle snapshot rebases its child snapshot and keeps its time", async () => {
  await using env = new SnapshotEnv();
  const { volid, path, refs } = await twoSnapshotChain(env);
  const old = Date.now() / 1000 - 3600;
  Deno.utimeSync(env.file(S2), old, old);
  await env.ok(["snapshot", volid, "s3"]);
  await env.ok(["delsnapshot", volid, "s2"]); // parent s1, child s3: rebase path.
  const S3 = `snap-s3-${V}`;
  assert.equal((await info(env.file(S3)))["backing-filename"], S1);
  await assertSameContent(env.file(S3), refs[2]);
  await assertSameContent(env.file(S1), refs[0]);
  await assertSameContent(path, refs[2]);
  await assertAllImagesClean(env.dir());
  const list = JSON.parse((await env.ok(["snapshots", volid, "--output-format", "json"])).stdout);
  assert.deepEqual(list.map((s: { name: string }) => s.name), ["s1", "s3", "current"]);
  assert.equal(list[1].parent, "s1");

  // Deleting s1 (commit path) moves its file over s3's: s3 keeps its creation time.
  const s3Time = list[1].ctime;
  await env.ok(["delsnapshot", volid, "s1"]);
  const after = JSON.parse((await env.ok(["snapshots", volid, "--output-format", "json"])).stdout);
  assert.equal(after[0].name, "s3");
  assert.equal(after[0].ctime, s3Time);
  await assertSameContent(env.file(S3), refs[2]);
});

Deno.test("deleting the first snapshot grows it to a larger child before committing", async () => {
  await using env = new SnapshotEnv();
  const r = await env.ok(["alloc", "st", "100", V, "256M"]);
  const volid = /'(.+)'/.exec(r.stdout)![1];
  const path = env.file(V);
  await applyWrites(path, "qcow2", PATTERNS[0]);
  await env.ok(["snapshot", volid, "s1"]);
  await sh("qemu-img", ["resize", "-q", "-f", "qcow2", path, "320M"]);
  const tail = { pattern: 0x44, offset: 300 * MiB, length: 2 * MiB };
  await applyWrites(path, "qcow2", [tail]);
  const ref = await env.reference("grown", 320 * MiB, [...PATTERNS[0], tail]);
  await assertSameContent(path, ref);

  await env.ok(["delsnapshot", volid, "s1"]);
  assert.equal((await info(path))["virtual-size"], 320 * MiB);
  assert.equal((await info(path))["backing-filename"], undefined);
  await assertSameContent(path, ref);
  await assertAllImagesClean(env.dir());
  assert.deepEqual(env.listDir(), [".vm-100-disk-0.qcow2.lock", V]);
});

Deno.test("rollback restores the snapshot's size after the volume grew", async () => {
  await using env = new SnapshotEnv();
  const { volid, path, refs } = await twoSnapshotChain(env);
  await sh("qemu-img", ["resize", "-q", "-f", "qcow2", path, "300M"]);
  await env.ok(["rollback", volid, "s2"]);
  assert.equal((await info(path))["virtual-size"], 256 * MiB);
  await assertSameContent(path, refs[1]);
});

Deno.test("volt free removes the whole chain and the lock file", async () => {
  await using env = new SnapshotEnv();
  const { volid } = await twoSnapshotChain(env);
  await env.ok(["alloc", "st", "100", "vm-100-disk-1.qcow2", "1M"]);
  await env.ok(["snapshot", "st:100/vm-100-disk-1.qcow2", "keep"]);
  await env.ok(["free", volid]);
  assert.deepEqual(env.listDir(), [
    ".vm-100-disk-1.qcow2.lock",
    "snap-keep-vm-100-disk-1.qcow2",
    "vm-100-disk-1.qcow2",
  ]);
  await env.fails(["snapshots", volid], /does not exist/);
  // The name is free again, with no old snapshot files around.
  await env.ok(["alloc", "st", "100", V, "1M"]);
  assert.deepEqual(await snapshotNames(env, volid), ["current"]);
});

Deno.test("snapshot names: Proxmox's rules, reserved names, duplicates, raw volumes", async () => {
  await using env = new SnapshotEnv();
  await env.ok(["alloc", "st", "100", V, "1M"]);
  const volid = `st:100/${V}`;
  for (const bad of ["1abc", "a.b", "a b", "_x", "x".repeat(41), "ü"]) {
    await env.fails(["snapshot", volid, bad], /invalid snapshot name/);
  }
  await env.fails(["snapshot", volid, "current"], /reserved/);
  await env.fails(["snapshot", volid, "pending"], /reserved/);
  await env.ok(["snapshot", volid, "A"]);
  await env.ok(["snapshot", volid, `b_-${"x".repeat(37)}`]);
  await env.fails(["snapshot", volid, "A"], /snapshot 'A' already exists/);
  await env.fails(["delsnapshot", volid, "current"], /reserved/);
  await env.ok(["alloc", "st", "100", "vm-100-disk-1.raw", "1M"]);
  await env.fails(["snapshot", "st:100/vm-100-disk-1.raw", "s1"], /snapshots need qcow2/);
  await env.ok(["check", "st:100/vm-100-disk-1.raw"]);
  await env.fails(["snapshot", `st:100/${S1}`, "s1"], /'snap-' files are snapshots/);
});

Deno.test("concurrent snapshot operations on one volume wait for each other", async () => {
  await using env = new SnapshotEnv();
  await env.ok(["alloc", "st", "100", V, "16M"]);
  const volid = `st:100/${V}`;
  const results = await Promise.all(
    ["c1", "c2", "c3"].map((s) => env.volt(["snapshot", volid, s])),
  );
  for (const r of results) assert.equal(r.code, 0, r.stderr);
  const names = await snapshotNames(env, volid);
  assert.deepEqual([...names].sort(), ["c1", "c2", "c3", "current"]);
  await env.ok(["check", volid]);
});

Deno.test("an operation gives up cleanly when the volume's lock stays taken", async () => {
  await using env = new SnapshotEnv();
  await env.ok(["alloc", "st", "100", V, "16M"]);
  const volid = `st:100/${V}`;
  using held = await Deno.open(env.file(`.${V}.lock`), { read: true, write: true, create: true });
  await held.lock(true);
  await env.fails(
    ["snapshot", volid, "s1"],
    /timed out after 1 s waiting for the lock on volume 'st:100\/vm-100-disk-0\.qcow2'/,
    { VOLT_LOCK_TIMEOUT: "1" },
  );
  await held.unlock();
  assert.deepEqual(env.listDir(), [`.${V}.lock`, V]);
  await env.ok(["snapshot", volid, "s1"]);
});

Deno.test("operations on a volume that does not exist fail in one line and leave nothing", async () => {
  await using env = new SnapshotEnv();
  await env.ok(["alloc", "st", "100", V, "1M"]);
  for (
    const args of [
      ["snapshot", "st:100/vm-100-disk-5.qcow2", "s1"],
      ["rollback", "st:100/vm-100-disk-5.qcow2", "s1"],
      ["delsnapshot", "st:100/vm-100-disk-5.qcow2", "s1"],
      ["snapshots", "st:100/vm-100-disk-5.qcow2"],
      ["check", "st:100/vm-100-disk-5.qcow2"],
      ["snapshot", "st:999/vm-999-disk-0.qcow2", "s1"],
    ]
  ) {
    await env.fails(args, /volume 'st:\d+\/vm-\d+-disk-\d\.qcow2' does not exist/);
  }
  assert.deepEqual(env.listDir(), [V]);
});
