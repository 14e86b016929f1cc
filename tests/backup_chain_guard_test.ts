import assert from "node:assert/strict";
import { assertSafeBackupChain } from "../lib/backup/chain_guard.ts";
import { sh, TempDir } from "./helpers/volt.ts";

async function qcow2(path: string, backing?: string, extra: string[] = []): Promise<void> {
  const args = ["create", "-q", "-f", "qcow2", ...extra];
  if (backing !== undefined) args.push("-u", "-F", "qcow2", "-b", backing);
  await sh("qemu-img", [...args, path, "1M"]);
}

async function layout(tmp: TempDir) {
  const guest = tmp.join("store/100");
  await Deno.mkdir(`${guest}/qemu-1`, { recursive: true });
  await Deno.mkdir(`${guest}/qemu-2`);
  await Deno.mkdir(tmp.join("store/200/qemu-1"), { recursive: true });
  await qcow2(`${guest}/qemu-1/scsi0.qcow2`);
  return guest;
}

Deno.test("a full + incremental chain inside the guest's directory is accepted", async () => {
  await using tmp = new TempDir();
  const guest = await layout(tmp);
  await qcow2(`${guest}/qemu-2/scsi0.qcow2`, "../qemu-1/scsi0.qcow2");
  const chain = await assertSafeBackupChain(`${guest}/qemu-2/scsi0.qcow2`, {
    root: guest,
    maxDepth: 2,
  });
  assert.deepEqual(chain, [`${guest}/qemu-2/scsi0.qcow2`, `${guest}/qemu-1/scsi0.qcow2`]);
});

for (
  const [what, backing, message] of [
    ["/etc/passwd", "/etc/passwd", /absolute path/],
    [
      "another guest's backup",
      "../../200/qemu-1/scsi0.qcow2",
      /outside the guest's backup directory/,
    ],
    ["a json: name", 'json:{"driver":"file","filename":"/etc/passwd"}', /protocol or json: name/],
    ["an nbd: URI", "nbd+unix:///x?socket=/run/s", /protocol or json: name/],
    ["a missing file", "../qemu-9/scsi0.qcow2", /does not exist/],
  ] as const
) {
  Deno.test(`a backup whose backing file is ${what} is refused`, async () => {
    await using tmp = new TempDir();
    const guest = await layout(tmp);
    await qcow2(tmp.join("store/200/qemu-1/scsi0.qcow2"));
    await qcow2(`${guest}/qemu-2/scsi0.qcow2`, backing);
    await assert.rejects(
      assertSafeBackupChain(`${guest}/qemu-2/scsi0.qcow2`, { root: guest, maxDepth: 5 }),
      (err: Error) => {
        assert.match(err.message, /^unsafe backup image '.*qemu-2\/scsi0\.qcow2': /);
        assert.match(err.message, message);
        return true;
      },
    );
  });
}

Deno.test("a backing file that is a symlink out of the guest's directory is refused", async () => {
  await using tmp = new TempDir();
  const guest = await layout(tmp);
  await qcow2(tmp.join("outside.qcow2"));
  await Deno.symlink(tmp.join("outside.qcow2"), `${guest}/qemu-1/link.qcow2`);
  await qcow2(`${guest}/qemu-2/scsi0.qcow2`, "../qemu-1/link.qcow2");
  await assert.rejects(
    assertSafeBackupChain(`${guest}/qemu-2/scsi0.qcow2`, { root: guest, maxDepth: 5 }),
    /scsi0\.qcow2': its backing file '\.\.\/qemu-1\/link\.qcow2' resolves to '.*outside\.qcow2', outside/,
  );
});

Deno.test("an image with an external data file is refused", async () => {
  await using tmp = new TempDir();
  const guest = await layout(tmp);
  await sh("qemu-img", [
    "create",
    "-q",
    "-f",
    "qcow2",
    "-o",
    `data_file=${tmp.join("data.raw")}`,
    `${guest}/qemu-2/scsi0.qcow2`,
    "1M",
  ]);
  await assert.rejects(
    assertSafeBackupChain(`${guest}/qemu-2/scsi0.qcow2`, { root: guest, maxDepth: 5 }),
    /external data file/,
  );
});

Deno.test("a raw file in the chain, a loop and a chain deeper than the backups are refused", async () => {
  await using tmp = new TempDir();
  const guest = await layout(tmp);
  await Deno.writeFile(`${guest}/qemu-1/raw.qcow2`, new Uint8Array(4096));
  await qcow2(`${guest}/qemu-2/a.qcow2`, "../qemu-1/raw.qcow2");
  await assert.rejects(
    assertSafeBackupChain(`${guest}/qemu-2/a.qcow2`, { root: guest, maxDepth: 5 }),
    /raw\.qcow2': .*no qcow2 magic/,
  );
  await qcow2(`${guest}/qemu-2/loop1.qcow2`, "loop2.qcow2");
  await qcow2(`${guest}/qemu-2/loop2.qcow2`, "loop1.qcow2");
  await assert.rejects(
    assertSafeBackupChain(`${guest}/qemu-2/loop1.qcow2`, { root: guest, maxDepth: 5 }),
    /loops/,
  );
  await qcow2(`${guest}/qemu-2/scsi0.qcow2`, "../qemu-1/scsi0.qcow2");
  await assert.rejects(
    assertSafeBackupChain(`${guest}/qemu-2/scsi0.qcow2`, { root: guest, maxDepth: 1 }),
    /deeper than the 1 backups/,
  );
});
