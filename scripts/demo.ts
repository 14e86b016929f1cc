/**
 * `deno task demo`: runs volt's job end to end on the embedded default configuration, printing
 * each command and its output. Everything happens under a fresh `VOLT_HOME` in a temporary
 * directory (removed afterwards unless `VOLT_DEMO_KEEP=1`), so the demo never touches the
 * host's own storages.
 *
 * The main job: a sample qcow2 disk with data in the default storage `local`, a full backup
 * into the default backup storage `backup`, ~5% of the data changed with `qemu-io`, an
 * incremental backup, both backups restored to new volumes and checked against the disk as it
 * was with `qemu-img compare`; then retention: `volt prune --keep-last 1` removes the full
 * backup the incremental depends on (merging it into the incremental), and the survivor is
 * restored and compared again; last, a table of what each backup did.
 *
 * @module
 */

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const home = Deno.makeTempDirSync({ prefix: "volt-demo-" });
const env = { VOLT_HOME: `${home}/home`, VOLT_CONFIG: `${home}/storage.cfg`, NO_COLOR: "1" };
const MiB = 1024 * 1024;

/** Runs volt, printing the command and its output; `quiet`: not its stdout; `hidden`: nothing. */
async function step(title: string, args: string[], quiet = false, hidden = false): Promise<string> {
  if (!hidden) console.log(`\n$ volt ${args.join(" ")}${title ? `    # ${title}` : ""}`);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  if (stdout && !quiet && !hidden) console.log(stdout.trimEnd());
  if (stderr && !hidden) console.log(stderr.trimEnd());
  if (out.code !== 0) throw new Error(`volt ${args[0]} failed (exit ${out.code})`);
  return stdout;
}

/** Runs a tool; `show`: print the command (and, unless it is qemu-io, its output). */
async function tool(cmd: string, args: string[], show = true): Promise<string> {
  if (show) {
    console.log(`\n$ ${cmd} ${args.map((a) => (a.includes(" ") ? `'${a}'` : a)).join(" ")}`);
  }
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout).trimEnd();
  if (text && show && cmd !== "qemu-io") console.log(text);
  if (out.code !== 0) throw new Error(`${cmd} failed: ${new TextDecoder().decode(out.stderr)}`);
  return text;
}

function fmt(bytes: number): string {
  return bytes >= MiB ? `${(bytes / MiB).toFixed(1)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`;
}

interface BackupJson {
  volid: string;
  seconds: number;
  stats: {
    archiveSize: number;
    devices?: Record<string, { kind: string; bytesRead: number; bytesWritten: number }>;
  };
}

try {
  const t0 = performance.now();
  console.log(`volt demo: storages under ${env.VOLT_HOME} (built-in default configuration)`);
  await step("the storages: a directory and a backup storage", ["status"]);
  const created = await step("a 1 GiB qcow2 disk for guest 100", [
    "alloc",
    "local",
    "100",
    "auto",
    "1G",
    "--format",
    "qcow2",
  ]);
  const volid = /'([^']+)'/.exec(created)![1];
  const disk = (await step("where it lives", ["path", volid])).trim();
  // 256 MiB of data in four places, one pattern each.
  const writes = [0, 256, 512, 960].map((mib, i) =>
    `write -P 0x${(0x11 * (i + 1)).toString(16)} ${mib}M 64M`
  );
  await tool("qemu-io", ["-f", "qcow2", ...writes.flatMap((w) => ["-c", w]), disk]);
  const guestConf = `${home}/guest.conf`;
  await Deno.writeTextFile(guestConf, `name: demo\nmemory: 1024\nscsi0: ${volid},size=1G\n`);
  const asWas = [`${home}/disk-at-backup-1.qcow2`, `${home}/disk-at-backup-2.qcow2`];
  const backupArgs = ["backup", "100", "--disk", `scsi0=${volid}`, "--config", guestConf];

  const results: BackupJson[] = [];
  await tool("cp", ["--sparse=always", disk, asWas[0]], false);
  results.push(
    JSON.parse(await step("full backup", [...backupArgs, "--output-format", "json"], true)),
  );
  // Change ~5% of the data: 13 scattered 1 MiB writes.
  const changes = Array.from({ length: 13 }, (_, i) => `write -P 0xee ${i * 19 + 3}M 1M`);
  await tool("qemu-io", ["-f", "qcow2", ...changes.flatMap((w) => ["-c", w]), disk]);
  await tool("cp", ["--sparse=always", disk, asWas[1]], false);
  results.push(
    JSON.parse(
      await step("incremental backup: only what changed", [
        ...backupArgs,
        "--output-format",
        "json",
      ], true),
    ),
  );
  await step("the backups (the incremental's parent is the full)", ["list", "backup"]);
  await step("check the incremental and its chain", ["verify", results[1].volid]);

  for (const [i, r] of results.entries()) {
    const out = await step(`restore backup ${i + 1} as guest ${201 + i}`, [
      "restore",
      r.volid,
      String(201 + i),
      "--storage",
      "local",
    ]);
    const restored = out.trim().split("=")[1];
    const path = (await step("", ["path", restored], true, true)).trim();
    await tool("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", path, asWas[i]]);
  }

  await step("notes on the incremental", ["notes", results[1].volid, "--set", "demo: after"]);
  await step("retention: keep the newest backup only (the full is merged into it)", [
    "prune",
    "backup",
    "--keep-last",
    "1",
  ]);
  await step("the incremental now stands alone (chain length 1)", ["list", "backup"]);
  const again = await step("restore it once more as guest 203", [
    "restore",
    results[1].volid,
    "203",
    "--storage",
    "local",
  ]);
  const againPath = (await step("", ["path", again.trim().split("=")[1]], true, true)).trim();
  await tool("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", againPath, asWas[1]]);

  console.log("\nwhat each backup did:");
  const rows = [["backup", "kind", "read", "written", "stored", "time", "rate"]];
  for (const r of results) {
    const d = r.stats.devices?.scsi0;
    const read = d?.bytesRead ?? 0;
    rows.push([
      r.volid,
      d?.kind ?? "?",
      fmt(read),
      fmt(d?.bytesWritten ?? 0),
      fmt(r.stats.archiveSize),
      `${r.seconds.toFixed(2)} s`,
      `${fmt(r.seconds > 0 ? read / r.seconds : 0)}/s`,
    ]);
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  for (const row of rows) console.log("  " + row.map((v, c) => v.padEnd(widths[c])).join("  "));
  console.log(`\nvolt demo: done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
} catch (err) {
  console.error(`volt demo failed: ${(err as Error).message}`);
  Deno.exitCode = 1;
} finally {
  if (Deno.env.get("VOLT_DEMO_KEEP") === "1") console.log(`kept ${home}`);
  else Deno.removeSync(home, { recursive: true });
}
