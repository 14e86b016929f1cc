/**
 * A chain whose backing file points outside the storage (by absolute path, by `..`, by a
 * `json:` name, or through a symlink) is refused by every operation, before qemu opens it,
 * and nothing is changed: not the volume's files, not the file outside.
 */

import assert from "node:assert/strict";
import { SnapshotEnv } from "./helpers/snapshots.ts";
import { sh } from "./helpers/volt.ts";

const V = "vm-100-disk-0.qcow2";
const VOLID = `st:100/${V}`;
const S1 = `snap-s1-${V}`;

interface Setup {
  name: string;
  /** Makes the bad chain; `outside` is a qcow2 outside the storage. */
  make(env: SnapshotEnv, outside: string): Promise<void>;
  message: RegExp;
}

async function qemuImg(...args: string[]): Promise<void> {
  await sh("qemu-img", args);
}

const SETUPS: Setup[] = [
  {
    name: "the volume's backing file is an absolute path outside",
    async make(env, outside) {
      await qemuImg("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", outside, env.file(V));
    },
    message: /points outside the storage/,
  },
  {
    name: "a snapshot deeper in the chain is backed by '../..'",
    async make(env, outside) {
      await qemuImg("create", "-q", "-f", "qcow2", env.file(S1), "16M");
      await qemuImg("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", S1, env.file(V));
      const rel = `../../../${outside.split("/").at(-1)}`;
      await qemuImg("rebase", "-q", "-u", "-f", "qcow2", "-F", "qcow2", "-b", rel, env.file(S1));
    },
    message: /points outside the storage|contains '\.\.'/,
  },
  {
    name: "a snapshot is backed by a json: name",
    async make(env, outside) {
      await qemuImg("create", "-q", "-f", "qcow2", env.file(S1), "16M");
      await qemuImg("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", S1, env.file(V));
      const json = `json:{"driver":"qcow2","file":{"driver":"file","filename":"${outside}"}}`;
      await qemuImg("rebase", "-q", "-u", "-f", "qcow2", "-F", "qcow2", "-b", json, env.file(S1));
    },
    message: /protocol or json: name/,
  },
  {
    name: "a snapshot file is a symlink to a file outside",
    async make(env, outside) {
      Deno.symlinkSync(outside, env.file(S1));
      await qemuImg(
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-u",
        "-b",
        S1,
        env.file(V),
        "16M",
      );
    },
    message: /outside the storage|symbolic link/,
  },
];

function snapshotOf(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of Deno.readDirSync(dir)) {
    const st = Deno.lstatSync(`${dir}/${e.name}`);
    out[e.name] = `${st.size}:${st.mtime?.getTime()}:${st.ino}`;
  }
  return out;
}

for (const setup of SETUPS) {
  Deno.test(`every operation refuses a chain where ${setup.name}`, async () => {
    await using env = new SnapshotEnv();
    await env.ok(["status"]);
    Deno.mkdirSync(env.dir(), { recursive: true });
    const outside = env.tmp.join("outside.qcow2");
    await qemuImg("create", "-q", "-f", "qcow2", outside, "16M");
    await sh("qemu-io", ["-c", "write -P 0x5a 0 1M", outside]);
    await setup.make(env, outside);
    const before = snapshotOf(env.dir());
    const outsideBefore = Deno.statSync(outside).mtime?.getTime();

    for (
      const args of [
        ["snapshot", VOLID, "s9"],
        ["rollback", VOLID, "s1"],
        ["delsnapshot", VOLID, "s1"],
        ["snapshots", VOLID],
        ["free", VOLID],
      ]
    ) {
      await env.fails(args, setup.message);
    }
    for (const repair of [[], ["--repair"]]) {
      const r = await env.volt(["check", VOLID, "--output-format", "json", ...repair]);
      assert.equal(r.code, 1, r.stderr);
      const report = JSON.parse(r.stdout);
      assert.equal(report.ok, false);
      assert.equal(report.problems[0].code, "unsafe-chain");
      assert.match(report.problems[0].message, setup.message);
    }
    // Nothing changed, apart from the volume's lock file.
    const after = snapshotOf(env.dir());
    delete after[`.${V}.lock`];
    assert.deepEqual(after, before);
    assert.equal(Deno.statSync(outside).mtime?.getTime(), outsideBefore);
  });
}

Deno.test("internal snapshots refuse a volume backed by a file outside the storage too", async () => {
  await using env = new SnapshotEnv({ chain: false });
  await env.ok(["status"]);
  Deno.mkdirSync(env.dir(), { recursive: true });
  const outside = env.tmp.join("outside.qcow2");
  await qemuImg("create", "-q", "-f", "qcow2", outside, "16M");
  await qemuImg("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", outside, env.file(V));
  for (const args of [["snapshot", VOLID, "s1"], ["snapshots", VOLID]]) {
    await env.fails(args, /points outside the storage/);
  }
  const r = await env.volt(["check", VOLID]);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /error: .*points outside the storage/);
});
