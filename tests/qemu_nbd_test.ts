import assert from "node:assert/strict";
import { QemuNbdServer } from "../lib/qemu/qemu_nbd.ts";
import {
  bitmapName,
  hasUsableBitmap,
  listBitmaps,
  resetBitmap,
} from "../lib/backup/offline_bitmap.ts";
import { backupEnv } from "./helpers/backup.ts";
import { sh, TempDir, voltCommand } from "./helpers/volt.ts";

Deno.test("qemu-nbd serves an image with its bitmap on a private socket and stops by PID", async () => {
  await using tmp = new TempDir();
  const img = tmp.join("disk.qcow2");
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", img, "8M"]);
  const name = bitmapName("backup");
  assert.equal(name, "volt-backup");
  assert.equal(await hasUsableBitmap(img, name), false);
  await resetBitmap(img, name);
  assert.equal(await hasUsableBitmap(img, name), true);
  await sh("qemu-io", ["-f", "qcow2", "-c", "write 1M 64k", img]);
  const server = await QemuNbdServer.start({
    image: img,
    format: "qcow2",
    socket: tmp.join("nbd.sock"),
    readOnly: true,
    bitmaps: [name],
  });
  try {
    assert.equal(server.uri, `nbd+unix:///disk?socket=${tmp.join("nbd.sock")}`);
    const map = await sh("nbdinfo", [`--map=qemu:dirty-bitmap:${name}`, server.uri]);
    const dirty = map.trim().split("\n").map((l) => l.trim().split(/\s+/)).filter((f) =>
      f[2] === "1"
    );
    assert.deepEqual(dirty.map((f) => [Number(f[0]), Number(f[1])]), [[1048576, 65536]]);
    // The server is still there for a second client (-t).
    assert.match(await sh("nbdinfo", ["--size", server.uri]), /^8388608$/m);
  } finally {
    await server.stop();
  }
  await assert.rejects(Deno.stat(tmp.join("nbd.sock")), Deno.errors.NotFound);
  assert.throws(() => Deno.kill(server.pid, "SIGCONT"));
  await resetBitmap(img, name);
  assert.deepEqual((await listBitmaps(img)).map((b) => b.name), [name]);
  const map = await sh("qemu-img", ["info", "--output=json", img]);
  assert.ok(map.includes(name));
});

Deno.test("qemu-nbd that cannot open its image fails with one line naming it", async () => {
  await using tmp = new TempDir();
  await assert.rejects(
    QemuNbdServer.start({
      image: tmp.join("missing.qcow2"),
      format: "qcow2",
      socket: tmp.join("s"),
    }),
    /qemu-nbd could not serve '.*missing\.qcow2'/,
  );
});

/** PIDs of qemu-nbd processes whose command line names `path`. */
async function qemuNbdServing(path: string): Promise<number[]> {
  const out = await new Deno.Command("pgrep", { args: ["-f", `qemu-nbd .*${path}`] }).output();
  return new TextDecoder().decode(out.stdout).trim().split("\n").filter(Boolean).map(Number);
}

Deno.test("a killed (SIGKILL) volt backup leaves no qemu-nbd holding the image", async () => {
  await using tmp = new TempDir();
  const e = backupEnv(tmp);
  const img = tmp.join("disk.qcow2");
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", img, "64M"]);
  await sh("qemu-io", ["-f", "qcow2", "-c", "write -P 7 0 32M", img]);
  await Deno.writeTextFile(tmp.join("guest.conf"), "memory: 512\n");
  // 1 MiB/s: the copy of 32 MiB is still running when volt is killed.
  const child = new Deno.Command(voltCommand()[0], {
    args: [
      ...voltCommand().slice(1),
      "backup",
      "100",
      "--disk",
      `scsi0=${img}`,
      "--config",
      tmp.join("guest.conf"),
      "--bwlimit",
      "1024",
    ],
    env: { NO_COLOR: "1", ...e.env },
    stdout: "null",
    stderr: "null",
  }).spawn();
  let servers: number[] = [];
  for (let i = 0; i < 200 && servers.length === 0; i++) {
    await new Promise((r) => setTimeout(r, 50));
    servers = await qemuNbdServing(img);
  }
  assert.equal(servers.length, 1, "volt started one qemu-nbd for the image");
  child.kill("SIGKILL");
  assert.equal((await child.status).signal, "SIGKILL");
  for (let i = 0; i < 100 && (await qemuNbdServing(img)).length > 0; i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.deepEqual(await qemuNbdServing(img), [], "qemu-nbd died with volt");
  // The image is not locked: a writer can open it.
  await sh("qemu-io", ["-f", "qcow2", "-c", "write -P 8 0 64k", img]);
});
