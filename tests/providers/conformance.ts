/**
 * The backup provider conformance suite: the same scenarios, through the real `volt` CLI,
 * against any backup storage type — the built-in `backup-dir` (`builtin_test.ts`), the example
 * `zstd-backup` (`example_test.ts`), and a third-party plugin given on the command line
 * (`deno task conformance --plugin ./their.ts`, `scripts/conformance.ts`).
 *
 * Each scenario runs in a fresh temporary volt home with two storages: `local` (type `dir`,
 * where restores put their volumes) and the storage under test, from the target's storage.cfg
 * section with every `{dir}` replaced by an empty directory of the scenario. Disks are small
 * (32–64 MiB) qcow2 and raw images written with `qemu-io`, backed up offline or through a
 * `qemu-nbd` export; every restore is checked with `qemu-img compare`.
 *
 * What a provider must do to pass, scenario by scenario, and how to run the suite on one:
 * docs/backup-providers.md, "Checking a provider: the conformance suite".
 *
 * @module
 */

import assert from "node:assert/strict";
import { createImage, imagesEqual, qemuIo, startQemuNbd } from "../helpers/nbd_server.ts";
import { type BackupEnv, flipByte, restoreOk, snapshotFile } from "../helpers/backup.ts";
import {
  type RunningVolt,
  sh,
  spawnVolt,
  TempDir,
  volt,
  type VoltResult,
} from "../helpers/volt.ts";

const MiB = 1024 * 1024;
/** Read limit (KiB/s) that keeps an interrupted backup copying for seconds. */
const SLOW = "2048";

/** A backup storage type to check. */
export interface ConformanceTarget {
  /** Shown in test names and in the runner's summary. */
  name: string;
  /** The plugin module, loaded with `--plugin` (absent for a built-in type). */
  pluginPath?: string;
  /**
   * The storage.cfg section of the backup storage, header line first (`type: id`). Every
   * `{dir}` becomes an empty directory of the scenario; with one, the scenarios also check
   * that a failed backup leaves no file there but task logs (`*.log`).
   */
  storageSection: string;
}

/** One scenario: a name for `--only`, a title, and the checks. */
export interface Scenario {
  id: string;
  title: string;
  run(b: Bench): Promise<void>;
}

/** One row of `volt list --output-format json`. */
interface Listed {
  volid: string;
  content: string;
  vmid?: number;
  subtype?: string;
  ctime: number;
}

/** Asserts a failed command said one line (`volt: …`) and no stack trace. */
function assertOneLineError(r: VoltResult, re: RegExp): void {
  assert.notEqual(r.code, 0, `expected a failure; stderr: ${r.stderr}`);
  assert.doesNotMatch(r.stderr, /^\s+at /m, `a stack trace: ${r.stderr}`);
  const last = r.stderr.trim().split("\n").at(-1) ?? "";
  assert.match(last, re, `stderr: ${r.stderr}`);
}

