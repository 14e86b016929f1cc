/**
 * Fault injection: a `qemu-img` wrapper, put first on PATH for the volt process under test
 * only, fails or kills volt (SIGKILL, as a crash or power loss would) before or after each
 * qemu-img run of create, rollback and delete. Afterwards the current image must read back its
 * data, `volt check` must report the state, `volt check --repair` must resolve it, and every
 * file must pass `qemu-img check`.
 */

import assert from "node:assert/strict";
import {
  applyWrites,
  assertAllImagesClean,
  assertSameContent,
  PATTERNS,
  SnapshotEnv,
  snapshotNames,
  twoSnapshotChain,
} from "./helpers/snapshots.ts";
import { sh, TempDir } from "./helpers/volt.ts";

const MiB = 1024 * 1024;
const V = "vm-100-disk-0.qcow2";
const VOLID = `st:100/${V}`;

const WRAPPER = `#!/bin/bash
# Test-only qemu-img: counts calls, logs them, and on call number $FAULT_AT
# fails or kills its parent (volt) before or after running the real qemu-img.
n=$(( $(cat "$FAULT_COUNTER" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$FAULT_COUNTER"
echo "$1" >> "$FAULT_COUNTER.log"
if [ "$n" = "$FAULT_AT" ]; then
  case "$FAULT_MODE" in
    fail) echo "qemu-img: injected failure" >&2; exit 1 ;;
    fail-after) "$REAL_QEMU_IMG" "$@"; echo "qemu-img: injected failure after the work" >&2; exit 1 ;;
    crash-before) kill -9 $PPID; exit 1 ;;
    crash-after) "$REAL_QEMU_IMG" "$@"; kill -9 $PPID; exit 0 ;;
  esac
fi
exec "$REAL_QEMU_IMG" "$@"
`;

type Mode = "fail" | "fail-after" | "crash-before" | "crash-after";
const MODES: Mode[] = ["fail", "fail-after", "crash-before", "crash-after"];

interface Scenario {
  name: string;
  golden: "two" | "grown";
  args: string[];
  /** The qemu-img subcommands the operation runs, in order. */
  calls: string[];
  /** `volt check` problem codes expected after a fault at call i (1-based) in a mode. */
  expect(call: number, mode: Mode): string[];
  /** Snapshot lists allowed after the repair: before, or after the operation. */
  lists: string[][];
  /** Content refs (by golden ref name) allowed for current after the fault. */
  current: string[];
}

const SCENARIOS: Scenario[] = [
  {
    name: "snapshot",
    golden: "two",
    args: ["snapshot", VOLID, "s3"],
    calls: ["create"],
    expect: (_c, m) =>
      ({
        "fail": [],
        "fail-after": [],
        "crash-before": ["leftover-link"],
        "crash-after": ["unfinished-snapshot", "leftover-link"],
      })[m],
    lists: [["s1", "s2", "current"]],
    current: ["p012"],
  },
  {
    name: "rollback",
    golden: "two",
    args: ["rollback", VOLID, "s2"],
    calls: ["create"],
    expect: (_c, m) => m === "crash-after" ? ["unfinished-rollback"] : [],
    lists: [["s1", "s2", "current"]],
    current: ["p012"],
  },
  {
    name: "delete (rebase path)",
    golden: "two",
    args: ["delsnapshot", VOLID, "s2"],
    calls: ["rebase"],
    expect: (_c, m) => m.startsWith("fail") ? [] : ["unfinished-delete"],
    lists: [["s1", "s2", "current"], ["s1", "current"]],
    current: ["p012"],
  },
  {
    name: "delete (commit path)",
    golden: "two",
    args: ["delsnapshot", VOLID, "s1"],
    calls: ["commit"],
    expect: () => ["unfinished-delete"],
    lists: [["s2", "current"]],
    current: ["p012"],
  },
  {
    name: "delete (commit path into a larger child)",
    golden: "grown",
    args: ["delsnapshot", VOLID, "s1"],
    calls: ["resize", "commit"],
    expect: (c, m) => c === 1 && m.startsWith("fail") ? [] : ["unfinished-delete"],
    lists: [["s1", "current"], ["current"]],
    current: ["grown"],
  },
];

interface Golden {
  dir: string;
  refs: Record<string, string>;
}

async function makeGoldens(): Promise<{ goldens: Record<string, Golden>; envs: SnapshotEnv[] }> {
  const two = new SnapshotEnv();
  const { refs } = await twoSnapshotChain(two);
  const grown = new SnapshotEnv();
  await grown.ok(["alloc", "st", "100", V, "256M"]);
  await applyWrites(grown.file(V), "qcow2", PATTERNS[0]);
  await grown.ok(["snapshot", VOLID, "s1"]);
  await sh("qemu-img", ["resize", "-q", "-f", "qcow2", grown.file(V), "320M"]);
  const tail = { pattern: 0x44, offset: 300 * MiB, length: MiB };
  await applyWrites(grown.file(V), "qcow2", [tail]);
  return {
    goldens: {
      two: {
        dir: two.root,
        refs: { s1: refs[0], s2: refs[1], p01: refs[1], p012: refs[2], current: refs[2] },
      },
      grown: {
        dir: grown.root,
        refs: {
          s1: await grown.reference("p0", 256 * MiB, PATTERNS[0]),
          grown: await grown.reference("grown", 320 * MiB, [...PATTERNS[0], tail]),
        },
      },
    },
    envs: [two, grown],
  };
}

