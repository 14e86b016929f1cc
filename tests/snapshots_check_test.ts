/**
 * `volt check` on states built by hand: the steps of an operation that are file-system calls
 * (not qemu-img runs, which the fault test covers), files volt did not make, and another
 * volume whose name makes snapshot file names ambiguous.
 */

import assert from "node:assert/strict";
import {
  assertAllImagesClean,
  assertSameContent,
  SnapshotEnv,
  snapshotNames,
  twoSnapshotChain,
} from "./helpers/snapshots.ts";
import { sh } from "./helpers/volt.ts";

const V = "vm-100-disk-0.qcow2";
const S1 = `snap-s1-${V}`;
const S2 = `snap-s2-${V}`;

interface Report {
  ok: boolean;
  problems: { code: string; severity: string; message: string; repaired?: boolean }[];
}

async function check(env: SnapshotEnv, volid: string, repair = false): Promise<Report> {
  const args = ["check", volid, "--output-format", "json", ...(repair ? ["--repair"] : [])];
  const r = await env.volt(args);
  const report = JSON.parse(r.stdout) as Report;
  assert.equal(r.code, report.ok ? 0 : 1, r.stderr);
  return report;
}

Deno.test("check finishes a deletion cut off after the rebase path removed the snapshot", async () => {
  await using env = new SnapshotEnv();
  const { volid, path, refs } = await twoSnapshotChain(env);
  // D3 of the rebase path: V rebased onto S1, S2 unlinked, only the marker left.
  const marker = env.file(`.${V}.delete-s2.tmp`);
  Deno.linkSync(env.file(S2), marker);
  await sh("qemu-img", ["rebase", "-q", "-f", "qcow2", "-F", "qcow2", "-b", S1, path]);
  Deno.removeSync(env.file(S2));

  const found = await check(env, volid);
  assert.deepEqual(found.problems.map((p) => p.code), ["unfinished-delete"]);
  assert.match(found.problems[0].message, /deletion of snapshot 's2' was interrupted/);
  const human = await env.volt(["check", volid]);
  assert.equal(human.code, 1);
  assert.match(human.stdout, /run 'volt check --repair st:100\/vm-100-disk-0\.qcow2'/);
  await env.fails(["delsnapshot", volid, "s1"], /unfinished deletion of snapshot 's2'/);

  const fixed = await check(env, volid, true);
  assert.equal(fixed.ok, true);
  assert.deepEqual(env.listDir(), [`.${V}.lock`, S1, V]);
  assert.deepEqual(await snapshotNames(env, volid), ["s1", "current"]);
  await assertSameContent(path, refs[2]);
  await assertSameContent(env.file(S1), refs[0]);
});

Deno.test("check removes the hard link left after the commit path's rename", async () => {
  await using env = new SnapshotEnv();
  const { volid, path, refs } = await twoSnapshotChain(env);
  // D3 of the commit path: S2 committed into S1, S1's inode renamed over S2, S1 still linked.
  const marker = env.file(`.${V}.delete-s1.tmp`);
  Deno.linkSync(env.file(S1), marker);
  await sh("qemu-img", ["commit", "-q", "-d", "-f", "qcow2", env.file(S2)]);
  Deno.renameSync(marker, env.file(S2));

  const found = await check(env, volid);
  assert.deepEqual(found.problems.map((p) => p.code), ["leftover-link"]);
  await env.fails(["snapshot", volid, "s3"], /leftover link/);
  const fixed = await check(env, volid, true);
  assert.equal(fixed.ok, true);
  assert.deepEqual(fixed.problems.map((p) => [p.code, p.repaired]), [["leftover-link", true]]);
  assert.deepEqual(await snapshotNames(env, volid), ["s2", "current"]);
  await assertSameContent(env.file(S2), refs[1]);
  await assertSameContent(path, refs[2]);
  await assertAllImagesClean(env.dir());
});

Deno.test("check undoes a snapshot whose overlay was renamed in but whose link is gone", async () => {
  await using env = new SnapshotEnv();
  const { volid, path, refs } = await twoSnapshotChain(env);
  // C2 without C1's link (e.g. removed by hand): only the temporary overlay is left.
  await sh("qemu-img", [
    "create",
    "-q",
    "-f",
    "qcow2",
    "-F",
    "qcow2",
    "-b",
    V,
    env.file(`.${V}.snapshot-s3.tmp`),
  ]);
  const found = await check(env, volid);
  assert.deepEqual(found.problems.map((p) => p.code), ["unfinished-snapshot"]);
  assert.equal((await check(env, volid, true)).ok, true);
  assert.deepEqual(env.listDir(), [`.${V}.lock`, S1, S2, V]);
  await assertSameContent(path, refs[2]);
});

