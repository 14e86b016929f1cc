import assert from "node:assert/strict";
import { parseVolumeId } from "../lib/storage/volume_id.ts";
import { parseDirVolname } from "../lib/storage/dir_volname.ts";
import { sh, TempDir, volt } from "./helpers/volt.ts";

function envFor(tmp: TempDir): Record<string, string> {
  return { VOLT_CONFIG: tmp.join("storage.cfg"), VOLT_HOME: tmp.join("home") };
}

async function qemuInfo(path: string): Promise<{ format: string; "virtual-size": number }> {
  return JSON.parse(await sh("qemu-img", ["info", "--output=json", path]));
}

for (const [format, expectedFormat] of [["qcow2", "qcow2"], ["raw", "raw"], ["vmdk", "vmdk"]]) {
  Deno.test(`alloc creates a ${format} volume that qemu-img, list and free agree on`, async () => {
    await using tmp = new TempDir();
    const env = envFor(tmp);
    const a = await volt(["alloc", "local", "100", "auto", "1G", "--format", format], { env });
    assert.equal(a.code, 0, a.stderr);
    const volid = `local:100/vm-100-disk-0.${format}`;
    assert.equal(a.stdout.trim(), `successfully created '${volid}'`);
    const p = await volt(["path", volid], { env });
    assert.equal(p.stdout.trim(), tmp.join("home", "images", "100", `vm-100-disk-0.${format}`));
    const info = await qemuInfo(p.stdout.trim());
    assert.equal(info.format, expectedFormat);
    assert.equal(info["virtual-size"], 2 ** 30);
    const l = await volt(["list", "local", "--output-format", "json"], { env });
    const list = JSON.parse(l.stdout) as { volid: string; size: number; format: string }[];
    assert.deepEqual(list.map((v) => [v.volid, v.size, v.format]), [[volid, 2 ** 30, format]]);
    const f = await volt(["free", volid], { env });
    assert.equal(f.code, 0, f.stderr);
    await assert.rejects(Deno.stat(p.stdout.trim()), Deno.errors.NotFound);
    const again = await volt(["list", "local", "--output-format", "json"], { env });
    assert.deepEqual(JSON.parse(again.stdout), []);
  });
}

Deno.test("a raw volume is allocated sparse", async () => {
  await using tmp = new TempDir();
  const env = envFor(tmp);
  await volt(["alloc", "local", "100", "auto", "1G", "--format", "raw"], { env });
  const st = await Deno.stat(tmp.join("home/images/100/vm-100-disk-0.raw"));
  assert.equal(st.size, 2 ** 30);
  assert.ok((st.blocks ?? 0) * 512 < 1024 * 1024, "raw image should not be allocated");
});

Deno.test("a subvolume is a directory that list and free handle", async () => {
  await using tmp = new TempDir();
  const env = envFor(tmp);
  const a = await volt(["alloc", "local", "101", "auto", "0", "--format", "subvol"], { env });
  assert.equal(a.stdout.trim(), "successfully created 'local:101/subvol-101-disk-0.subvol'");
  const path = tmp.join("home/images/101/subvol-101-disk-0.subvol");
  assert.ok((await Deno.stat(path)).isDirectory);
  await Deno.writeTextFile(`${path}/hello`, "hi");
  const l = await volt(["list", "local", "--content", "rootdir", "--output-format", "json"], {
    env,
  });
  const [v] = JSON.parse(l.stdout);
  assert.equal(v.volid, "local:101/subvol-101-disk-0.subvol");
  assert.equal(v.content, "rootdir");
  assert.equal((await volt(["free", v.volid], { env })).code, 0);
  await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
});

Deno.test("an explicit name is used, and a taken or foreign name refused", async () => {
  await using tmp = new TempDir();
  const env = envFor(tmp);
  const a = await volt(["alloc", "local", "100", "vm-100-disk-7", "1M", "--format", "qcow2"], {
    env,
  });
  assert.equal(a.stdout.trim(), "successfully created 'local:100/vm-100-disk-7.qcow2'");
  const again = await volt(["alloc", "local", "100", "vm-100-disk-7.qcow2", "1M"], { env });
  assert.equal(again.code, 1);
  assert.match(again.stderr, /already exists/);
  const foreign = await volt(["alloc", "local", "100", "vm-200-disk-0.raw", "1M"], { env });
  assert.equal(foreign.code, 1);
  assert.match(foreign.stderr, /should be 'vm-100-\*'/);
  const snap = await volt(["alloc", "local", "100", "snap-s1-vm-100-disk-0.qcow2", "1M"], { env });
  assert.equal(snap.code, 1);
  const next = await volt(["alloc", "local", "100", "auto", "1M"], { env });
  assert.equal(next.stdout.trim(), "successfully created 'local:100/vm-100-disk-0.raw'");
});

