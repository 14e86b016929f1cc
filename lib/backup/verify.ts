/**
 * Verifying a stored backup of the directory layout (`docs/formats.md`, "Backup layout"),
 * without changing it: the manifest, the size and digest of every file, no file that is not
 * listed. For a VM backup then each image's backing chain walked by volt itself (the same
 * guard as restore), `qemu-img check` of each image, and each incremental image's parents:
 * present, listing the device with the same size, their images matching their own manifests.
 * For a container backup: its archive starts like its format (tar or squashfs); the digest
 * already covers every byte, so the archive is not unpacked.
 *
 * @module
 */

import type { VerifyProblem, VerifyReport } from "../../plugins/backup_api.ts";
import { readQcow2Header } from "../qcow2/header.ts";
import { run } from "../run.ts";
import { assertSafeBackupChain } from "./chain_guard.ts";
import { fileDigest } from "./checksum.ts";
import { detectArchiveFormat } from "./container_archive.ts";
import { type Manifest, MANIFEST_NAME, readManifest, UNLISTED_FILES } from "./manifest.ts";

/** Where the backup lives. */
export interface VerifyOptions {
  /** The guest's directory (`<path>/<vmid>`): every chain link must stay inside it. */
  guestDir: string;
  /** The guest type the backup's name says (`qemu-…`, `lxc-…`); the manifest must agree. */
  type?: "qemu" | "lxc";
}

/**
 * Checks the backup in `dir` and reports every problem found, the first being the one to
 * show. Rejects only when the check itself cannot run.
 *
 * @example
 * ```ts ignore
 * import { verifyBackupDir } from "./verify.ts";
 * const r = await verifyBackupDir("/srv/backup/100/qemu-1700000000", { guestDir: "/srv/backup/100" });
 * if (!r.ok) console.error(r.problems[0].message);
 * ```
 */
