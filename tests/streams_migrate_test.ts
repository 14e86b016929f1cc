// volt migrate (export piped into import in one process) and the format listing commands.
import assert from "node:assert/strict";
import { exists, listDir, pattern, sh, StreamEnv } from "./helpers/streams_env.ts";

Deno.test("export-formats and import-formats print the lists, one per line", async () => {
  await using env = new StreamEnv();
  env.put("100/vm-100-disk-0.raw", pattern(512));
  const ex = await env.ok(["export-formats", "local:100/vm-100-disk-0.raw"]);
  assert.equal(ex.stdout, "images+meta\nraw+size\n");
  const im = await env.ok(["import-formats", "other:100/vm-100-disk-0.qcow2", "--with-snapshots"]);
  assert.equal(im.stdout, "images+meta\nqcow2+size\n");
  const sub = await env.ok(["import-formats", "other:101/subvol-101-disk-0.subvol"]);
  assert.equal(sub.stdout, "rootdir+meta\ntar+size\n");
  const none = await env.volt(["import-formats", "other:100/vm-100-disk-0.qcow2"]);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /has no import formats without snapshots/);
});

Deno.test("migrate copies a raw image to another storage with the negotiated format", async () => {
  await using env = new StreamEnv();
  const src = env.put("100/vm-100-disk-0.raw", pattern(3 * 1024 * 1024 + 1000));
  const r = await env.ok(["migrate", "local:100/vm-100-disk-0.raw", "other"]);
  assert.equal(r.stdout, "successfully imported 'other:100/vm-100-disk-0.raw'\n");
  assert.match(r.stderr, /migrating 'local:100\/vm-100-disk-0.raw' as images\+meta/);
  await sh("cmp", [src, env.path("100/vm-100-disk-0.raw", "other")]);
  // Under another name, rate-limited.
  const limited = await env.ok([
    "migrate",
    "local:100/vm-100-disk-0.raw",
    "other:100/vm-100-disk-5.raw",
    "--bwlimit",
    "16384",
  ]);
  assert.equal(limited.stdout, "successfully imported 'other:100/vm-100-disk-5.raw'\n");
  await sh("cmp", [src, env.path("100/vm-100-disk-5.raw", "other")]);
});

Deno.test("migrate of a qcow2: raw target converts, qcow2 target needs --with-snapshots", async () => {
  await using env = new StreamEnv();
  const src = env.path("100/vm-100-disk-0.qcow2");
  Deno.mkdirSync(src.slice(0, src.lastIndexOf("/")), { recursive: true });
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", src, "2M"]);
  await sh("qemu-io", ["-f", "qcow2", "-c", "write -P 0x3c 0 300k", src]);
  await sh("qemu-img", ["snapshot", "-c", "s1", src]);

  const refused = await env.volt(["migrate", "local:100/vm-100-disk-0.qcow2", "other"]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /no common stream format without snapshots.*needs --with-snapshots/);
  assert.deepEqual(listDir(env.join("other", "images", "100")), []);

  await env.ok(["migrate", "local:100/vm-100-disk-0.qcow2", "other:100/vm-100-disk-0.raw"]);
  await sh("qemu-img", [
    "compare",
    "-f",
    "qcow2",
    "-F",
    "raw",
    src,
    env.path("100/vm-100-disk-0.raw", "other"),
  ]);
  const ws = await env.ok([
    "migrate",
    "local:100/vm-100-disk-0.qcow2",
    "other",
    "--with-snapshots",
  ]);
  assert.match(ws.stderr, /as images\+meta/);
  await sh("cmp", [src, env.path("100/vm-100-disk-0.qcow2", "other")]);
});

Deno.test("migrate of a subvolume, and of an iso", async () => {
  await using env = new StreamEnv();
  const dir = env.path("101/subvol-101-disk-0.subvol");
  Deno.mkdirSync(`${dir}/root`, { recursive: true });
  Deno.writeTextFileSync(`${dir}/root/file`, "contents\n");
  await sh("chown", ["-R", "100000:100000", `${dir}/root`]);
  await env.ok(["migrate", "local:101/subvol-101-disk-0.subvol", "other"]);
  const copy = env.path("101/subvol-101-disk-0.subvol", "other");
  assert.equal(Deno.readTextFileSync(`${copy}/root/file`), "contents\n");
  assert.equal(Deno.statSync(`${copy}/root/file`).uid, 100000);

  env.put("iso/boot.iso", pattern(10_000));
  await env.ok(["migrate", "local:iso/boot.iso", "other"]);
  await sh("cmp", [env.path("iso/boot.iso"), env.path("iso/boot.iso", "other")]);
});

Deno.test("migrate onto an existing volume fails and leaves both sides as they were", async () => {
  await using env = new StreamEnv();
  env.put("100/vm-100-disk-0.raw", pattern(4096, 1));
  const existing = env.put("100/vm-100-disk-0.raw", pattern(4096, 2), "other");
  const r = await env.volt(["migrate", "local:100/vm-100-disk-0.raw", "other"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /already exists/);
  assert.deepEqual(Deno.readFileSync(existing), pattern(4096, 2));
  assert.ok(exists(env.path("100/vm-100-disk-0.raw")));
  const same = await env.volt(["migrate", "local:100/vm-100-disk-0.raw", "local"]);
  assert.equal(same.code, 1);
  assert.match(same.stderr, /is both source and target/);
});
