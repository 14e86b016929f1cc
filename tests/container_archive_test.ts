/**
 * Container archives with the real tar, mksquashfs and unsquashfs, as root: a container tree
 * (uid 100000, setuid, symlinks, a hard link, a sparse 1 GiB file, xattrs, ACLs, a fifo)
 * archived and extracted again must list the same; excluded paths must be absent.
 */

import assert from "node:assert/strict";
import {
  type ContainerArchiveFormat,
  createContainerArchive,
  detectArchiveFormat,
  extractContainerArchive,
} from "../lib/backup/container_archive.ts";
import { mksquashfsExcludeArgs, tarExcludeArgs } from "../lib/backup/exclude_patterns.ts";
import { type Clock, RateLimiter, throttleStream } from "../lib/backup/throttle.ts";
import { VoltError } from "../lib/errors.ts";
import { InterruptedError } from "../lib/signals.ts";
import { treeListing } from "./helpers/tree_listing.ts";
import {
  archiveMembers,
  buildContainerTree,
  EXCLUDED,
  EXCLUDES,
  isExcluded,
  randomBytes,
  withoutAcls,
  writeWithMode,
} from "./helpers/container_tree.ts";
import { sh, TempDir } from "./helpers/volt.ts";

const isRoot = Deno.uid() === 0;
const GiB = 1024 ** 3;
const FORMATS: ContainerArchiveFormat[] = ["tar", "squashfs"];
const FILE: Record<ContainerArchiveFormat, string> = {
  tar: "archive.tar",
  squashfs: "archive.sqfs",
};

/** Make a source tree, archive it, extract it into a fresh directory; both listings. */
async function roundTrip(
  tmp: TempDir,
  format: ContainerArchiveFormat,
  options: { sparse: boolean; excludes?: readonly string[]; bandwidthLimit?: number },
) {
  const src = tmp.join("rootfs");
  await Deno.mkdir(src);
  await buildContainerTree(src, options);
  const archive = tmp.join(FILE[format]);
  const log: string[] = [];
  const result = await createContainerArchive({
    format,
    directory: src,
    target: archive,
    excludePatterns: options.excludes,
    bandwidthLimit: options.bandwidthLimit,
    log: (line) => log.push(line),
  });
  assert.equal(result.size, (await Deno.stat(archive)).size);
  const out = tmp.join("restored");
  await Deno.mkdir(out);
  await extractContainerArchive(archive, out);
  return { src, archive, log, before: await treeListing(src), after: await treeListing(out) };
}

Deno.test({
  name: "tar: a container tree restores identically (owners, setuid, links, xattrs, ACLs, holes)",
  ignore: !isRoot,
  async fn() {
    await using tmp = new TempDir();
    const { before, after, archive } = await roundTrip(tmp, "tar", { sparse: true });
    const expected = before.filter((e) => e.path !== "lost+found");
    assert.deepEqual(after, expected);

    // The listing holds what the test is about (a broken tree would compare equal too).
    const at = (path: string) => after.find((e) => e.path === path)!;
    assert.equal(at(".").uid, 100000);
    assert.equal(at("usr/bin/sudo").mode, "4755");
    assert.equal(at("usr/bin/wall").mode, "2755");
    assert.equal(at("tmp").mode, "1777");
    assert.equal(at("etc/shadow").gid, 100042);
    assert.equal(at("home/user/.config/settings").uid, 101000);
    assert.equal(at("usr/bin/sh").target, "busybox");
    assert.equal(at("etc/passwd.hardlink").hardLink, "etc/passwd");
    assert.equal(at("run/initctl").type, "fifo");
    assert.deepEqual(at("etc/hostname").xattrs, {
      "user.comment": "0x636f6e7461696e657220636f6e666967",
    });
    assert.ok(at("srv/shared").acl?.includes("user:101000:rwx"));
    assert.ok(at("srv/shared").acl?.includes("default:user:101000:rwx"));
    assert.ok(at("srv/shared/report.txt").acl?.includes("user:101000:rw-"));
    const disk = at("var/lib/images/disk.raw");
    assert.equal(disk.size, GiB);
    assert.equal(disk.sparse, true);
    assert.ok((await Deno.stat(archive)).size < 1024 * 1024, "the hole is not in the archive");
  },
});

