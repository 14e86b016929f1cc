// Round trips: export then import, through files and through real pipes, contents compared.
import assert from "node:assert/strict";
import { exists, listDir, pattern, sh, StreamEnv, voltShell } from "./helpers/streams_env.ts";

const te = new TextEncoder();

/** A 2 MiB raw image, every other 256 KiB zero (half holes, half data). */
function halfZeroImage(): Uint8Array {
  const img = new Uint8Array(2 * 1024 * 1024);
  for (let off = 0; off < img.length; off += 512 * 1024) {
    img.set(pattern(256 * 1024, off / 1024), off);
  }
  return img;
}

async function cmp(a: string, b: string): Promise<void> {
  await sh("cmp", [a, b]);
}

Deno.test("raw image round trip through a pipe and through a file, raw+size and images+meta", async () => {
  await using env = new StreamEnv();
  const src = env.put("100/vm-100-disk-0.raw", halfZeroImage());
  for (const format of ["raw+size", "images+meta"]) {
    const r = await env.pipe("local:100/vm-100-disk-0.raw", "other:100/vm-100-disk-0.raw", format);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "successfully imported 'other:100/vm-100-disk-0.raw'\n");
    await cmp(src, env.path("100/vm-100-disk-0.raw", "other"));
    await env.ok(["free", "other:100/vm-100-disk-0.raw"]);

    const file = env.join(`stream-${format}`);
    await env.ok(["export", "local:100/vm-100-disk-0.raw", format, file]);
    await env.ok(["import", "local:100/vm-100-disk-1.raw", format, file]);
    await cmp(src, env.path("100/vm-100-disk-1.raw"));
    await env.ok(["free", "local:100/vm-100-disk-1.raw"]);
  }
});

Deno.test("a 1000-byte raw file comes back as exactly 1000 bytes", async () => {
  await using env = new StreamEnv();
  const src = env.put("100/vm-100-disk-0.raw", pattern(1000));
  const r = await env.pipe(
    "local:100/vm-100-disk-0.raw",
    "local:100/vm-100-disk-1.raw",
    "raw+size",
  );
  assert.equal(r.code, 0, r.stderr);
  await cmp(src, env.path("100/vm-100-disk-1.raw"));
});

Deno.test("qcow2 with an internal snapshot round trips with --with-snapshots (file identical, snapshot kept)", async () => {
  await using env = new StreamEnv();
  const src = env.path("100/vm-100-disk-0.qcow2");
  Deno.mkdirSync(src.slice(0, src.lastIndexOf("/")), { recursive: true });
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", src, "4M"]);
  await sh("qemu-io", ["-f", "qcow2", "-c", "write -P 0x11 0 1M", src]);
  await sh("qemu-img", ["snapshot", "-c", "snap1", src]);
  await sh("qemu-io", ["-f", "qcow2", "-c", "write -P 0x22 512k 1M", src]);
  for (const format of ["qcow2+size", "images+meta"]) {
    const r = await env.pipe(
      "local:100/vm-100-disk-0.qcow2",
      "other:100/vm-100-disk-0.qcow2",
      format,
      ["--with-snapshots"],
      ["--with-snapshots"],
    );
    assert.equal(r.code, 0, r.stderr);
    const dst = env.path("100/vm-100-disk-0.qcow2", "other");
    await cmp(src, dst);
    await sh("qemu-img", ["compare", "-f", "qcow2", "-F", "qcow2", src, dst]);
    assert.match(await sh("qemu-img", ["snapshot", "-l", dst]), /snap1/);
    await env.ok(["free", "other:100/vm-100-disk-0.qcow2"]);

    const file = env.join(`q-${format}`);
    await env.ok(["export", "local:100/vm-100-disk-0.qcow2", format, file, "--with-snapshots"]);
    await env.ok(["import", "other:100/vm-100-disk-1.qcow2", format, file, "--with-snapshots"]);
    await cmp(src, env.path("100/vm-100-disk-1.qcow2", "other"));
    await env.ok(["free", "other:100/vm-100-disk-1.qcow2"]);
  }
});

