import assert from "node:assert/strict";
import { copyNbd } from "../lib/nbd/copy.ts";
import { buildImage, createImage, startQemuNbd } from "./helpers/nbd_server.ts";
import { TempDir, volt, voltCommand } from "./helpers/volt.ts";

const MiB = 1024 * 1024;

/**
 * Starts `volt args…` with stderr piped; resolves once a stderr line matches `ready`, with the
 * child and a promise of its exit code and full stderr.
 */
async function spawnVoltUntil(args: string[], ready: RegExp) {
  const [cmd, ...rest] = voltCommand();
  const child = new Deno.Command(cmd, {
    args: [...rest, ...args],
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new Response(child.stdout).text();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let stderr = "";
  while (!ready.test(stderr)) {
    const { value, done } = await reader.read();
    if (done) break;
    stderr += value;
  }
  const finished = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      stderr += value;
    }
    const status = await child.status;
    return { code: status.code, stderr, stdout: await stdout };
  })();
  return { child, finished, stderrSoFar: () => stderr };
}

/** A disk with 24 MiB of data: at 2 MiB/s the copy runs long enough to be interrupted. */
async function slowDisk(dir: TempDir): Promise<string> {
  return await buildImage(dir.join("d.qcow2"), 64 * MiB, ["write -P 1 0 24M"]);
}

Deno.test("the server killed mid-copy: an error naming the offset, non-zero exit, no success", async () => {
  await using dir = new TempDir();
  const disk = await slowDisk(dir);
  const server = await startQemuNbd(disk, { readOnly: true });
  const out = dir.join("out.raw");
  try {
    const run = await spawnVoltUntil(
      ["nbd", "copy", server.uri, out, "--bwlimit", "2048", "--progress"],
      /copied [\d.]+ \w+ of/,
    );
    assert.ok((await Deno.stat(out)).isFile, "the copy is under way");
    server.kill("SIGKILL");
    const r = await run.finished;
    assert.equal(r.code, 1, r.stderr);
    const errors = r.stderr.split("\n").filter((l) => l.startsWith("volt:"));
    assert.equal(errors.length, 1, r.stderr);
    assert.match(errors[0], /at offset \d+/);
    assert.match(errors[0], /nbd\+unix:/);
    assert.doesNotMatch(r.stderr, /copied nbd\+unix/, "no success summary");
    await assert.rejects(Deno.stat(out), Deno.errors.NotFound, "the half-written file is removed");
  } finally {
    await server.stop();
  }
});