Deno.test({
  name: "squashfs: a container tree restores identically except for POSIX ACLs",
  ignore: !isRoot,
  async fn() {
    await using tmp = new TempDir();
    const { before, after, log } = await roundTrip(tmp, "squashfs", { sparse: true });
    const expected = withoutAcls(before.filter((e) => e.path !== "lost+found"));
    assert.deepEqual(after, expected);

    // ACLs are dropped (mksquashfs says so); the mode bits stay those of the source, the
    // group bits being the ACL mask.
    assert.ok(log.some((l) => l.includes("system.posix_acl_access")), log.join("\n"));
    const at = (path: string) => after.find((e) => e.path === path)!;
    assert.equal(at("srv/shared/report.txt").acl, undefined);
    assert.equal(
      at("srv/shared/report.txt").mode,
      before.find((e) => e.path === "srv/shared/report.txt")!.mode,
    );
    assert.equal(at("usr/bin/sudo").mode, "4755");
    assert.equal(at("etc/passwd.hardlink").hardLink, "etc/passwd");
    assert.deepEqual(at("usr/bin/busybox").xattrs, { "user.checksum": "0x00ff10" });
    assert.equal(at("var/lib/images/disk.raw").sparse, true);
    assert.equal(at(".").uid, 100000);
  },
});

for (const format of FORMATS) {
  Deno.test({
    name: `${format}: anchored and unanchored excludes are absent, everything else is there`,
    ignore: !isRoot,
    async fn() {
      await using tmp = new TempDir();
      const { before, after, archive } = await roundTrip(tmp, format, {
        sparse: false,
        excludes: EXCLUDES,
      });
      const members = await archiveMembers(format, archive);
      for (const x of EXCLUDED) {
        assert.ok(!members.some((m) => m === x || m.startsWith(`${x}/`)), `${x} is in the archive`);
      }
      const kept = before.filter((e) => !isExcluded(e.path));
      assert.deepEqual(members.sort(), kept.map((e) => e.path).sort());
      for (
        const path of ["srv/app/var/log/app.log", "var", "home/user/my.tmpl", "home/user/cachefile"]
      ) {
        assert.ok(members.includes(path), `${path} is missing`);
      }
      assert.deepEqual(after, format === "tar" ? kept : withoutAcls(kept));
    },
  });

  Deno.test({
    name: `${format}: a bandwidth limit still writes the whole archive`,
    ignore: !isRoot,
    async fn() {
      await using tmp = new TempDir();
      const { before, after } = await roundTrip(tmp, format, {
        sparse: false,
        bandwidthLimit: 64 * 1024,
      });
      const expected = before.filter((e) => e.path !== "lost+found");
      assert.deepEqual(after, format === "tar" ? expected : withoutAcls(expected));
    },
  });

  Deno.test({
    name: `${format}: cancelling kills the archiver and removes the partial archive`,
    ignore: !isRoot,
    async fn() {
      await using tmp = new TempDir();
      const src = tmp.join("rootfs");
      await Deno.mkdir(src);
      await buildContainerTree(src, { sparse: true });
      await writeWithMode(`${src}/random.bin`, randomBytes(4 << 20));
      const target = tmp.join(FILE[format]);
      const controller = new AbortController();
      // 1 KiB/s: the archiver cannot finish before it is cancelled.
      const running = createContainerArchive({
        format,
        directory: src,
        target,
        bandwidthLimit: 1,
        signal: controller.signal,
      });
      await new Promise((r) => setTimeout(r, 300));
      controller.abort("SIGTERM");
      await assert.rejects(running, (err: Error) => {
        assert.ok(err instanceof InterruptedError);
        assert.match(
          err.message,
          /^archiving .* interrupted by SIGTERM; nothing was left half-written$/,
        );
        return true;
      });
      await assert.rejects(Deno.stat(target), Deno.errors.NotFound);
    },
  });
}