Deno.test("import reads stdin redirected from a stream file (raw, and tar handed to tar)", async () => {
  await using env = new StreamEnv();
  const src = env.put("100/vm-100-disk-0.raw", pattern(300_000));
  const file = env.join("raw.stream");
  await env.ok(["export", "local:100/vm-100-disk-0.raw", "images+meta", file]);
  const r = await env.shell(
    `${voltShell(["import", "local:100/vm-100-disk-1.raw", "images+meta", "-"])} < '${file}'`,
  );
  assert.equal(r.code, 0, r.stderr);
  await cmp(src, env.path("100/vm-100-disk-1.raw"));

  const dir = env.path("101/subvol-101-disk-0.subvol");
  Deno.mkdirSync(`${dir}/a/b`, { recursive: true });
  Deno.writeTextFileSync(`${dir}/a/b/c.txt`, "deep\n");
  const tarFile = env.join("ct.stream");
  await env.ok(["export", "local:101/subvol-101-disk-0.subvol", "rootdir+meta", tarFile]);
  const t = await env.shell(
    `${
      voltShell(["import", "local:101/subvol-101-disk-1.subvol", "rootdir+meta", "-"])
    } < '${tarFile}'`,
  );
  assert.equal(t.code, 0, t.stderr);
  assert.equal(
    Deno.readTextFileSync(`${env.path("101/subvol-101-disk-1.subvol")}/a/b/c.txt`),
    "deep\n",
  );
});

Deno.test("qcow2 exported as raw (converted, into a pipe) imports into a raw volume with the same contents", async () => {
  await using env = new StreamEnv();
  const src = env.path("100/vm-100-disk-0.qcow2");
  Deno.mkdirSync(src.slice(0, src.lastIndexOf("/")), { recursive: true });
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", src, "3M"]);
  await sh("qemu-io", [
    "-f",
    "qcow2",
    "-c",
    "write -P 0x33 100k 300k",
    "-c",
    "write -z 1M 64k",
    src,
  ]);
  const r = await env.pipe(
    "local:100/vm-100-disk-0.qcow2",
    "other:100/vm-100-disk-0.raw",
    "raw+size",
  );
  assert.equal(r.code, 0, r.stderr);
  await sh("qemu-img", [
    "compare",
    "-f",
    "qcow2",
    "-F",
    "raw",
    src,
    env.path("100/vm-100-disk-0.raw", "other"),
  ]);
});

Deno.test("a compressed qcow2 exported as raw goes through qemu-nbd/nbdcopy and still matches", async () => {
  await using env = new StreamEnv();
  const plain = env.join("plain.qcow2");
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", plain, "2M"]);
  await sh("qemu-io", ["-f", "qcow2", "-c", "write -P 0x44 0 1M", plain]);
  const src = env.path("100/vm-100-disk-0.qcow2");
  Deno.mkdirSync(src.slice(0, src.lastIndexOf("/")), { recursive: true });
  await sh("qemu-img", ["convert", "-c", "-O", "qcow2", plain, src]);
  const r = await env.pipe(
    "local:100/vm-100-disk-0.qcow2",
    "local:100/vm-100-disk-1.raw",
    "raw+size",
  );
  assert.equal(r.code, 0, r.stderr);
  await sh("qemu-img", [
    "compare",
    "-f",
    "qcow2",
    "-F",
    "raw",
    src,
    env.path("100/vm-100-disk-1.raw"),
  ]);
});

