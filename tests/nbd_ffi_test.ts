import assert from "node:assert/strict";
import { LIBNBD_CMD_FLAG, NbdError } from "../ffi/libnbd.ts";
import { NbdHandle } from "../ffi/nbd_handle.ts";
import { connectNbd } from "../lib/nbd/source.ts";
import { buildImage, createImage, startQemuNbd } from "./helpers/nbd_server.ts";
import { TempDir } from "./helpers/volt.ts";

const MiB = 1024 * 1024;

Deno.test("a failed libnbd call is an NbdError with the call, libnbd's message and errno", () => {
  using h = new NbdHandle("t");
  let err: unknown;
  try {
    h.connectUnix("/nonexistent/volt.sock");
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof NbdError);
  assert.equal(err.op, "nbd_connect_unix");
  assert.equal(err.errno, 2); // ENOENT
  assert.match(err.message, /^nbd_connect_unix: .*No such file or directory/);
  assert.doesNotMatch(err.detail, /^nbd_connect_unix/);
});

Deno.test("NbdHandle reads, writes, zeroes and flushes a writable qemu-nbd export", async () => {
  await using dir = new TempDir();
  const image = dir.join("w.qcow2");
  await createImage(image, 4 * MiB);
  await using server = await startQemuNbd(image, {});
  using h = connectNbd({ socket: server.socket });
  assert.equal(h.size(), 4 * MiB);
  assert.equal(h.isReadOnly(), false);
  assert.equal(h.canZero(), true);
  assert.equal(h.canFlush(), true);
  assert.equal(typeof h.canTrim(), "boolean");
  assert.equal(typeof h.canMultiConn(), "boolean");
  assert.ok(h.blockSize("maximum") >= MiB);
  const data = new Uint8Array(8192).fill(0x5a);
  h.pwrite(data, 65536, LIBNBD_CMD_FLAG.FUA);
  const back = new Uint8Array(8192);
  h.pread(back, 65536);
  assert.deepEqual(back, data);
  h.zero(4096, 65536);
  h.pread(back, 65536);
  assert.deepEqual(back.subarray(0, 4096), new Uint8Array(4096));
  assert.deepEqual(back.subarray(4096), data.subarray(4096));
  h.flush();
  assert.throws(() => h.pread(new Uint8Array(512), 4 * MiB), (e: unknown) => e instanceof NbdError);
});

Deno.test("a throwing block-status handler fails the call and leaves the handle usable", async () => {
  await using dir = new TempDir();
  const image = await buildImage(dir.join("d.qcow2"), 4 * MiB, ["write -P 1 0 1M"]);
  await using server = await startQemuNbd(image, { readOnly: true });
  const h = connectNbd({ uri: server.uri }, { metaContexts: ["base:allocation"] });
  assert.throws(
    () =>
      h.blockStatus(4 * MiB, 0, () => {
        throw new RangeError("handler refused");
      }),
    /handler refused/,
  );
  const seen: number[] = [];
  h.blockStatus(4 * MiB, 0, (ctx, offset, entries) => {
    assert.equal(ctx, "base:allocation");
    assert.equal(offset, 0);
    seen.push(...entries);
  });
  assert.deepEqual(seen.slice(0, 2), [MiB, 0]);
  h.close();
  h.close(); // closing twice is harmless; the callback was closed once
  assert.ok(h.closed);
  assert.throws(() => h.size(), /closed/);
});
