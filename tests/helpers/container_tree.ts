/**
 * Test helper: a container's root file system as an unprivileged container has it (owners
 * shifted by 100000, setuid and setgid files, a sticky directory, symlinks (one dangling), a
 * hard link, a fifo, xattrs, POSIX ACLs and, optionally, a sparse 1 GiB disk image), and the
 * members of a container archive as tree paths. Needs root (chown) and the `attr` and `acl`
 * tools. Used by the archive tests and the container backup tests.
 *
 * @module
 */

import type { ContainerArchiveFormat } from "../../lib/backup/container_archive.ts";
import type { TreeEntry } from "./tree_listing.ts";
import { sh } from "./volt.ts";

const GiB = 1024 ** 3;

/**
 * Exclude patterns for the tree of {@link buildContainerTree}: `/var/log` anchored, `*.tmp`
 * and `cache` at any depth.
 */
export const EXCLUDES: readonly string[] = ["/var/log", "*.tmp", "cache"];
/** What {@link EXCLUDES} (and the always excluded `lost+found`) remove from that tree. */
export const EXCLUDED: readonly string[] = [
  "lost+found", // always
  "var/log",
  "a.tmp",
  "home/user/notes.tmp",
  "cache",
  "home/user/cache",
];

/** Whether a tree path is (below) one of {@link EXCLUDED}. */
export function isExcluded(path: string): boolean {
  return EXCLUDED.some((x) => path === x || path.startsWith(`${x}/`));
}

/** What squashfs keeps of a listing: everything but ACLs. */
export function withoutAcls(list: TreeEntry[]): TreeEntry[] {
  return list.map(({ acl: _, ...rest }) => rest);
}

/** `n` random bytes (getRandomValues fills at most 64 KiB at a time). */
export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) crypto.getRandomValues(out.subarray(off, off + 65536));
  return out;
}

/** Writes a file and gives it exactly `mode` (the umask does not apply). */
export async function writeWithMode(path: string, data: string | Uint8Array, mode = 0o644) {
  if (typeof data === "string") await Deno.writeTextFile(path, data, { mode });
  else await Deno.writeFile(path, data, { mode });
  await Deno.chmod(path, mode);
}

/**
 * A container's root file system as an unprivileged container has it (ids shifted by
 * 100000). `sparse`: add the 1 GiB sparse disk image.
 */
export async function buildContainerTree(root: string, { sparse }: { sparse: boolean }) {
  const p = (rel: string) => `${root}/${rel}`;
  for (
    const dir of [
      "etc",
      "usr/bin",
      "usr/sbin",
      "var/log/apt",
      "var/lib/images",
      "srv/shared",
      "srv/app/var/log",
      "home/user/cache",
      "home/user/.config",
      "cache",
      "tmp",
      "run",
      "empty",
      "lost+found",
    ]
  ) await Deno.mkdir(p(dir), { recursive: true });

  await writeWithMode(p("etc/hostname"), "ct100\n");
  await writeWithMode(
    p("etc/passwd"),
    "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
  );
  await writeWithMode(p("etc/shadow"), "root:*:19000:0:99999:7:::\n", 0o640);
  await Deno.link(p("etc/passwd"), p("etc/passwd.hardlink"));
  await writeWithMode(p("usr/bin/busybox"), randomBytes(100_000), 0o755);
  await Deno.symlink("busybox", p("usr/bin/sh"));
  await Deno.symlink("/usr/share/zoneinfo/Europe/Vienna", p("etc/localtime")); // dangling
  await Deno.symlink("../bin/busybox", p("usr/sbin/init"));
  await writeWithMode(p("usr/bin/sudo"), randomBytes(5000), 0o755);
  await writeWithMode(p("usr/bin/wall"), "#!/bin/sh\n", 0o755);
  await writeWithMode(p("var/log/syslog"), "boot\n");
  await writeWithMode(p("var/log/apt/history.log"), "install\n");
  await writeWithMode(p("srv/app/var/log/app.log"), "kept: only /var/log is anchored\n");
  await writeWithMode(p("srv/shared/report.txt"), "shared\n", 0o664);
  await writeWithMode(p("home/user/notes.tmp"), "scratch\n");
  await writeWithMode(p("home/user/my.tmpl"), "not *.tmp\n");
  await writeWithMode(p("home/user/cachefile"), "not cache\n");
  await writeWithMode(p("home/user/cache/blob"), "cached\n");
  await writeWithMode(p("home/user/.config/settings"), "x=1\n", 0o600);
  await writeWithMode(p("cache/index"), "cached\n");
  await writeWithMode(p("a.tmp"), "scratch\n");
  await writeWithMode(p("empty/.keep"), "");
  await sh("mkfifo", ["-m", "0600", p("run/initctl")]);
  if (sparse) {
    const disk = p("var/lib/images/disk.raw");
    using f = await Deno.open(disk, { create: true, write: true });
    await f.write(new TextEncoder().encode("MBR"));
    await f.seek(GiB / 2, Deno.SeekMode.Start);
    await f.write(randomBytes(8192));
    await f.truncate(GiB);
  }

  // Everything belongs to the container's root (100000), the home to its user (101000).
  await sh("chown", ["-R", "-h", "100000:100000", root]);
  await sh("chown", ["-R", "-h", "101000:101000", p("home/user")]);
  await sh("chown", ["100000:100042", p("etc/shadow")]);
  // chown clears setuid/setgid: set the special bits afterwards.
  await Deno.chmod(p("usr/bin/sudo"), 0o4755);
  await Deno.chmod(p("usr/bin/wall"), 0o2755);
  await Deno.chmod(p("tmp"), 0o1777);
  await Deno.chmod(p("lost+found"), 0o700);

  await sh("setfattr", ["-n", "user.comment", "-v", "container config", p("etc/hostname")]);
  await sh("setfattr", ["-n", "user.checksum", "-v", "0x00ff10", p("usr/bin/busybox")]);
  await sh("setfacl", ["-m", "u:101000:rwx,g:100042:r-x", p("srv/shared")]);
  await sh("setfacl", ["-d", "-m", "u:101000:rwx", p("srv/shared")]);
  await sh("setfacl", ["-m", "u:101000:rw-", p("srv/shared/report.txt")]);
}

/** Members of an archive as tree paths (`.`, `etc`, `etc/passwd`). */
export async function archiveMembers(
  format: ContainerArchiveFormat,
  archive: string,
): Promise<string[]> {
  const lines = format === "tar"
    ? (await sh("tar", ["--list", `--file=${archive}`])).split("\n")
    : (await sh("unsquashfs", ["-l", archive])).split("\n").map((l) =>
      l.replace(/^squashfs-root\/?/, "./")
    );
  return lines.filter((l) => l.length > 0)
    .map((l) => l.replace(/^\.\/?/, "").replace(/\/$/, "") || ".");
}
