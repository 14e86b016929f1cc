// Bad input: each gets one clear line on stderr, a non-zero exit, and leaves nothing behind.
import assert from "node:assert/strict";
import {
  concat,
  exists,
  le64,
  listDir,
  pattern,
  sh,
  StreamEnv,
  voltShell,
} from "./helpers/streams_env.ts";
import { voltCommand, type VoltResult } from "./helpers/volt.ts";

const te = new TextEncoder();

function meta(json: string): Uint8Array {
  const bytes = te.encode(json);
  return concat(le64(bytes.length), bytes);
}

/** One error line matching `re`, exit code 1. */
function failsWith(r: VoltResult, re: RegExp): void {
  assert.equal(r.code, 1, `expected failure, got ${r.code}: ${r.stderr}`);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `more than one line: ${r.stderr}`);
  assert.match(lines[0], re);
  assert.equal(r.stdout, "");
}

/** The image directory of guest 100 holds nothing (no half-imported volume). */
function assertNoImages(env: StreamEnv, storage = "local"): void {
  assert.deepEqual(listDir(env.path("100/x", storage).replace(/\/x$/, "")), []);
}

Deno.test("import of an unknown format is refused naming the known ones", async () => {
  await using env = new StreamEnv();
  failsWith(
    await env.volt(["import", "local:100/vm-100-disk-0.raw", "gzip+size", "-"], le64(0)),
    /unknown stream format 'gzip\+size' \(known: raw\+size, tar\+size/,
  );
  failsWith(
    await env.volt(["import", "local:100/vm-100-disk-0.raw", "zfs", "-"], le64(0)),
    /volume import format 'zfs' not available/,
  );
  failsWith(
    await env.volt(["export", "local:100/vm-100-disk-0.raw", "gzip+size", env.join("o")]),
    /unknown stream format/,
  );
  assert.ok(!exists(env.join("o")));
  assertNoImages(env);
});

Deno.test("a stream under 8 bytes is refused before anything is allocated", async () => {
  await using env = new StreamEnv();
  failsWith(
    await env.volt(["import", "local:100/vm-100-disk-0.raw", "raw+size", "-"], new Uint8Array(5)),
    /stream ended after 5 bytes, before its 8-byte size header/,
  );
  failsWith(
    await env.volt(["import", "local:100/vm-100-disk-0.raw", "raw+size", "-"], ""),
    /stream ended after 0 bytes/,
  );
  assertNoImages(env);
});

Deno.test("a truncated raw payload is an error and the volume is freed", async () => {
  await using env = new StreamEnv();
  const stream = concat(le64(1024 * 1024), pattern(1024 * 1024 - 512));
  failsWith(
    await env.volt(["import", "local:100/vm-100-disk-0.raw", "raw+size", "-"], stream),
    /stream truncated: 1048064 bytes of data where its size header announced 1048576/,
  );
  assertNoImages(env);
  // The same for a file that is not a disk: nothing appears in template/iso.
  failsWith(
    await env.volt(["import", "local:iso/x.iso", "raw+size", "-"], stream),
    /stream truncated/,
  );
  assert.deepEqual(listDir(env.join("local", "template", "iso")), []);
});

Deno.test("a raw payload longer than its header is an error", async () => {
  await using env = new StreamEnv();
  failsWith(
    await env.volt(
      ["import", "local:100/vm-100-disk-0.raw", "raw+size", "-"],
      concat(le64(1024), pattern(1025)),
    ),
    /stream is longer than its size header says \(more than 1024 bytes/,
  );
  assertNoImages(env);
});

Deno.test("an oversized metadata length is refused without reading it", async () => {
  await using env = new StreamEnv();
  failsWith(
    await env.volt(
      ["import", "local:100/vm-100-disk-0.raw", "images+meta", "-"],
      concat(le64(2 ** 40), te.encode("{}")),
    ),
    /metadata header length 1099511627776 exceeds the limit of 65536 bytes/,
  );
  assertNoImages(env);
});

Deno.test("malformed metadata JSON is refused", async () => {
  await using env = new StreamEnv();
  failsWith(
    await env.volt(
      ["import", "local:100/vm-100-disk-0.raw", "images+meta", "-"],
      concat(meta('{"vtype":"images","format":'), le64(512), new Uint8Array(512)),
    ),
    /malformed metadata header/,
  );
  failsWith(
    await env.volt(
      ["import", "local:iso/a.iso", "iso+meta", "-"],
      concat(meta('["iso","raw"]'), le64(512), new Uint8Array(512)),
    ),
    /malformed metadata header: not a JSON object/,
  );
  assertNoImages(env);
});

Deno.test("volume type mismatches: with the import format, and with the metadata header", async () => {
  await using env = new StreamEnv();
  const isoStream = concat(meta('{"vtype":"iso","format":"raw"}'), le64(512), pattern(512));
  failsWith(
    await env.volt(["import", "local:100/vm-100-disk-0.raw", "iso+meta", "-"], isoStream),
    /^volt: volume type does not match import format/,
  );
  failsWith(
    await env.volt(["import", "local:100/vm-100-disk-0.raw", "images+meta", "-"], isoStream),
    /^volt: volume type does not match metadata header/,
  );
  assertNoImages(env);
});

Deno.test("a data format that does not fit the target file is refused", async () => {
  await using env = new StreamEnv();
  const raw = concat(le64(512), pattern(512));
  failsWith(
    await env.volt(["import", "local:100/vm-100-disk-0.qcow2", "raw+size", "-"], raw),
    /cannot import format raw\+size into a file of format qcow2/,
  );
  failsWith(
    await env.volt(
      ["import", "local:100/vm-100-disk-0.raw", "qcow2+size", "-", "--with-snapshots"],
      raw,
    ),
    /cannot import format qcow2\+size into a file of format raw/,
  );
  failsWith(
    await env.volt(
      ["import", "local:100/vm-100-disk-0.raw", "images+meta", "-"],
      concat(meta('{"vtype":"images","format":"vmdk"}'), raw),
    ),
    /format images\+meta \(data format vmdk\) cannot be imported without snapshots/,
  );
  failsWith(
    await env.volt(["import", "local:100/vm-100-disk-0.qcow2", "qcow2+size", "-"], raw),
    /format qcow2\+size cannot be imported without snapshots/,
  );
  failsWith(
    await env.volt(
      ["import", "local:100/vm-100-disk-0.raw", "raw+size", "-", "--with-snapshots"],
      raw,
    ),
    /format raw\+size cannot be imported with snapshots/,
  );
  failsWith(
    await env.volt(["import", "local:101/subvol-101-disk-0.subvol", "raw+size", "-"], raw),
    /cannot import format raw\+size into a file of format subvol/,
  );
  assertNoImages(env);
});

Deno.test("an existing target is refused and left untouched", async () => {
  await using env = new StreamEnv();
  const before = pattern(4096, 9);
  const path = env.put("100/vm-100-disk-0.raw", before);
  failsWith(
    await env.volt(
      ["import", "local:100/vm-100-disk-0.raw", "raw+size", "-"],
      concat(le64(512), new Uint8Array(512)),
    ),
    new RegExp(`file '${path}' already exists`),
  );
  assert.deepEqual(Deno.readFileSync(path), before);
  env.put("snippets/a.sh", te.encode("keep"));
  failsWith(
    await env.volt(
      ["import", "local:snippets/a.sh", "raw+size", "-", "--allow-rename"],
      concat(le64(512), pattern(3)),
    ),
    /file '.*snippets\/a.sh' already exists/,
  );
  assert.equal(Deno.readTextFileSync(env.path("snippets/a.sh")), "keep");
});

Deno.test("a truncated qcow2 payload is detected by the image check and freed", async () => {
  await using env = new StreamEnv();
  const src = env.join("src.qcow2");
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", src, "4M"]);
  await sh("qemu-io", ["-f", "qcow2", "-c", "write -P 0x77 0 2M", src]);
  const file = Deno.readFileSync(src);
  const r = await env.volt(
    ["import", "local:100/vm-100-disk-0.qcow2", "qcow2+size", "-", "--with-snapshots"],
    concat(le64(4 * 1024 * 1024), file.subarray(0, file.length - 300 * 1024)),
  );
  failsWith(r, /imported qcow2 image is damaged or truncated/);
  assertNoImages(env);
});

Deno.test("an imported qcow2 with a backing file is refused (it could point anywhere)", async () => {
  await using env = new StreamEnv();
  const src = env.join("evil.qcow2");
  await sh("qemu-img", [
    "create",
    "-q",
    "-f",
    "qcow2",
    "-F",
    "raw",
    "-b",
    "/etc/hostname",
    src,
    "1M",
  ]);
  const r = await env.volt(
    ["import", "local:100/vm-100-disk-0.qcow2", "qcow2+size", "-", "--with-snapshots"],
    concat(le64(1024 * 1024), Deno.readFileSync(src)),
  );
  failsWith(r, /imported qcow2 image has a backing file '\/etc\/hostname': refusing it/);
  assertNoImages(env);
});

Deno.test("a vmdk naming a parent is refused on import and on export", async () => {
  await using env = new StreamEnv();
  const dir = env.join("v");
  Deno.mkdirSync(dir);
  await sh("qemu-img", ["create", "-q", "-f", "vmdk", `${dir}/base.vmdk`, "1M"]);
  await sh("qemu-img", [
    "create",
    "-q",
    "-f",
    "vmdk",
    "-F",
    "vmdk",
    "-b",
    "base.vmdk",
    `${dir}/child.vmdk`,
  ]);
  const child = Deno.readFileSync(`${dir}/child.vmdk`);
  failsWith(
    await env.volt(
      ["import", "local:100/vm-100-disk-0.vmdk", "vmdk+size", "-", "--with-snapshots"],
      concat(le64(1024 * 1024), child),
    ),
    /imported vmdk image names a parent 'base.vmdk': refusing it/,
  );
  assertNoImages(env);
  env.put("100/vm-100-disk-1.vmdk", child);
  env.put("100/base.vmdk", Deno.readFileSync(`${dir}/base.vmdk`));
  failsWith(
    await env.volt(["export", "local:100/vm-100-disk-1.vmdk", "raw+size", env.join("o")]),
    /names a parent image 'base.vmdk': refusing to read it/,
  );
  assert.ok(!exists(env.join("o")));
});

Deno.test("a storage with snapshot-as-volume-chain refuses qcow2 imports with snapshots", async () => {
  await using env = new StreamEnv();
  const src = env.join("a.qcow2");
  await sh("qemu-img", ["create", "-q", "-f", "qcow2", src, "1M"]);
  failsWith(
    await env.volt(
      ["import", "chain:100/vm-100-disk-0.qcow2", "qcow2+size", "-", "--with-snapshots"],
      concat(le64(1024 * 1024), Deno.readFileSync(src)),
    ),
    /storage 'chain' keeps snapshots as volume chains/,
  );
  const formats = await env.volt([
    "import-formats",
    "chain:100/vm-100-disk-0.qcow2",
    "--with-snapshots",
  ]);
  assert.equal(formats.code, 1);
  assertNoImages(env, "chain");
});

Deno.test("export refuses a format the volume does not offer, naming those it does", async () => {
  await using env = new StreamEnv();
  env.put("100/vm-100-disk-0.raw", pattern(512));
  failsWith(
    await env.volt(["export", "local:100/vm-100-disk-0.raw", "tar+size", env.join("o")]),
    /volume export format tar\+size not available for 'local:100\/vm-100-disk-0.raw' without snapshots \(available: images\+meta, raw\+size\)/,
  );
  failsWith(
    await env.volt(["export", "local:100/vm-100-disk-0.raw", "iso+meta", env.join("o")]),
    /volume type does not match export format/,
  );
  failsWith(
    await env.volt(["export", "local:100/vm-100-disk-9.raw", "raw+size", env.join("o")]),
    /does not exist/,
  );
  assert.ok(!exists(env.join("o")));
});

/** Starts an import reading a pipe we control; returns the child and its stdin writer. */
function startImport(env: StreamEnv, args: string[]) {
  const [cmd, ...rest] = voltCommand();
  const child = new Deno.Command(cmd, {
    args: [...rest, "import", ...args],
    env: { NO_COLOR: "1", ...env.env },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return { child, writer: child.stdin.getWriter() };
}

async function waitFor(path: string): Promise<void> {
  for (let i = 0; i < 400 && !exists(path); i++) await new Promise((r) => setTimeout(r, 25));
  assert.ok(exists(path), `${path} never appeared`);
}

Deno.test("an import killed half way (SIGTERM) frees the volume and says so", async () => {
  await using env = new StreamEnv();
  const target = env.path("100/vm-100-disk-0.raw");
  const { child, writer } = startImport(env, ["local:100/vm-100-disk-0.raw", "raw+size", "-"]);
  await writer.write(concat(le64(8 * 1024 * 1024), pattern(256 * 1024)));
  await waitFor(target);
  await new Promise((r) => setTimeout(r, 100));
  child.kill("SIGTERM");
  const out = await child.output();
  await writer.close().catch(() => {});
  const stderr = new TextDecoder().decode(out.stderr);
  assert.notEqual(out.code, 0);
  assert.match(
    stderr,
    /import of 'local:100\/vm-100-disk-0.raw' interrupted by SIGTERM; nothing was left half-written/,
  );
  assert.ok(!exists(target), "the half-imported volume is still there");
  assertNoImages(env);
});

Deno.test("a volume an import killed with SIGKILL left behind is freed by the next import", async () => {
  await using env = new StreamEnv();
  const target = env.path("100/vm-100-disk-0.raw");
  const marker = env.path("100/.vm-100-disk-0.raw.volt-import");
  const { child, writer } = startImport(env, ["local:100/vm-100-disk-0.raw", "raw+size", "-"]);
  await writer.write(concat(le64(8 * 1024 * 1024), pattern(256 * 1024)));
  await waitFor(target);
  await waitFor(marker);
  child.kill("SIGKILL");
  await child.output();
  await writer.close().catch(() => {});
  assert.ok(exists(target) && exists(marker), "SIGKILL ran no cleanup: volume and mark stay");

  const data = pattern(64 * 1024);
  const r = await env.volt(
    ["import", "local:100/vm-100-disk-0.raw", "raw+size", "-"],
    concat(le64(data.length), data),
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stderr,
    /storage 'local': freed '100\/vm-100-disk-0.raw': an import killed earlier \(pid \d+\) left it half-written/,
  );
  assert.match(r.stdout, /successfully imported 'local:100\/vm-100-disk-0.raw'/);
  assert.deepEqual(Deno.readFileSync(target), data);
  assert.deepEqual(listDir(env.path("100/x").replace(/\/x$/, "")), ["vm-100-disk-0.raw"]);
});

Deno.test("a subvolume import killed half way (SIGTERM) stops tar and removes the subvolume", async () => {
  await using env = new StreamEnv();
  const target = env.path("101/subvol-101-disk-0.subvol");
  const { child, writer } = startImport(env, [
    "local:101/subvol-101-disk-0.subvol",
    "tar+size",
    "-",
  ]);
  // A tar stream that never ends: the header of a 10 MiB member and part of its data.
  const tarPart = await new Deno.Command("sh", {
    args: [
      "-c",
      `cd '${env.join()}' && head -c 10485760 /dev/zero > big && tar -cf - big | head -c 1048576`,
    ],
    stdout: "piped",
  }).output();
  await writer.write(concat(le64(0), tarPart.stdout));
  await waitFor(target);
  await new Promise((r) => setTimeout(r, 200));
  child.kill("SIGTERM");
  const out = await child.output();
  await writer.close().catch(() => {});
  assert.notEqual(out.code, 0);
  assert.match(new TextDecoder().decode(out.stderr), /interrupted by SIGTERM/);
  assert.ok(!exists(target));
});

Deno.test("an import through a pipe whose exporter fails leaves nothing", async () => {
  await using env = new StreamEnv();
  // The exporter fails (no such volume) after the importer started: the importer sees 0 bytes.
  const r = await env.shell(
    `${voltShell(["export", "local:100/vm-100-disk-7.raw", "raw+size", "-"])} | ${
      voltShell(["import", "other:100/vm-100-disk-0.raw", "raw+size", "-"])
    }`,
  );
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /does not exist/);
  assert.match(r.stderr, /stream ended after 0 bytes/);
  assertNoImages(env, "other");
});

Deno.test({
  name: "a full disk stops the import with one line and frees the volume",
  ignore: Deno.uid() !== 0,
  async fn() {
    await using env = new StreamEnv();
    const mnt = env.join("small");
    Deno.mkdirSync(mnt);
    await sh("mount", ["-t", "tmpfs", "-o", "size=1M", "tmpfs", mnt]);
    try {
      const cfg = env.join("small.cfg");
      Deno.writeTextFileSync(cfg, `dir: small\n\tpath ${mnt}\n\tcontent images,iso\n`);
      const stream = concat(le64(3 * 1024 * 1024), pattern(3 * 1024 * 1024));
      for (const volid of ["small:100/vm-100-disk-0.raw", "small:iso/big.iso"]) {
        const r = await env.volt(["import", volid, "raw+size", "-", "--config", cfg], stream);
        failsWith(r, /cannot write '.*': No space left on device/);
      }
      assert.deepEqual(listDir(`${mnt}/images/100`), []);
      assert.deepEqual(listDir(`${mnt}/template/iso`), []);
    } finally {
      await sh("umount", [mnt]);
    }
  },
});