Deno.test("an already cancelled archive starts nothing and leaves no file", async () => {
  await using tmp = new TempDir();
  const target = tmp.join("archive.tar");
  await assert.rejects(
    createContainerArchive({
      format: "tar",
      directory: tmp.path,
      target,
      signal: AbortSignal.abort("SIGINT"),
    }),
    /interrupted by SIGINT/,
  );
  await assert.rejects(Deno.stat(target), Deno.errors.NotFound);
});

Deno.test({
  name: "cancelling an extraction says the target holds a partial tree",
  ignore: !isRoot,
  async fn() {
    await using tmp = new TempDir();
    const src = tmp.join("src");
    await Deno.mkdir(src);
    await writeWithMode(`${src}/big`, randomBytes(1 << 20));
    const archive = tmp.join("archive.tar");
    await createContainerArchive({ format: "tar", directory: src, target: archive });
    const out = tmp.join("out");
    await Deno.mkdir(out);
    await assert.rejects(
      extractContainerArchive(archive, out, { signal: AbortSignal.abort("SIGHUP") }),
      (err: Error) => {
        assert.ok(err instanceof InterruptedError);
        assert.match(
          err.message,
          /interrupted by SIGHUP; the target directory holds a partial tree$/,
        );
        return true;
      },
    );
  },
});

Deno.test("an existing archive is never overwritten", async () => {
  await using tmp = new TempDir();
  const target = tmp.join("archive.tar");
  await Deno.writeTextFile(target, "precious");
  for (const format of FORMATS) {
    await assert.rejects(
      createContainerArchive({ format, directory: tmp.path, target }),
      /archiving .* failed: '.*archive.tar' already exists/,
    );
  }
  assert.equal(await Deno.readTextFile(target), "precious");
});

Deno.test("bad arguments fail before anything runs, with one clear line", async () => {
  await using tmp = new TempDir();
  const target = tmp.join("a");
  await assert.rejects(
    createContainerArchive({ format: "tar", directory: tmp.join("missing"), target }),
    /container directory '.*missing' cannot be used/,
  );
  await assert.rejects(
    createContainerArchive({
      format: "squashfs",
      directory: tmp.path,
      target,
      sources: [".", "./mnt/data"],
    }),
    /squashfs archive holds one tree/,
  );
  await assert.rejects(
    createContainerArchive({ format: "tar", directory: tmp.path, target, sources: ["../etc"] }),
    /must be a relative path below the directory/,
  );
  await assert.rejects(
    createContainerArchive({ format: "tar", directory: tmp.path, target, excludePatterns: ["/"] }),
    /excludes everything/,
  );
  await assert.rejects(Deno.stat(target), Deno.errors.NotFound);
});

Deno.test("tar: extra sources include a mount point that --one-file-system skips", async () => {
  await using tmp = new TempDir();
  const src = tmp.join("rootfs");
  await Deno.mkdir(`${src}/mnt/data`, { recursive: true });
  await Deno.writeTextFile(`${src}/mnt/data/file`, "data");
  await Deno.writeTextFile(`${src}/top`, "top");
  const archive = tmp.join("archive.tar");
  await createContainerArchive({
    format: "tar",
    directory: src,
    target: archive,
    sources: ["./top", "./mnt/data"],
  });
  assert.deepEqual((await archiveMembers("tar", archive)).sort(), [
    "mnt/data",
    "mnt/data/file",
    "top",
  ]);
});