export async function verifyBackupDir(dir: string, options: VerifyOptions): Promise<VerifyReport> {
  const problems: VerifyProblem[] = [];
  const checked = { files: 0, bytes: 0, images: 0 };
  const report = () => ({ ok: problems.length === 0, problems, checked });
  let manifest: Manifest;
  try {
    manifest = await readManifest(dir);
  } catch (err) {
    const message = err instanceof Deno.errors.NotFound
      ? "manifest.json is missing: not a finished backup"
      : (err as Error).message.replace(`${dir}/`, "");
    problems.push({ file: MANIFEST_NAME, message });
    return report();
  }

  if (options.type !== undefined && manifest.type !== options.type) {
    problems.push({
      file: MANIFEST_NAME,
      message: `the manifest says type '${manifest.type}', the backup's name '${options.type}'`,
    });
    return report();
  }

  // 1. Every file: present, its size and checksum; nothing else.
  const present = new Set<string>();
  for await (const e of Deno.readDir(dir)) present.add(e.name);
  for (const f of manifest.files) {
    if (!present.has(f.name)) {
      problems.push({ file: f.name, message: `${f.name} is missing` });
      continue;
    }
    let d;
    try {
      d = await fileDigest(`${dir}/${f.name}`);
    } catch (err) {
      problems.push({ file: f.name, message: (err as Error).message.replace(`${dir}/`, "") });
      continue;
    }
    checked.files++;
    checked.bytes += d.size;
    if (d.size !== f.size) {
      problems.push({
        file: f.name,
        message: `${f.name} has ${d.size} bytes, the manifest says ${f.size}`,
      });
    } else if (d.digest !== f.digest) {
      problems.push({
        file: f.name,
        message: `${f.name} does not match its checksum (${d.digest}, manifest ${f.digest})`,
      });
    }
  }
  const listed = new Set([...manifest.files.map((f) => f.name), ...UNLISTED_FILES]);
  for (const name of [...present].sort()) {
    if (!listed.has(name)) {
      problems.push({ file: name, message: `${name} is not listed in the manifest` });
    }
  }

  // 2. A container's archive: what its format says it is.
  const archive = manifest.archive;
  if (archive && present.has(archive.file)) {
    try {
      const format = await detectArchiveFormat(`${dir}/${archive.file}`);
      if (format !== archive.format) {
        problems.push({
          file: archive.file,
          message: `${archive.file} is a ${format} archive, the manifest says ${archive.format}`,
        });
      }
    } catch (err) {
      problems.push({ file: archive.file, message: (err as Error).message.replace(`${dir}/`, "") });
    }
  }

  // 3. Each image: a safe chain as recorded, a consistent qcow2, parents that match.
  let backups = 0;
  for await (const e of Deno.readDir(options.guestDir)) {
    if (e.isDirectory && /^qemu-\d+$/.test(e.name)) backups++;
  }
  const parentHashes = new Map<string, Promise<string>>();
  for (const [dev, d] of Object.entries(manifest.devices)) {
    const image = `${dir}/${d.file}`;
    if (!present.has(d.file)) continue; // Reported above.
    try {
      await assertSafeBackupChain(image, {
        root: options.guestDir,
        maxDepth: Math.max(1, backups),
      });
    } catch (err) {
      problems.push({ file: d.file, message: (err as Error).message.replace(`${dir}/`, "") });
      continue;
    }
    const h = await readQcow2Header(image);
    if (h.backingFile !== d.backing) {
      problems.push({
        file: d.file,
        message: `${d.file} has backing file '${h.backingFile ?? "none"}', the manifest says '${
          d.backing ?? "none"
        }'`,
      });
      continue;
    }
    if (h.size !== Math.ceil(d.size / 512) * 512) {
      problems.push({
        file: d.file,
        message: `${d.file} has virtual size ${h.size}, the manifest says ${d.size}`,
      });
    }
    const check = await run("qemu-img", ["check", "-U", "-f", "qcow2", image], {
      allowFailure: true,
    });
    checked.images++;
    if (check.code !== 0) {
      const what = check.code === 3
        ? "leaked clusters"
        : check.code === 2
        ? "corruption"
        : "errors";
      const line = check.stdout.split("\n").concat(check.stderr.split("\n"))
        .map((l) => l.trim()).find((l) => /ERROR|Leaked|corrupt|error/i.test(l)) ?? "";
      problems.push({
        file: d.file,
        message: `qemu-img check found ${what} in ${d.file}${line ? `: ${line}` : ""}`,
      });
    }
    // Parents of an incremental image.
    let cur = manifest;
    let device = d;
    while (device.kind === "incremental" && cur.parent !== undefined) {
      const parentDir = `${options.guestDir}/${cur.parent}`;
      let parent: Manifest;
      try {
        parent = await readManifest(parentDir);
      } catch (err) {
        problems.push({
          file: d.file,
          message: `${dev}: parent backup ${cur.parent} ${
            err instanceof Deno.errors.NotFound
              ? "is missing"
              : `is damaged: ${(err as Error).message}`
          }`,
        });
        break;
      }
      const pd = parent.devices[dev];
      if (!pd || pd.size !== device.size) {
        problems.push({
          file: d.file,
          message: `${dev}: parent backup ${cur.parent} has no ${dev} of ${device.size} bytes`,
        });
        break;
      }
      const entry = parent.files.find((f) => f.name === pd.file);
      const path = `${parentDir}/${pd.file}`;
      if (!parentHashes.has(path)) {
        parentHashes.set(path, fileDigest(path).then((x) => x.digest, () => "missing"));
      }
      const sum = await parentHashes.get(path)!;
      if (!entry || sum !== entry.digest) {
        problems.push({
          file: d.file,
          message:
            `${dev}: ${cur.parent}/${pd.file}, a base of this backup, does not match its checksum`,
        });
        break;
      }
      cur = parent;
      device = pd;
    }
  }
  return report();
}
