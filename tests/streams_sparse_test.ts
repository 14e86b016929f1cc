// Sparse writes and hole-aware reads.
import assert from "node:assert/strict";
import { allocated, pattern, sh, StreamEnv } from "./helpers/streams_env.ts";

/** Writes a fully allocated 2 MiB raw file whose 64 KiB blocks alternate data and zeros. */
function writeHalfZero(path: string): void {
  const img = new Uint8Array(2 * 1024 * 1024);
  for (let off = 0; off < img.length; off += 128 * 1024) {
    img.set(pattern(64 * 1024, off / 4096), off);
  }
  Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  Deno.writeFileSync(path, img);
}

Deno.test("an imported raw image with 50% zero blocks occupies about 50% on disk", async () => {
  await using env = new StreamEnv();
  const src = env.path("100/vm-100-disk-0.raw");
  writeHalfZero(src);
  await sh("sync", [src]);
  assert.ok(allocated(src) >= 2 * 1024 * 1024, "the source should be fully allocated");
  const r = await env.pipe(
    "local:100/vm-100-disk-0.raw",
    "other:100/vm-100-disk-0.raw",
    "raw+size",
  );
  assert.equal(r.code, 0, r.stderr);
  const dst = env.path("100/vm-100-disk-0.raw", "other");
  await sh("cmp", [src, dst]);
  await sh("sync", [dst]);
  const used = Number((await sh("du", ["-B1", dst])).split(/\s/)[0]);
  const half = 1024 * 1024;
  assert.ok(
    used >= half && used <= half + 64 * 1024,
    `du says ${used} bytes, expected about ${half}`,
  );
});

Deno.test("an import from a sparse stream file skips its holes and stays sparse", async () => {
  await using env = new StreamEnv();
  const src = env.path("100/vm-100-disk-0.raw");
  Deno.mkdirSync(src.slice(0, src.lastIndexOf("/")), { recursive: true });
  using f = Deno.openSync(src, { write: true, create: true });
  f.truncateSync(4 * 1024 * 1024);
  f.seekSync(3 * 1024 * 1024, Deno.SeekMode.Start);
  f.writeSync(pattern(4096));
  f.close();
  const stream = env.join("s.bin");
  await env.ok(["export", "local:100/vm-100-disk-0.raw", "images+meta", stream]);
  assert.ok(allocated(stream) < 64 * 1024, `stream file allocates ${allocated(stream)}`);
  await env.ok(["import", "local:100/vm-100-disk-1.raw", "images+meta", stream]);
  const dst = env.path("100/vm-100-disk-1.raw");
  await sh("cmp", [src, dst]);
  assert.ok(allocated(dst) <= 64 * 1024, `imported file allocates ${allocated(dst)}`);
});

Deno.test("a qcow2 exported as raw into a file keeps its unallocated clusters as holes", async () => {
  await using env = new StreamEnv();
  const src = env.path("100/vm-100-disk-0.qcow2");
  Deno.mkdirSync(src.slice(0, src.lastIndexOf("/")), { recursive: true });
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", src, "8M"]);
  await sh("qemu-io", ["-f", "qcow2", "-c", "write -P 0x21 7M 64k", src]);
  const stream = env.join("s.bin");
  await env.ok(["export", "local:100/vm-100-disk-0.qcow2", "raw+size", stream]);
  assert.equal(Deno.statSync(stream).size, 8 + 8 * 1024 * 1024);
  assert.ok(allocated(stream) < 256 * 1024, `stream file allocates ${allocated(stream)}`);
});