Deno.test("extracting a damaged archive names the archive and the archiver's complaint", async () => {
  await using tmp = new TempDir();
  const out = tmp.join("out");
  await Deno.mkdir(out);
  const garbage = tmp.join("garbage");
  await Deno.writeTextFile(garbage, "not an archive at all");
  await assert.rejects(
    extractContainerArchive(garbage, out),
    /'.*garbage' is neither a tar archive nor a squashfs image/,
  );
  for (const [format, name] of [["tar", "archive.tar"], ["squashfs", "archive.sqfs"]] as const) {
    const path = tmp.join(name);
    await Deno.writeTextFile(path, "x".repeat(2000));
    await assert.rejects(extractContainerArchive(path, out, { format }), (err: Error) => {
      assert.ok(err instanceof VoltError);
      assert.match(
        err.message,
        format === "tar"
          ? /^extracting .*archive\.tar into .*out failed: tar: This does not look like a tar archive$/
          : /^extracting .*archive\.sqfs into .*out failed: unsquashfs: FATAL ERROR: Can't find a valid SQUASHFS superblock/,
      );
      assert.ok(!err.message.includes("\n"));
      return true;
    });
  }
  await assert.rejects(
    extractContainerArchive(garbage, tmp.join("nowhere")),
    /restore target '.*nowhere' cannot be used/,
  );
});

Deno.test("a compressed vzdump-style tar (.tar.zst) is recognized and extracts", async () => {
  await using tmp = new TempDir();
  const src = tmp.join("src");
  await Deno.mkdir(`${src}/etc`, { recursive: true });
  await Deno.writeTextFile(`${src}/etc/hostname`, "ct\n");
  const archive = tmp.join("vzdump-lxc-100.tar.zst");
  await sh("tar", ["--zstd", "-cf", archive, "-C", src, "."]);
  assert.equal(await detectArchiveFormat(archive), "tar");
  const out = tmp.join("out");
  await Deno.mkdir(out);
  await extractContainerArchive(archive, out);
  assert.equal(await Deno.readTextFile(`${out}/etc/hostname`), "ct\n");
});

Deno.test("exclude patterns become tar and mksquashfs arguments as vzdump writes them", () => {
  assert.deepEqual(tarExcludeArgs(["/var/log/", "*.tmp", "cache", "/tmp/?*"]), [
    "--no-anchored",
    "--exclude=lost+found",
    "--exclude=*.tmp",
    "--exclude=cache",
    "--anchored",
    "--exclude=./var/log",
    "--exclude=./tmp/?*",
  ]);
  assert.deepEqual(mksquashfsExcludeArgs(["/var/log/", "*.tmp", "cache", "/tmp/?*"]), [
    "-wildcards",
    "-e",
    "... lost+found",
    "... *.tmp",
    "... cache",
    "var/log",
    "tmp/?*",
  ]);
  assert.throws(() => tarExcludeArgs([""]), TypeError);
  assert.throws(() => mksquashfsExcludeArgs(["a\nb"]), /newline or NUL/);
});

/** A clock that only moves when someone sleeps. */
function fakeClock(): Clock & { sleeps: number[]; t: number } {
  const clock = {
    t: 0,
    sleeps: [] as number[],
    now: () => clock.t,
    sleep: (ms: number) => {
      clock.sleeps.push(ms);
      clock.t += ms;
      return Promise.resolve();
    },
  };
  return clock;
}

Deno.test("throttle: bytes pass at the limit on average, from the first chunk", async () => {
  const clock = fakeClock();
  const chunks = Array.from({ length: 16 }, () => new Uint8Array(64 * 1024));
  let total = 0;
  const out = ReadableStream.from(chunks).pipeThrough(throttleStream(256, { clock }));
  for await (const chunk of out) total += chunk.length;
  assert.equal(total, 1024 * 1024);
  assert.equal(clock.t, 4000); // 1 MiB at 256 KiB/s
  assert.deepEqual(clock.sleeps, Array(16).fill(250));
});

Deno.test("throttle: time spent elsewhere counts towards the limit", async () => {
  const clock = fakeClock();
  const limiter = new RateLimiter(1000, clock);
  await limiter.take(1000); // waits 1 s
  clock.t += 5000; // the writer was slow for 5 s
  assert.equal(limiter.delayFor(2000), 0); // 3000 bytes by 6 s: under the limit
  assert.equal(limiter.delayFor(4000), 1000); // 7000 bytes are due at 7 s
  assert.throws(() => new RateLimiter(0), RangeError);
});