Deno.test("the server killed early, while a 4 TiB map is read: the error names the offset", async () => {
  await using dir = new TempDir();
  // Thousands of block-status requests: the map takes a while. Data to read at both ends.
  const disk = await buildImage(dir.join("big.qcow2"), 4 * 2 ** 40, [], [
    "write -P 1 0 2M",
    `write -P 2 ${4 * 2 ** 40 - 2 * MiB} 2M`,
  ]);
  const server = await startQemuNbd(disk, { readOnly: true, bitmap: "b0" });
  const out = dir.join("out.raw");
  try {
    const [cmd, ...rest] = voltCommand();
    const child = new Deno.Command(cmd, {
      args: [...rest, "nbd", "copy", server.uri, out, "--bitmap", "b0", "--bwlimit", "1024"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // The writer creates the file once the reader has connected; the map is read then.
    for (let i = 0; i < 2000; i++) {
      if (await Deno.stat(out).then(() => true, () => false)) break;
      await new Promise((r) => setTimeout(r, 2));
    }
    server.kill("SIGKILL");
    const r = await child.output();
    const stderr = new TextDecoder().decode(r.stderr);
    assert.equal(r.code, 1, stderr);
    const errors = stderr.trim().split("\n");
    assert.equal(errors.length, 1, stderr);
    // Either the map (block status) or a read was under way: both name where.
    assert.match(errors[0], /^volt: reading .*nbd\+unix:.* failed: |^volt: reading the map/);
    assert.match(errors[0], /at offset \d+/);
    await assert.rejects(Deno.stat(out), Deno.errors.NotFound, "the half-written file is removed");
  } finally {
    await server.stop();
  }
});

Deno.test("the target server killed mid-copy: the error names the offset and the target", async () => {
  await using dir = new TempDir();
  const disk = await slowDisk(dir);
  await using server = await startQemuNbd(disk, { readOnly: true });
  const target = dir.join("t.qcow2");
  await createImage(target, 64 * MiB);
  for (const writer of ["reader", "worker"] as const) {
    const dst = await startQemuNbd(target, {});
    try {
      const copy = copyNbd({
        source: { uri: server.uri },
        sink: { type: "nbd", target: { uri: dst.uri } },
        writer,
        bwlimitKiB: 4096,
        progressInterval: 50,
        onProgress: (p) => {
          if (p.bytesDone > 0) dst.kill("SIGKILL");
        },
      });
      await assert.rejects(copy, (err: Error) => {
        assert.match(err.message, /^writing \d+ bytes at offset \d+ to nbd\+unix:.* failed: /);
        return true;
      });
    } finally {
      await dst.stop();
    }
  }
});

Deno.test("SIGINT stops a copy cleanly with one line and removes the file it created", async () => {
  await using dir = new TempDir();
  const disk = await slowDisk(dir);
  await using server = await startQemuNbd(disk, { readOnly: true });
  const out = dir.join("out.raw");
  const run = await spawnVoltUntil(
    ["nbd", "copy", server.uri, out, "--bwlimit", "2048", "--progress"],
    /copied [\d.]+ \w+ of/,
  );
  run.child.kill("SIGINT");
  const r = await run.finished;
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /volt: nbd copy interrupted after [\d.]+ \w+ of 64\.0 MiB/);
  assert.doesNotMatch(r.stderr, /copied nbd\+unix/);
  await assert.rejects(Deno.stat(out), Deno.errors.NotFound);
});

Deno.test("an aborted signal rejects copyNbd and keeps an existing file", async () => {
  await using dir = new TempDir();
  const disk = await slowDisk(dir);
  await using server = await startQemuNbd(disk, { readOnly: true });
  const out = dir.join("existing.raw");
  await Deno.writeFile(out, new Uint8Array(4096));
  const controller = new AbortController();
  const copy = copyNbd({
    source: { uri: server.uri },
    sink: { type: "raw", path: out },
    bwlimitKiB: 4096,
    signal: controller.signal,
    progressInterval: 50,
    onProgress: (p) => {
      if (p.bytesDone > 0) controller.abort();
    },
  });
  await assert.rejects(copy, { name: "CopyCancelledError" });
  assert.ok((await Deno.stat(out)).isFile, "a file the copy did not create is kept");
});

Deno.test({
  name: "a full file system ends the copy with one line naming the offset; no file is left",
  ignore: Deno.uid() !== 0,
  async fn() {
    await using dir = new TempDir();
    const disk = await slowDisk(dir);
    await using server = await startQemuNbd(disk, { readOnly: true });
    const mnt = dir.join("small");
    await Deno.mkdir(mnt);
    const mount = await new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=2M", "tmpfs", mnt],
    }).output();
    assert.equal(mount.code, 0, new TextDecoder().decode(mount.stderr));
    try {
      const noSpace = /^writing \d+ bytes at offset \d+ to .*small\/out\.raw failed: No space left/;
      // The CLI (raw files are written on the main thread) and a writer Worker.
      const r = await volt(["nbd", "copy", server.uri, `${mnt}/out.raw`]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr.replace(/^volt: /, ""), noSpace);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      await assert.rejects(
        copyNbd({
          source: { uri: server.uri },
          sink: { type: "raw", path: `${mnt}/out.raw`, sync: true },
          writer: "worker",
        }),
        (err: Error) => noSpace.test(err.message),
      );
      assert.deepEqual([...Deno.readDirSync(mnt)], [], "the file the copy created is removed");
    } finally {
      await new Deno.Command("umount", { args: [mnt] }).output();
    }
  },
});

Deno.test("VOLT_LIBNBD=/nonexistent: one clear line", async () => {
  await using dir = new TempDir();
  const uri = "nbd+unix:///?socket=/nonexistent.sock";
  // copy: the main thread only preloads the library (failing quietly); the reader reports.
  for (const args of [["nbd", "map", uri], ["nbd", "copy", uri, dir.join("o.raw")]]) {
    const r = await volt(args, { env: { VOLT_LIBNBD: "/nonexistent" } });
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, /^volt: libnbd\.so\.0 not found at '\/nonexistent'.*install libnbd0/);
  }
  await assert.rejects(Deno.stat(dir.join("o.raw")), Deno.errors.NotFound);
});

Deno.test("no server, a missing bitmap, a read-only or small target: one line each", async () => {
  await using dir = new TempDir();
  const disk = await buildImage(dir.join("d.qcow2"), 8 * MiB, ["write -P 1 0 1M"]);
  await using server = await startQemuNbd(disk, { readOnly: true, bitmap: "b0" });
  const small = dir.join("small.qcow2");
  await createImage(small, 4 * MiB);
  await using smallServer = await startQemuNbd(small, {});
  // A separate server: qemu-nbd serves one client at a time unless started with -e.
  const other = await buildImage(dir.join("other.qcow2"), 8 * MiB, []);
  await using readOnly = await startQemuNbd(other, { readOnly: true });

  const cases: [string[], RegExp][] = [
    [["nbd", "map", dir.join("none.sock")], /cannot connect to .*none\.sock/],
    [["nbd", "map", server.uri, "--bitmap", "nope"], /no dirty bitmap 'nope'/],
    [["nbd", "copy", server.uri, dir.join("o.raw"), "--bitmap", "nope"], /no dirty bitmap/],
    [["nbd", "copy", server.uri, readOnly.uri], /read-only/],
    [["nbd", "copy", server.uri, smallServer.uri], /holds 4194304 bytes, less than/],
    [["nbd", "copy", server.uri, dir.path], /is a directory/],
    [["nbd", "copy", server.uri, dir.join("o.raw"), "--depth", "0"], /--depth/],
  ];
  for (const [args, pattern] of cases) {
    const r = await volt(args);
    assert.notEqual(r.code, 0, args.join(" "));
    assert.equal(r.stderr.trim().split("\n").length, 1, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, pattern);
  }
  await assert.rejects(Deno.stat(dir.join("o.raw")), Deno.errors.NotFound);
});
