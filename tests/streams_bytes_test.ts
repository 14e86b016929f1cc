// Byte vectors: the exact bytes of a stream, header bytes written out, for known volumes.
import assert from "node:assert/strict";
import { concat, le64, pattern, sh, shBytes, StreamEnv } from "./helpers/streams_env.ts";

const te = new TextEncoder();

/** A raw image: 512 KiB data, 1 MiB hole, 512 KiB data (2 MiB). */
function writeHoleyImage(path: string): Uint8Array {
  const half = pattern(512 * 1024, 3);
  Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  using f = Deno.openSync(path, { write: true, create: true, truncate: true });
  f.writeSync(half);
  f.seekSync(1536 * 1024, Deno.SeekMode.Start);
  f.writeSync(half);
  return Deno.readFileSync(path);
}

Deno.test("raw+size of a 1000-byte file: header 1024 (00 04 00 00 00 00 00 00), then exactly the 1000 bytes", async () => {
  await using env = new StreamEnv();
  const data = pattern(1000);
  env.put("100/vm-100-disk-0.raw", data);
  const header = new Uint8Array([0x00, 0x04, 0, 0, 0, 0, 0, 0]);
  const expected = concat(header, data);
  // Into a pipe (stdout captured by the test).
  assert.deepEqual(
    await env.bytes(["export", "local:100/vm-100-disk-0.raw", "raw+size", "-"]),
    expected,
  );
  // Into a file.
  await env.ok(["export", "local:100/vm-100-disk-0.raw", "raw+size", env.join("s.bin")]);
  assert.deepEqual(Deno.readFileSync(env.join("s.bin")), expected);
});

Deno.test("images+meta of a 1000-byte raw file: JSON length, JSON, size header, data", async () => {
  await using env = new StreamEnv();
  const data = pattern(1000);
  env.put("100/vm-100-disk-0.raw", data);
  const json = '{"vtype":"images","format":"raw"}';
  const expected = concat(
    new Uint8Array([33, 0, 0, 0, 0, 0, 0, 0]),
    te.encode(json),
    new Uint8Array([0x00, 0x04, 0, 0, 0, 0, 0, 0]),
    data,
  );
  assert.equal(json.length, 33);
  assert.deepEqual(
    await env.bytes(["export", "local:100/vm-100-disk-0.raw", "images+meta", "-"]),
    expected,
  );
});

Deno.test("raw+size of a 2 MiB image with a hole: header 00 00 20 00 …, then the image, through a pipe and a file", async () => {
  await using env = new StreamEnv();
  const image = writeHoleyImage(env.path("100/vm-100-disk-0.raw"));
  assert.equal(image.length, 2 * 1024 * 1024);
  const expected = concat(new Uint8Array([0, 0, 0x20, 0, 0, 0, 0, 0]), image);
  assert.deepEqual(
    await env.bytes(["export", "local:100/vm-100-disk-0.raw", "raw+size", "-"]),
    expected,
  );
  const out = env.join("s.bin");
  await env.ok(["export", "local:100/vm-100-disk-0.raw", "raw+size", out]);
  assert.deepEqual(Deno.readFileSync(out), expected);
  // The hole stayed a hole in the stream file.
  const st = Deno.statSync(out);
  assert.ok(
    (st.blocks ?? 0) * 512 < 1536 * 1024,
    `stream file allocates ${(st.blocks ?? 0) * 512}`,
  );
  // And /dev/null as a destination works (sendfile).
  await env.ok(["export", "local:100/vm-100-disk-0.raw", "raw+size", "/dev/null"]);
});

Deno.test("a small qcow2: qcow2+size and images+meta carry the file verbatim, raw+size the converted data", async () => {
  await using env = new StreamEnv();
  const path = env.path("100/vm-100-disk-0.qcow2");
  Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", path, "3M"]);
  await sh("qemu-io", [
    "-f",
    "qcow2",
    "-c",
    "write -P 0x5a 64k 128k",
    "-c",
    "write -P 0xa5 2M 4k",
    path,
  ]);
  await sh("qemu-img", ["snapshot", "-c", "before", path]);
  const file = Deno.readFileSync(path);
  const size = le64(3 * 1024 * 1024);
  assert.deepEqual([...size], [0, 0, 0x30, 0, 0, 0, 0, 0]);
  const volid = "local:100/vm-100-disk-0.qcow2";
  assert.deepEqual(
    await env.bytes(["export", volid, "qcow2+size", "-", "--with-snapshots"]),
    concat(size, file),
  );
  const json = te.encode('{"vtype":"images","format":"qcow2"}');
  assert.deepEqual(
    await env.bytes(["export", volid, "images+meta", "-", "--with-snapshots"]),
    concat(le64(json.length), json, size, file),
  );
  const raw = await shBytes("sh", [
    "-c",
    `qemu-img convert -f qcow2 -O raw '${path}' '${env.join("c.raw")}' && cat '${
      env.join("c.raw")
    }'`,
  ]);
  assert.equal(raw.length, 3 * 1024 * 1024);
  assert.deepEqual(await env.bytes(["export", volid, "raw+size", "-"]), concat(size, raw));
});

Deno.test("iso+meta, snippets+meta and tar+size headers", async () => {
  await using env = new StreamEnv();
  const iso = pattern(4096 + 10, 1);
  env.put("iso/x.iso", iso);
  const json = te.encode('{"vtype":"iso","format":"raw"}');
  assert.deepEqual(
    await env.bytes(["export", "local:iso/x.iso", "iso+meta", "-"]),
    concat(le64(json.length), json, le64(4608), iso),
  );
  env.put("snippets/hook.pl", te.encode("#!/usr/bin/perl\n"));
  const sj = te.encode('{"vtype":"snippets","format":"raw"}');
  assert.deepEqual(
    await env.bytes(["export", "local:snippets/hook.pl", "snippets+meta", "-"]),
    concat(le64(sj.length), sj, le64(512), te.encode("#!/usr/bin/perl\n")),
  );
  Deno.mkdirSync(env.path("101/subvol-101-disk-0.subvol"), { recursive: true });
  Deno.writeTextFileSync(`${env.path("101/subvol-101-disk-0.subvol")}/f`, "x");
  const tar = await env.bytes(["export", "local:101/subvol-101-disk-0.subvol", "tar+size", "-"]);
  assert.deepEqual([...tar.subarray(0, 8)], [0, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(new TextDecoder().decode(tar.subarray(8 + 257, 8 + 262)), "ustar");
  assert.equal(tar.length % 512, 8);
  const rj = te.encode('{"vtype":"rootdir","format":"tar"}');
  const meta = await env.bytes([
    "export",
    "local:101/subvol-101-disk-0.subvol",
    "rootdir+meta",
    "-",
  ]);
  assert.deepEqual(meta.subarray(0, 8 + rj.length + 8), concat(le64(rj.length), rj, le64(0)));
});