Deno.test("vmdk round trips with --with-snapshots, and converts to raw without", async () => {
  await using env = new StreamEnv();
  const src = env.path("100/vm-100-disk-0.vmdk");
  Deno.mkdirSync(src.slice(0, src.lastIndexOf("/")), { recursive: true });
  await sh("qemu-img", ["create", "-q", "-f", "vmdk", src, "2M"]);
  await sh("qemu-io", ["-f", "vmdk", "-c", "write -P 0x55 64k 192k", src]);
  const r = await env.pipe(
    "local:100/vm-100-disk-0.vmdk",
    "other:100/vm-100-disk-0.vmdk",
    "vmdk+size",
    ["--with-snapshots"],
    ["--with-snapshots"],
  );
  assert.equal(r.code, 0, r.stderr);
  await cmp(src, env.path("100/vm-100-disk-0.vmdk", "other"));
  const file = env.join("v.raw.stream");
  await env.ok(["export", "local:100/vm-100-disk-0.vmdk", "raw+size", file]);
  await env.ok(["import", "other:100/vm-100-disk-1.raw", "raw+size", file]);
  await sh("qemu-img", [
    "compare",
    "-f",
    "vmdk",
    "-F",
    "raw",
    src,
    env.path("100/vm-100-disk-1.raw", "other"),
  ]);
});

/** A container subvolume: files owned by uid 100000, an xattr, an ACL, a symlink, a hole. */
async function makeSubvol(dir: string): Promise<void> {
  Deno.mkdirSync(`${dir}/etc`, { recursive: true });
  Deno.writeTextFileSync(`${dir}/etc/hostname`, "ct101\n");
  Deno.writeTextFileSync(`${dir}/etc/xattr-file`, "with attributes\n");
  Deno.symlinkSync("/etc/hostname", `${dir}/etc/link`);
  using sparse = Deno.openSync(`${dir}/sparse`, { write: true, create: true });
  sparse.truncateSync(1 << 20);
  sparse.writeSync(te.encode("end"));
  await sh("chown", ["-R", "-h", "100000:100000", `${dir}/etc`]);
  await sh("setfattr", ["-n", "user.volt", "-v", "kept", `${dir}/etc/xattr-file`]);
  await sh("setfacl", ["-m", "u:100033:rw", `${dir}/etc/xattr-file`]);
}

/** Owner, mode, type and content of every entry, plus xattrs and ACLs, for comparison. */
async function describeTree(dir: string): Promise<string> {
  const list = await sh("sh", [
    "-c",
    "find . -printf '%p %U:%G %m %y %s %l\\n' | sort && getfattr -R -d -m '^user\\.' . 2>/dev/null | sort && getfacl -R -n -p . 2>/dev/null | sort && find . -type f -exec md5sum {} + | sort",
  ], { cwd: dir });
  return list;
}

Deno.test("subvolume round trip keeps uid 100000 owners, xattrs, ACLs and symlinks (tar+size and rootdir+meta)", async () => {
  await using env = new StreamEnv();
  const src = env.path("101/subvol-101-disk-0.subvol");
  await makeSubvol(src);
  const expected = await describeTree(src);
  assert.match(expected, /100000:100000/);
  assert.match(expected, /user\.volt="kept"/);
  assert.match(expected, /user:100033:rw-/);
  const r = await env.pipe(
    "local:101/subvol-101-disk-0.subvol",
    "other:101/subvol-101-disk-0.subvol",
    "tar+size",
  );
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await describeTree(env.path("101/subvol-101-disk-0.subvol", "other")), expected);

  const file = env.join("ct.stream");
  await env.ok(["export", "local:101/subvol-101-disk-0.subvol", "rootdir+meta", file]);
  await env.ok(["import", "local:101/subvol-101-disk-1.subvol", "rootdir+meta", file]);
  assert.equal(await describeTree(env.path("101/subvol-101-disk-1.subvol")), expected);
});

