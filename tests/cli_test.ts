import assert from "node:assert/strict";
import { sh, volt } from "./helpers/volt.ts";

Deno.test("volt with an unknown command exits 2 with one line naming it", async () => {
  const r = await volt(["frobnicate"]);
  assert.equal(r.code, 2);
  assert.equal(r.stderr.trim().split("\n").length, 1);
  assert.match(r.stderr, /unknown command 'frobnicate'/);
});

Deno.test("volt --help lists the commands and exits 0", async () => {
  const r = await volt(["--help"]);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /usage: volt <command>/);
});

Deno.test("every command in the table loads a spec of the same name, with help", async () => {
  const { COMMANDS } = await import("../lib/commands/mod.ts");
  const { commandHelp } = await import("../lib/cli/command.ts");
  for (const entry of COMMANDS) {
    const spec = await entry.load();
    assert.equal(spec.name, entry.name);
    assert.match(commandHelp(spec), new RegExp(`^usage: volt ${entry.name}`));
  }
});

Deno.test("a command's --help exits 0 and a missing argument exits 2 naming the usage", async () => {
  const help = await volt(["alloc", "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage: volt alloc <storage> <vmid> <filename\|auto> <size>/);
  const missing = await volt(["alloc", "local"]);
  assert.equal(missing.code, 2);
  assert.equal(missing.stderr.trim().split("\n").length, 1);
  assert.match(missing.stderr, /missing argument \(usage: volt alloc/);
  const unknown = await volt(["list", "local", "--frob"]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /^volt list: unknown option '--frob': see 'volt list --help'$/m);
  const dash = await volt(["prune", "backup", "--keep-last", "-1"]);
  assert.equal(dash.code, 2);
  assert.equal(dash.stderr.trim().split("\n").length, 1);
  assert.match(dash.stderr, /--keep-last needs a value; .* is given as --keep-last=VALUE$/m);
});

Deno.test("global options may come before the command", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const cfg = `${dir}/storage.cfg`;
    Deno.writeTextFileSync(cfg, `dir: elsewhere\n\tpath ${dir}/s\n`);
    const r = await volt(["--config", cfg, "status", "--output-format", "json"]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).map((x: { name: string }) => x.name), ["elsewhere"]);
    const two = await volt([`--config=${cfg}`, "config", "show"]);
    assert.equal(two.code, 0, two.stderr);
    assert.match(two.stdout, /^dir: elsewhere$/m);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a leading --config is the storage configuration even for volt backup", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.writeTextFileSync(`${dir}/s.cfg`, `dir: only\n\tpath ${dir}/s\n`);
    Deno.writeTextFileSync(`${dir}/guest.conf`, "memory: 512\n");
    await sh("qemu-img", ["create", "-q", "-f", "qcow2", `${dir}/d.qcow2`, "1M"]);
    const r = await volt([
      "--config",
      `${dir}/s.cfg`,
      "backup",
      "100",
      "--storage",
      "backup",
      "--disk",
      `scsi0=${dir}/d.qcow2`,
      "--config",
      `${dir}/guest.conf`,
    ], { env: { VOLT_HOME: `${dir}/home` } });
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr.trim(),
      "volt: storage 'backup' does not exist (configured: only; see 'volt status')",
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