Deno.test("files volt did not make are reported and left alone", async () => {
  await using env = new SnapshotEnv();
  const { volid } = await twoSnapshotChain(env);
  // A snapshot-looking file outside the chain.
  const stray = env.file(`snap-zz-${V}`);
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", stray, "1M"]);
  // A file in the chain that is not a snapshot of this volume.
  await env.ok(["alloc", "st", "100", "vm-100-disk-7.qcow2", "256M"]);
  await sh("qemu-img", [
    "rebase",
    "-q",
    "-u",
    "-f",
    "qcow2",
    "-F",
    "qcow2",
    "-b",
    "vm-100-disk-7.qcow2",
    env.file(S1),
  ]);

  const found = await check(env, volid, true);
  assert.equal(found.ok, true, "warnings only");
  assert.deepEqual(
    found.problems.map((p) => [p.code, p.severity]),
    [["stray-snapshot-file", "warning"], ["foreign-file", "warning"]],
  );
  assert.ok(found.problems.every((p) => p.repaired === undefined));
  assert.ok(env.listDir().includes(`snap-zz-${V}`));
  await env.fails(["delsnapshot", volid, "s2"], /'vm-100-disk-7\.qcow2' .* not a snapshot/);
  // Taking a snapshot only touches the top, and still works.
  await env.ok(["snapshot", volid, "s3"]);
  const list = JSON.parse((await env.ok(["snapshots", volid, "--output-format", "json"])).stdout);
  assert.deepEqual(list.map((s: { name: string }) => s.name), ["s1", "s2", "s3", "current"]);
  assert.equal(list[0].parent, undefined);
  // volt free takes the volume's own files, never the foreign one.
  await env.ok(["free", volid]);
  assert.deepEqual(env.listDir(), ["vm-100-disk-7.qcow2"]);
});

Deno.test("another volume's snapshots are not taken for this volume's", async () => {
  await using env = new SnapshotEnv();
  const other = "vm-100-x-vm-100-disk-0.qcow2";
  await env.ok(["alloc", "st", "100", V, "1M"]);
  await env.ok(["alloc", "st", "100", other, "1M"]);
  // snap-a-vm-100-x-vm-100-disk-0.qcow2 would also parse as snapshot 'a-vm-100-x' of V.
  await env.ok(["snapshot", `st:100/${other}`, "a"]);
  const found = await check(env, `st:100/${V}`);
  assert.deepEqual(found.problems, []);
  await env.ok(["snapshot", `st:100/${V}`, "s1"]);
  await env.ok(["free", `st:100/${V}`]);
  assert.deepEqual(env.listDir(), [`.${other}.lock`, `snap-a-${other}`, other]);
  assert.deepEqual(await snapshotNames(env, `st:100/${other}`), ["a", "current"]);
});

Deno.test("a broken chain is reported, and volt free still removes the volume", async () => {
  await using env = new SnapshotEnv();
  const { volid } = await twoSnapshotChain(env);
  Deno.removeSync(env.file(S1)); // s2's backing file is gone.
  const found = await check(env, volid, true);
  assert.equal(found.ok, false);
  assert.deepEqual(found.problems.map((p) => p.code), ["broken-chain"]);
  assert.match(found.problems[0].message, /backing file 'snap-s1-.*' of 'snap-s2-.*' is missing/);
  await env.fails(["snapshot", volid, "s3"], /is missing: the chain is broken/);
  await env.ok(["free", volid]);
  assert.deepEqual(env.listDir(), []);

  // A volume whose file is not qcow2 at all (a corrupt header) can be freed too.
  await env.ok(["alloc", "st", "100", V, "1M"]);
  await env.ok(["snapshot", volid, "s1"]);
  Deno.writeFileSync(env.file(V), new Uint8Array(4096));
  await env.fails(["snapshots", volid], /not a valid qcow2 image/);
  await env.ok(["free", volid]);
  assert.deepEqual(env.listDir(), []);
});

/** Drops the L2 entry of guest cluster 0 of a qcow2 file: its data cluster leaks. */
function leakFirstCluster(path: string): void {
  using f = Deno.openSync(path, { read: true, write: true });
  const read = (offset: number, length: number) => {
    const buf = new Uint8Array(length);
    f.seekSync(offset, Deno.SeekMode.Start);
    assert.equal(f.readSync(buf), length);
    return new DataView(buf.buffer);
  };
  const l1 = Number(read(40, 8).getBigUint64(0));
  const l2 = Number(read(l1, 8).getBigUint64(0) & 0x00fffffffffffe00n);
  assert.ok(l2 > 0, "cluster 0 has an L2 table");
  f.seekSync(l2, Deno.SeekMode.Start);
  f.writeSync(new Uint8Array(8));
}

Deno.test("leaked clusters are a warning, freed by --repair", async () => {
  await using env = new SnapshotEnv({ preallocation: "off" });
  await env.ok(["alloc", "st", "100", V, "16M"]);
  const volid = `st:100/${V}`;
  await sh("qemu-io", ["-c", "write -P 0x61 0 64k", env.file(V)]);
  await env.ok(["snapshot", volid, "s1"]);
  leakFirstCluster(env.file(S1));
  const found = await check(env, volid);
  assert.equal(found.ok, true);
  assert.deepEqual(found.problems.map((p) => [p.code, p.severity]), [[
    "leaked-clusters",
    "warning",
  ]]);
  const fixed = await check(env, volid, true);
  assert.deepEqual(fixed.problems.map((p) => [p.code, p.repaired]), [["leaked-clusters", true]]);
  assert.deepEqual((await check(env, volid)).problems, []);
  await assertAllImagesClean(env.dir());
});