Deno.test("iso, vztmpl, snippets, import and backup files round trip through pipes and files", async () => {
  await using env = new StreamEnv();
  const cases: [string, string[], Uint8Array][] = [
    ["iso/debian.iso", ["iso+meta", "raw+size"], pattern(70_000, 1)],
    ["vztmpl/debian-12.tar.zst", ["vztmpl+meta", "raw+size"], pattern(5000, 2)],
    ["snippets/hook.sh", ["snippets+meta", "raw+size"], te.encode("#!/bin/sh\necho hi\n")],
    ["import/appliance.ova", ["import+meta", "raw+size"], pattern(3333, 4)],
    ["backup/vzdump-qemu-100-2025_01_01-00_00_00.vma.zst", ["backup+meta"], pattern(1234, 5)],
  ];
  for (const [volname, formats, bytes] of cases) {
    const src = env.put(volname, bytes);
    for (const format of formats) {
      const r = await env.pipe(`local:${volname}`, `other:${volname}`, format);
      assert.equal(r.code, 0, `${volname} ${format}: ${r.stderr}`);
      assert.equal(r.stdout, `successfully imported 'other:${volname}'\n`);
      const dst = env.path(volname, "other");
      await cmp(src, dst);
      assert.equal(Deno.statSync(dst).mode! & 0o777, 0o644);
      Deno.removeSync(dst);

      const file = env.join("f.stream");
      await env.ok(["export", `local:${volname}`, format, file]);
      await env.ok(["import", `other:${volname}`, format, file]);
      await cmp(src, dst);
      Deno.removeSync(dst);
    }
    // Nothing but the volumes themselves is left in the target directory.
    assert.deepEqual(listDir(env.path(volname, "other").replace(/\/[^/]+$/, "")), []);
  }
});

Deno.test("--allow-rename imports into the next free disk name and prints it", async () => {
  await using env = new StreamEnv();
  const src = env.put("100/vm-100-disk-0.raw", pattern(4096));
  const r = await env.pipe(
    "local:100/vm-100-disk-0.raw",
    "local:100/vm-100-disk-0.raw",
    "raw+size",
    [],
    ["--allow-rename"],
  );
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "successfully imported 'local:100/vm-100-disk-1.raw'\n");
  assert.match(r.stderr, /already exists - importing with a different name/);
  await cmp(src, env.path("100/vm-100-disk-1.raw"));
});

Deno.test("the top of a volume chain exports its current state as raw, and refuses --with-snapshots", async () => {
  await using env = new StreamEnv();
  const dir = env.path("100/x").replace(/\/x$/, "");
  Deno.mkdirSync(dir, { recursive: true });
  const base = `${dir}/snap-s1-vm-100-disk-0.qcow2`;
  const top = `${dir}/vm-100-disk-0.qcow2`;
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", base, "2M"]);
  await sh("qemu-io", ["-f", "qcow2", "-c", "write -P 0x61 0 1M", base]);
  await sh("qemu-img", [
    "create",
    "-q",
    "-f",
    "qcow2",
    "-F",
    "qcow2",
    "-b",
    "snap-s1-vm-100-disk-0.qcow2",
    top,
  ]);
  await sh("qemu-io", ["-f", "qcow2", "-c", "write -P 0x62 512k 256k", top]);
  const r = await env.pipe(
    "local:100/vm-100-disk-0.qcow2",
    "other:100/vm-100-disk-0.raw",
    "raw+size",
  );
  assert.equal(r.code, 0, r.stderr);
  await sh("qemu-img", [
    "compare",
    "-f",
    "qcow2",
    "-F",
    "raw",
    top,
    env.path("100/vm-100-disk-0.raw", "other"),
  ]);

  const refused = await env.volt([
    "export",
    "local:100/vm-100-disk-0.qcow2",
    "qcow2+size",
    env.join("x"),
    "--with-snapshots",
  ]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /with snapshots: it is the top of a volume chain/);
  assert.ok(!exists(env.join("x")));
  const formats = await env.volt([
    "export-formats",
    "local:100/vm-100-disk-0.qcow2",
    "--with-snapshots",
  ]);
  assert.equal(formats.code, 1);
  assert.match(formats.stderr, /no export formats with snapshots/);
});
