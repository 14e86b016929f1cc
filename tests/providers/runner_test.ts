/**
 * `deno task conformance` (`scripts/conformance.ts`): the runner for third-party providers
 * catches a provider that breaks a rule, prints a summary, and exits non-zero; a good one
 * passes; command-line mistakes get one line and exit 2.
 */

import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url).pathname;
const LEAKY = "tests/providers/fixtures/leaky_backup.ts";

async function conformance(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-prompt", "scripts/conformance.ts", ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

Deno.test("the conformance runner fails a provider that leaves a failed backup's files, naming them", async () => {
  const r = await conformance(["--plugin", LEAKY, "--only", "interrupt,verify"]);
  assert.equal(r.code, 1, r.out + r.err);
  assert.match(r.out, /storage type leaky-backup from .*leaky_backup\.ts/);
  assert.match(r.out, /^ {2}FAILED {2}interrupt /m);
  assert.match(r.out, /interrupted by SIGINT left these in the storage directory/);
  assert.match(r.out, /\.tmp-qemu-\d+\/scsi0\.raw\.zst/);
  // Without archiveVerify the refusal is what is checked, and said so.
  assert.match(r.out, /^ {2}ok {6}verify /m);
  assert.match(r.out, /note: the provider has no archiveVerify/);
  assert.match(r.out.trim().split("\n").at(-1)!, /^1 passed, 1 failed \(.*\): interrupt$/);
});

Deno.test("the conformance runner passes the example provider given by path and options", async () => {
  const r = await conformance([
    "--plugin",
    "plugins/examples/zstd_backup.ts",
    "--option",
    "path={dir}/backups",
    "--only",
    "full",
  ]);
  assert.equal(r.code, 0, r.out + r.err);
  assert.match(r.out, /^ {4}zstd-backup: conf\n {4}\tpath \{dir\}\/backups$/m);
  assert.match(r.out.trim().split("\n").at(-1)!, /^1 passed, 0 failed/);
});

Deno.test("the conformance runner refuses bad command lines with one line and exit 2", async () => {
  const cases: [string[], RegExp][] = [
    [[], /give the plugin to check with --plugin FILE/],
    [["--plugin", "plugins/examples/flat.ts"], /type 'flat' is not a backup provider/],
    [["--plugin", "nonexistent.ts"], /nonexistent\.ts: file not found/],
    [["--type", "backup-dir", "--only", "nope"], /no scenario 'nope'/],
    [["--type", "backup-dir", "--option", "path"], /--option 'path': expected KEY=VALUE/],
    [["--type", "backup-dir", "--bogus"], /Unknown option '--bogus'/],
  ];
  for (const [args, re] of cases) {
    const r = await conformance(args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.out}${r.err}`);
    assert.match(r.err.split("\n")[0], re);
    assert.doesNotMatch(r.err, /^\s+at /m);
  }
});