/** Paths of every file and directory under `root`, relative, sorted. */
async function walk(root: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${root}${rel}`)) {
    const p = `${rel}/${e.name}`;
    out.push(p);
    if (e.isDirectory) out.push(...(await walk(root, p)));
  }
  return out.sort();
}

/** The environment of one scenario: a volt home, storage.cfg, and the storage under test. */
export class Bench implements AsyncDisposable {
  readonly target: ConformanceTarget;
  readonly tmp: TempDir;
  /** For the helpers of `tests/helpers/backup.ts` (restoreOk restores to `local`). */
  readonly e: BackupEnv;
  /** The backup storage's id. */
  readonly storeid: string;
  /** The scenario's `{dir}`, when the section uses it. */
  readonly storeDir?: string;
  /** Things the report should mention (a check that did not apply). */
  readonly notes: string[] = [];
  readonly #plugin: string[];

  private constructor(target: ConformanceTarget, tmp: TempDir, section: string) {
    this.target = target;
    this.tmp = tmp;
    this.storeid = sectionId(target.storageSection);
    this.storeDir = target.storageSection.includes("{dir}") ? tmp.join("store") : undefined;
    const home = tmp.join("home");
    this.e = {
      tmp,
      home,
      backupRoot: this.storeDir ?? "",
      env: {
        VOLT_HOME: home,
        VOLT_CONFIG: tmp.join("storage.cfg"),
        VOLT_PLUGINS: tmp.join("none"),
      },
    };
    this.#plugin = target.pluginPath ? ["--plugin", target.pluginPath] : [];
    Deno.mkdirSync(home);
    if (this.storeDir) Deno.mkdirSync(this.storeDir);
    Deno.writeTextFileSync(
      this.e.env.VOLT_CONFIG,
      `dir: local\n\tpath ${home}\n\tcontent images\n\n${section.trim()}\n`,
    );
  }

  /** A fresh environment for one scenario. */
  static create(target: ConformanceTarget): Bench {
    const tmp = new TempDir("volt-conformance-");
    return new Bench(target, tmp, target.storageSection.replaceAll("{dir}", tmp.join("store")));
  }

  /** Runs `volt ARGS…` (with `--plugin` for a plugin target). */
  volt(args: string[]): Promise<VoltResult> {
    return volt([...args, ...this.#plugin], { env: this.e.env });
  }

  /** Starts `volt backup VMID ARGS…` in the background. */
  spawnBackup(vmid: number, args: string[]): RunningVolt {
    return spawnVolt(["backup", String(vmid), ...this.backupArgs(args), ...this.#plugin], {
      env: this.e.env,
    });
  }

  /** `--storage <the storage under test>` and `args`. */
  backupArgs(args: string[]): string[] {
    return ["--storage", this.storeid, ...args];
  }

  /** `volt backup`, which must succeed; returns the new backup's volume id. */
  async backupOk(vmid: number, args: string[]): Promise<string> {
    const r = await this.volt(["backup", String(vmid), ...this.backupArgs(args)]);
    assert.equal(r.code, 0, `volt backup failed: ${r.stderr}`);
    const volid = r.stdout.trim();
    assert.ok(volid.startsWith(`${this.storeid}:`), `volt backup printed '${volid}'`);
    return volid;
  }

  /** The backups listed on the storage under test (of one guest). */
  async list(vmid?: number): Promise<Listed[]> {
    const filter = vmid === undefined ? [] : ["--vmid", String(vmid)];
    const r = await this.volt(["list", this.storeid, ...filter, "--output-format", "json"]);
    assert.equal(r.code, 0, `volt list failed: ${r.stderr}`);
    return JSON.parse(r.stdout) as Listed[];
  }

  /** Volume ids listed, sorted. */
  async volids(vmid?: number): Promise<string[]> {
    return (await this.list(vmid)).map((v) => v.volid).sort();
  }

  /** `volt restore` to raw volumes on `local`; device → path of the new volume. */
  restore(volid: string, vmid: number, extra: string[] = []): Promise<Record<string, string>> {
    return restoreOk(this.e, volid, vmid, [...extra, ...this.#plugin]);
  }

  /** Files under `{dir}` now (undefined without one), to compare after a failure. */
  async files(): Promise<string[] | undefined> {
    return this.storeDir ? await walk(this.storeDir) : undefined;
  }

  /** Asserts nothing appeared under `{dir}` since `before` but task logs. */
  async assertNothingLeft(before: string[] | undefined, what: string): Promise<void> {
    if (!before) return;
    const now = await walk(this.storeDir!);
    const added = now.filter((p) => !before.includes(p) && !p.endsWith(".log"));
    assert.deepEqual(added, [], `${what} left these in the storage directory`);
  }

  /** A guest configuration file. */
  async config(text = "memory: 1024\ncores: 2\n"): Promise<string> {
    const path = this.tmp.join(`guest-${crypto.randomUUID()}.conf`);
    await Deno.writeTextFile(path, text);
    return path;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.tmp[Symbol.asyncDispose]();
  }
}

/** The storage id of a section (`type: id` on its first line). */
export function sectionId(section: string): string {
  const header = section.split("\n").find((l) => l.trim() !== "" && !l.startsWith("#"));
  const m = /^([a-z][a-z0-9-]*):\s*([A-Za-z][A-Za-z0-9_.-]*)\s*$/.exec(header ?? "");
  if (!m) throw new Error(`the storage section does not start with 'TYPE: ID': '${header}'`);
  if (m[2] === "local") throw new Error("the storage under test cannot be called 'local'");
  return m[2];
}

/** A qcow2 disk with data at the start, middle and end, and a zeroed range. */
async function disk(b: Bench, name: string, size = 64 * MiB): Promise<string> {
  const path = b.tmp.join(name);
  await createImage(path, size);
  await qemuIo(path, [
    "write -P 0x11 0 1M",
    "write -P 0x22 20M 4M",
    "write -z 40M 1M",
    `write -P 0x33 ${size - 64 * 1024} 64k`,
  ]);
  return path;
}

/** A copy of `image` as it is now. */
async function frozen(b: Bench, image: string): Promise<string> {
  const copy = b.tmp.join(`frozen-${crypto.randomUUID()}.qcow2`);
  await snapshotFile(image, copy);
  return copy;
}

async function assertRestoresTo(path: string, image: string, format = "qcow2"): Promise<void> {
  assert.ok(await imagesEqual(path, "raw", image, format), `${path} differs from ${image}`);
}

/**
 * Interrupts or breaks a running backup once it copies: waits for a progress line (or, for a
 * provider that reports none, 2 s after the job started), then calls `act`.
 */
async function whileCopying(run: RunningVolt, act: () => void): Promise<VoltResult> {
  if (!(await run.waitFor(/ started$/m, 20_000))) {
    try {
      run.child.kill("SIGKILL");
    } catch { /* it had exited */ }
    const r = await run.done();
    assert.fail(`the backup did not start (exit ${r.code}): ${r.stderr}`);
  }
  await run.waitFor(/^\S+: .* of .*\(\d+%\)/m, 2_000);
  act();
  const r = await run.done();
  assert.notEqual(
    r.code,
    0,
    "the backup finished before it was stopped: does the provider honour info.bandwidthLimit?",
  );
  return r;
}

/** The scenarios, in the order they run. */
export const SCENARIOS: Scenario[] = [
  {
    id: "full",
    title: "a full backup is listed and restores every disk as it was",
    async run(b) {
      const live = await disk(b, "live.qcow2");
      const raw = b.tmp.join("data.raw");
      await createImage(raw, 32 * MiB, "raw");
      await qemuIo(raw, ["write -P 0x44 8M 2M", `write -P 0x55 ${32 * MiB - 4096} 4k`], "raw");
      await using server = await startQemuNbd(live, { readOnly: true });
      const t0 = Math.floor(Date.now() / 1000);
      const volid = await b.backupOk(100, [
        "--disk",
        `scsi0=${server.uri}`,
        "--disk",
        `virtio1=${raw}`,
        "--config",
        await b.config(),
      ]);
      const t1 = Math.ceil(Date.now() / 1000);
      const listed = await b.list();
      assert.deepEqual(listed.map((v) => v.volid), [volid]);
      const v = listed[0];
      assert.deepEqual([v.content, v.vmid, v.subtype], ["backup", 100, "qemu"]);
      assert.ok(v.ctime >= t0 - 1 && v.ctime <= t1 + 5, `ctime ${v.ctime} not in [${t0}, ${t1}]`);
      assert.deepEqual(await b.volids(101), [], "volt list --vmid 101 shows guest 100's backup");
      const restored = await b.restore(volid, 200);
      assert.deepEqual(Object.keys(restored).sort(), ["scsi0", "virtio1"]);
      await assertRestoresTo(restored.scsi0, live);
      await assertRestoresTo(restored.virtio1, raw, "raw");
    },
  },
  {
    id: "incremental",
    title: "backups after changes restore to their own point in time, older ones still to theirs",
    async run(b) {
      const img = await disk(b, "disk.qcow2");
      const args = ["--disk", `scsi0=${img}`, "--config", await b.config()];
      const states: string[] = [];
      const backups: string[] = [];
      const changes = [
        [],
        ["write -P 0x66 0 512k", "write -P 0x77 30M 3M", "write -z 20M 1M"],
        ["discard 21M 2M", "write -P 0x88 63M 64k", "write -P 0x99 10M 1M"],
      ];
      for (const change of changes) {
        await qemuIo(img, change);
        states.push(await frozen(b, img));
        backups.push(await b.backupOk(100, args));
      }
      assert.deepEqual(await b.volids(100), [...backups].sort());
      assert.equal(new Set(backups).size, 3, "three backups, three names");
      for (const i of [2, 0, 1]) {
        await assertRestoresTo((await b.restore(backups[i], 200 + i)).scsi0, states[i]);
      }
    },
  },
  {
    id: "restore",
    title: "restore writes the configurations byte for byte and new volumes on a dir storage",
    async run(b) {
      const d0 = await disk(b, "d0.qcow2");
      const d1 = b.tmp.join("d1.raw");
      await createImage(d1, 32 * MiB, "raw");
      await qemuIo(d1, ["write -P 0xab 1M 1M"], "raw");
      const head = "# guest 100 — ünïcode, tabs\tand trailing spaces   \n" +
        "boot: order=scsi0;net0\ncores: 2\ndescription: first%0Asecond line\nmemory: 2048\n" +
        "net0: virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1\n";
      const guest = head + "scsi0: local:100/vm-100-disk-0.qcow2,discard=on,size=64M\n" +
        "scsi1: local:100/vm-100-disk-1.raw,size=32M\nsmbios1: uuid=6f2a0d1e-0000-4000-8000-0123456789ab\n";
      const firewall = "[OPTIONS]\nenable: 1\n\n[RULES]\nIN ACCEPT -p tcp -dport 22 # ssh\n";
      await Deno.writeTextFile(b.tmp.join("100.fw"), firewall);
      const volid = await b.backupOk(100, [
        "--disk",
        `scsi0=${d0}`,
        "--disk",
        `scsi1=${d1}`,
        "--config",
        await b.config(guest),
        "--firewall",
        b.tmp.join("100.fw"),
      ]);
      const r = await b.volt(["restore", volid, "200", "--storage", "local", "--format", "qcow2"]);
      assert.equal(r.code, 0, r.stderr);
      const vols = Object.fromEntries(r.stdout.trim().split("\n").map((l) => l.split("=")));
      assert.deepEqual(Object.keys(vols).sort(), ["scsi0", "scsi1"]);
      const onLocal = JSON.parse(
        (await b.volt(["list", "local", "--vmid", "200", "--output-format", "json"])).stdout,
      ) as { volid: string; format: string }[];
      assert.deepEqual(onLocal.map((v) => v.volid).sort(), [vols.scsi0, vols.scsi1].sort());
      assert.ok(onLocal.every((v) => v.format === "qcow2"));
      for (const [dev, src, fmt] of [["scsi0", d0, "qcow2"], ["scsi1", d1, "raw"]]) {
        const path = (await b.volt(["path", vols[dev]])).stdout.trim();
        assert.ok(await imagesEqual(path, "qcow2", src, fmt), `${dev} differs`);
      }
      assert.equal(
        await Deno.readTextFile(`${b.e.home}/qemu-server/200.conf`),
        head + `scsi0: ${vols.scsi0},discard=on,size=64M\nscsi1: ${vols.scsi1},size=32M\n` +
          "smbios1: uuid=6f2a0d1e-0000-4000-8000-0123456789ab\n",
      );
      assert.equal(await Deno.readTextFile(`${b.e.home}/firewall/200.fw`), firewall);

      // Removed, it cannot be restored: one line, no volume, no configuration.
      const free = await b.volt(["free", volid]);
      assert.equal(free.code, 0, free.stderr);
      assert.deepEqual(await b.list(), []);
      const gone = await b.volt(["restore", volid, "201", "--storage", "local"]);
      assertOneLineError(gone, /^volt: /);
      const left = await b.volt(["list", "local", "--vmid", "201", "--output-format", "json"]);
      assert.deepEqual(JSON.parse(left.stdout), []);
      await assert.rejects(Deno.stat(`${b.e.home}/qemu-server/201.conf`));
    },
  },
  {
    id: "interrupt",
    title: "SIGINT or SIGTERM mid-copy: nothing listed, nothing left, the next backup works",
    async run(b) {
      const img = await disk(b, "disk.qcow2");
      await qemuIo(img, ["write -P 0x5a 2M 16M"]); // 16 MiB more to read: seconds at 2 MiB/s
      const args = ["--disk", `scsi0=${img}`, "--config", await b.config()];
      const first = await b.backupOk(100, args);
      const old = await frozen(b, img);
      await qemuIo(img, ["write -P 0x6b 4M 8M"]);
      const before = await b.files();
      for (const signal of ["SIGINT", "SIGTERM"] as const) {
        const run = b.spawnBackup(100, [...args, "--bwlimit", SLOW]);
        const r = await whileCopying(run, () => run.child.kill(signal));
        assertOneLineError(r, new RegExp(`interrupted by ${signal}`));
        assert.deepEqual(await b.volids(), [first], `after ${signal}`);
        await b.assertNothingLeft(before, `a backup interrupted by ${signal}`);
      }
      const next = await b.backupOk(100, args);
      assert.deepEqual(await b.volids(), [first, next].sort());
      await assertRestoresTo((await b.restore(next, 200)).scsi0, img);
      await assertRestoresTo((await b.restore(first, 201)).scsi0, old);
    },
  },
  {
    id: "source-failure",
    title: "the disk's NBD server dies mid-copy: the backup fails cleanly, the next one works",
    async run(b) {
      const img = await disk(b, "disk.qcow2");
      await qemuIo(img, ["write -P 0x5a 2M 16M"]);
      const config = await b.config();
      let server = await startQemuNbd(img, { readOnly: true });
      try {
        const args = () => ["--disk", `scsi0=${server.uri}`, "--config", config];
        const first = await b.backupOk(100, args());
        const before = await b.files();
        const run = b.spawnBackup(100, [...args(), "--bwlimit", SLOW]);
        const r = await whileCopying(run, () => server.kill("SIGKILL"));
        assertOneLineError(r, /^volt: backup of guest 100 failed: /);
        assert.deepEqual(await b.volids(), [first]);
        await b.assertNothingLeft(before, "a backup whose source died");
        await server.stop();
        server = await startQemuNbd(img, { readOnly: true });
        const next = await b.backupOk(100, args());
        await assertRestoresTo((await b.restore(next, 200)).scsi0, img);
      } finally {
        await server.stop();
      }
    },
  },
  {
    id: "verify",
    title: "verify passes a stored backup and, if the provider verifies, fails a damaged one",
    async run(b) {
      const raw = b.tmp.join("random.raw"); // incompressible data: the largest stored file
      await createImage(raw, 32 * MiB, "raw");
      await sh("dd", [
        "if=/dev/urandom",
        `of=${raw}`,
        "bs=1M",
        "seek=4",
        "count=4",
        "conv=notrunc",
      ]);
      const volid = await b.backupOk(100, ["--disk", `scsi0=${raw}`, "--config", await b.config()]);
      const v = await b.volt(["verify", volid]);
      if (v.code !== 0 && /cannot verify backups|does not support verify/.test(v.stderr)) {
        assertOneLineError(v, /^volt: /);
        b.notes.push("the provider has no archiveVerify: checked the one-line refusal only");
        return;
      }
      assert.equal(v.code, 0, `volt verify failed on an intact backup: ${v.stderr}`);
      const path = (await b.volt(["path", volid])).stdout.trim();
      const victim = await largestFile(path);
      if (!victim) {
        b.notes.push(`'volt path ${volid}' is no local file or directory: not damaged on purpose`);
        return;
      }
      await flipByte(victim, Math.floor((await Deno.stat(victim)).size / 2));
      const bad = await b.volt(["verify", volid]);
      assertOneLineError(bad, /failed verification/);
    },
  },
  {
    id: "prune",
    title: "prune --keep-last 1 keeps each guest's newest backup, which still restores",
    async run(b) {
      const img = await disk(b, "disk.qcow2");
      const other = await disk(b, "other.qcow2");
      const config = await b.config();
      const args = ["--disk", `scsi0=${img}`, "--config", config];
      const kept: string[] = [];
      for (const change of [["write -P 0x71 0 1M"], ["write -P 0x72 5M 1M"], []]) {
        kept[0] = await b.backupOk(100, args);
        await qemuIo(img, change);
      }
      kept[1] = await b.backupOk(101, ["--disk", `scsi0=${other}`, "--config", config]);
      assert.equal((await b.list()).length, 4);
      const p = await b.volt(["prune", b.storeid, "--keep-last", "1"]);
      assert.equal(p.code, 0, `volt prune failed: ${p.stderr}`);
      assert.deepEqual(await b.volids(), [...kept].sort());
      await assertRestoresTo((await b.restore(kept[0], 200)).scsi0, img);
    },
  },
];

/** The largest regular file at `path` (itself, or in the tree below it), skipping logs. */
async function largestFile(path: string): Promise<string | undefined> {
  const st = await Deno.stat(path).catch(() => undefined);
  if (st?.isFile) return path;
  if (!st?.isDirectory) return undefined;
  let best: { path: string; size: number } | undefined;
  for (const rel of await walk(path)) {
    const s = await Deno.lstat(path + rel);
    if (s.isFile && !rel.endsWith(".log") && s.size > (best?.size ?? -1)) {
      best = { path: path + rel, size: s.size };
    }
  }
  return best?.path;
}

/** Runs one scenario in a fresh environment; resolves to its notes. */
export async function runScenario(target: ConformanceTarget, s: Scenario): Promise<string[]> {
  await using b = Bench.create(target);
  await s.run(b);
  return b.notes;
}

/** Registers one `Deno.test` per scenario for `target`. */
export function conformanceSuite(target: ConformanceTarget): void {
  for (const s of SCENARIOS) {
    Deno.test(`${target.name} conformance: ${s.title}`, async () => {
      for (const note of await runScenario(target, s)) console.log(`note: ${note}`);
    });
  }
}
