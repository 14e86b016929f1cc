import assert from "node:assert/strict";
import {
  assertSnapshotName,
  isSnapshotName,
  parseTempFileName,
  snapFileName,
  snapNameOfFile,
  tempFileName,
} from "../lib/snapshots/names.ts";
import { parseDirVolname } from "../lib/storage/dir_volname.ts";

const V = "vm-100-disk-0.qcow2";

Deno.test("snapshot names follow Proxmox: letter first, [A-Za-z0-9_-], at most 40", () => {
  for (const ok of ["a", "s1", "Before_upgrade-2", "x".repeat(40)]) {
    assert.ok(isSnapshotName(ok), ok);
    assertSnapshotName(ok);
  }
  for (const bad of ["", "1a", "_a", "a.b", "a/b", "a b", "x".repeat(41), "current", "pending"]) {
    assert.ok(!isSnapshotName(bad), bad);
    assert.throws(() => assertSnapshotName(bad));
  }
  assert.throws(() => assertSnapshotName("current"), /reserved/);
});

Deno.test("snapshot file names round-trip and are never volume names", () => {
  for (const snap of ["s1", "a-b-c", "x_y"]) {
    const file = snapFileName(V, snap);
    assert.equal(snapNameOfFile(V, file), snap);
    assert.throws(() => parseDirVolname(`100/${file}`), /snap-/);
  }
  assert.equal(snapNameOfFile(V, V), "current");
  assert.equal(snapNameOfFile(V, "vm-100-disk-1.qcow2"), undefined);
  assert.equal(snapNameOfFile(V, `snap-1x-${V}`), undefined);
  assert.equal(snapNameOfFile(V, `snap--${V}`), undefined);
});

Deno.test("temporary file names name their operation and are never volume names", () => {
  for (const op of ["snapshot", "rollback", "delete"] as const) {
    const file = tempFileName(V, op, "s-1");
    assert.deepEqual(parseTempFileName(V, file), { op, snap: "s-1" });
    assert.throws(() => parseDirVolname(`100/${file}`));
  }
  assert.equal(parseTempFileName(V, `.${V}.lock`), undefined);
  assert.equal(parseTempFileName(V, `.${V}.merge-s1.tmp`), undefined);
  assert.equal(
    parseTempFileName("vm-100-disk-1.qcow2", tempFileName(V, "delete", "s1")),
    undefined,
  );
});