Deno.test("two concurrent allocs of the next free name produce two different volumes", async () => {
  await using tmp = new TempDir();
  const env = envFor(tmp);
  // Create the storage first so both processes race on allocation, not on activation.
  await volt(["status"], { env });
  const runs = await Promise.all(
    [0, 1, 2].map(() => volt(["alloc", "local", "100", "auto", "1G"], { env })),
  );
  for (const r of runs) assert.equal(r.code, 0, r.stderr);
  const ids = runs.map((r) => r.stdout.trim()).sort();
  assert.equal(new Set(ids).size, 3, ids.join(", "));
  const files = [...Deno.readDirSync(tmp.join("home/images/100"))].map((e) => e.name).sort();
  assert.deepEqual(files, ["vm-100-disk-0.raw", "vm-100-disk-1.raw", "vm-100-disk-2.raw"]);
});

Deno.test("volume names that could leave the storage are refused with one line", async () => {
  await using tmp = new TempDir();
  const env = envFor(tmp);
  for (
    const volid of [
      "local:../../etc/passwd",
      "local:/etc/passwd",
      "local:100/../../../etc/passwd",
      "local:iso/a\nb.iso",
      "local:100//vm-100-disk-0.raw",
    ]
  ) {
    const r = await volt(["path", volid], { env });
    assert.equal(r.code, 1, volid);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /^volt: invalid volume name/);
  }
  assert.throws(() => parseVolumeId("local:iso/a\0b.iso"), /control character/);
  assert.throws(() => parseDirVolname("iso/x\0.iso"), /control character/);
});

Deno.test("a content directory symlinked outside the storage is refused", async () => {
  await using tmp = new TempDir();
  const env = envFor(tmp);
  await Deno.mkdir(tmp.join("home/template"), { recursive: true });
  await Deno.mkdir(tmp.join("elsewhere"));
  await Deno.writeTextFile(tmp.join("elsewhere/x.iso"), "secret");
  await Deno.symlink(tmp.join("elsewhere"), tmp.join("home/template/iso"));
  const r = await volt(["path", "local:iso/x.iso"], { env });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /outside the storage/);
});

Deno.test("a qcow2 whose backing file points outside the storage is reported unsafe, not opened", async () => {
  await using tmp = new TempDir();
  const env = envFor(tmp);
  await volt(["status"], { env });
  await Deno.mkdir(tmp.join("home/images/100"), { recursive: true });
  const outside = tmp.join("outside.qcow2");
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", outside, "1M"]);
  await sh("qemu-img", [
    "create",
    "-q",
    "-f",
    "qcow2",
    "-F",
    "qcow2",
    "-b",
    outside,
    tmp.join("home/images/100/vm-100-disk-0.qcow2"),
  ]);
  const r = await volt(["info", "local:100/vm-100-disk-0.qcow2"], { env });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /backing file '.*outside\.qcow2' points outside the storage/);
});

Deno.test("a failed qemu-img create leaves no file behind", async () => {
  await using tmp = new TempDir();
  await Deno.mkdir(tmp.join("bin"));
  await Deno.writeTextFile(
    tmp.join("bin/qemu-img"),
    "#!/bin/sh\necho 'qemu-img: injected failure' >&2\nexit 1\n",
  );
  await Deno.chmod(tmp.join("bin/qemu-img"), 0o755);
  const env = { ...envFor(tmp), PATH: `${tmp.join("bin")}:${Deno.env.get("PATH")}` };
  const r = await volt(["alloc", "local", "100", "auto", "1M", "--format", "qcow2"], { env });
  assert.equal(r.code, 1);
  assert.equal(r.stderr.trim(), "volt: qemu-img failed: qemu-img: injected failure");
  assert.deepEqual([...Deno.readDirSync(tmp.join("home/images/100"))], []);
});