async function copyStorage(golden: Golden, env: SnapshotEnv): Promise<void> {
  await sh("cp", ["-a", "--sparse=always", golden.dir, env.root]);
}

interface CheckReport {
  ok: boolean;
  problems: { code: string; repaired?: boolean }[];
}

async function check(env: SnapshotEnv, repair = false): Promise<CheckReport> {
  const args = ["check", VOLID, "--output-format", "json"];
  if (repair) args.push("--repair");
  const r = await env.volt(args);
  assert.ok(r.code === 0 || r.code === 1, `volt check: ${r.stderr}`);
  const report = JSON.parse(r.stdout) as CheckReport;
  assert.equal(r.code, report.ok ? 0 : 1);
  return report;
}

/** Every snapshot in the list and current read back their references. */
async function assertChainContent(
  env: SnapshotEnv,
  golden: Golden,
  names: string[],
  current: string[],
): Promise<void> {
  for (const n of names) {
    if (n === "current") continue;
    await assertSameContent(env.file(`snap-${n}-${V}`), golden.refs[n]);
  }
  let matched = false;
  for (const c of current) {
    const out = await new Deno.Command("qemu-img", {
      args: ["compare", "-q", "-f", "qcow2", "-F", "raw", env.file(V), golden.refs[c]],
    }).output();
    if (out.code === 0) matched = true;
  }
  assert.ok(matched, `current matches none of ${current.join(", ")}`);
}

Deno.test("a failure or crash at any qemu-img step keeps the disk; check reports and repairs", async (t) => {
  const bin = new TempDir("volt-fault-bin-");
  const { goldens, envs } = await makeGoldens();
  try {
    Deno.writeTextFileSync(bin.join("qemu-img"), WRAPPER, { mode: 0o755 });
    const realQemuImg = (await sh("bash", ["-c", "command -v qemu-img"])).trim();
    for (const sc of SCENARIOS) {
      const golden = goldens[sc.golden];
      // A clean run through the wrapper: the operation runs exactly the expected qemu-img calls.
      await t.step(`${sc.name}: qemu-img calls`, async () => {
        await using env = new SnapshotEnv();
        await copyStorage(golden, env);
        const counter = env.tmp.join("counter");
        const r = await env.volt(sc.args, {
          PATH: `${bin.path}:${env.env.PATH}`,
          FAULT_AT: "0",
          FAULT_COUNTER: counter,
          REAL_QEMU_IMG: realQemuImg,
        });
        assert.equal(r.code, 0, r.stderr);
        assert.deepEqual(Deno.readTextFileSync(`${counter}.log`).trim().split("\n"), sc.calls);
      });
      for (let call = 1; call <= sc.calls.length; call++) {
        for (const mode of MODES) {
          await t.step(`${sc.name}: ${mode} at ${sc.calls[call - 1]}`, async () => {
            await using env = new SnapshotEnv();
            await copyStorage(golden, env);
            const r = await env.volt(sc.args, {
              PATH: `${bin.path}:${env.env.PATH}`,
              FAULT_AT: String(call),
              FAULT_MODE: mode,
              FAULT_COUNTER: env.tmp.join("counter"),
              REAL_QEMU_IMG: realQemuImg,
            });
            if (mode.startsWith("crash")) assert.notEqual(r.code, 0);
            if (r.code === 1) assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
            // The current image reads back its data whatever happened.
            await assertChainContent(env, golden, [], sc.current);

            const found = await check(env);
            const codes = found.problems.map((p) => p.code);
            assert.deepEqual(codes, sc.expect(call, mode), JSON.stringify(found));
            assert.equal(found.ok, codes.length === 0);
            if (codes.length > 0) {
              // Other operations refuse until the state is repaired.
              const again = await env.volt(["snapshot", VOLID, "other"]);
              assert.equal(again.code, 1);
              assert.match(again.stderr, /volt check --repair/);
            }

            const repaired = await check(env, true);
            assert.equal(repaired.ok, true, JSON.stringify(repaired));
            assert.ok(repaired.problems.every((p) => p.repaired === true));
            const after = await check(env);
            assert.deepEqual(after.problems, []);

            const names = await snapshotNames(env, VOLID);
            assert.ok(
              sc.lists.some((l) => l.join() === names.join()),
              `snapshots after repair: ${names.join(", ")}`,
            );
            await assertChainContent(env, golden, names, sc.current);
            await assertAllImagesClean(env.dir());
            assert.deepEqual(
              env.listDir().filter((n) => n.endsWith(".tmp")),
              [],
              "no temporary file is left",
            );
          });
        }
      }
    }
  } finally {
    for (const e of envs) await e[Symbol.asyncDispose]();
    await bin[Symbol.asyncDispose]();
  }
});
