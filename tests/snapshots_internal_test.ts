/**
 * Without `snapshot-as-volume-chain`, snapshots are qcow2 internal snapshots made with
 * `qemu-img snapshot`: no extra files, and any snapshot can be rolled back to.
 */

import assert from "node:assert/strict";
import {
  applyWrites,
  assertAllImagesClean,
  assertSameContent,
  PATTERNS,
  SnapshotEnv,
  snapshotNames,
} from "./helpers/snapshots.ts";
import { sh } from "./helpers/volt.ts";

const MiB = 1024 * 1024;
const V = "vm-100-disk-0.qcow2";
const VOLID = `st:100/${V}`;

Deno.test("internal snapshots: create, list, roll back to any, delete", async () => {
  await using env = new SnapshotEnv({ chain: false });
  await env.ok(["alloc", "st", "100", V, "256M"]);
  const path = env.file(V);
  const size = 256 * MiB;
  const refs = [
    await env.reference("p0", size, PATTERNS[0]),
    await env.reference("p01", size, [...PATTERNS[0], ...PATTERNS[1]]),
    await env.reference("p012", size, PATTERNS.flat()),
  ];
  await applyWrites(path, "qcow2", PATTERNS[0]);
  await env.ok(["snapshot", VOLID, "s1"]);
  await applyWrites(path, "qcow2", PATTERNS[1]);
  await env.ok(["snapshot", VOLID, "s2"]);
  await applyWrites(path, "qcow2", PATTERNS[2]);

  assert.deepEqual(env.listDir(), [`.${V}.lock`, V]);
  const listed = await sh("qemu-img", ["snapshot", "-l", path]);
  assert.match(listed, /\bs1\b[\s\S]*\bs2\b/);
  const list = JSON.parse((await env.ok(["snapshots", VOLID, "--output-format", "json"])).stdout);
  assert.deepEqual(list.map((s: { name: string; order: number }) => [s.name, s.order]), [
    ["s1", 1],
    ["s2", 2],
    ["current", 3],
  ]);
  assert.equal(typeof list[0].ctime, "number");
  assert.equal(list[2].size, size);
  await env.fails(["snapshot", VOLID, "s1"], /already exists/);

  await env.ok(["rollback", VOLID, "s1"]); // Not the most recent: fine for internal snapshots.
  await assertSameContent(path, refs[0]);
  await env.ok(["rollback", VOLID, "s2"]);
  await assertSameContent(path, refs[1]);
  await env.ok(["delsnapshot", VOLID, "s1"]);
  assert.deepEqual(await snapshotNames(env, VOLID), ["s2", "current"]);
  await applyWrites(path, "qcow2", PATTERNS[2]);
  await assertSameContent(path, refs[2]);
  await env.ok(["rollback", VOLID, "s2"]);
  await assertSameContent(path, refs[1]);
  await env.fails(["rollback", VOLID, "s1"], /snapshot 's1' does not exist/);
  await env.fails(["delsnapshot", VOLID, "nosuch"], /snapshot 'nosuch' does not exist/);
  await assertAllImagesClean(env.dir());
  assert.match((await env.ok(["check", VOLID])).stdout, /: ok$/m);

  await env.ok(["free", VOLID]);
  assert.deepEqual(env.listDir(), []);
});
