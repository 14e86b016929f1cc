import assert from "node:assert/strict";
import { parseSectionConfig, writeSectionConfig } from "../lib/config/section_config.ts";
import { checkSection, parseSections } from "../lib/config/storage_config.ts";
import { plugin as dir } from "../plugins/dir.ts";
import { TempDir, volt } from "./helpers/volt.ts";

/** The sample from issue 2: a real /etc/pve/storage.cfg. */
export const PROXMOX_SAMPLE = `dir: local
	path /var/lib/vz
	content iso,vztmpl,backup,snippets,import
	shared 0

lvmthin: local-lvm
	thinpool data
	vgname pve
	content rootdir,images

nfs: nas
	export /srv/pve
	path /mnt/pve/nas
	server 10.0.0.5
	content images,backup
	prune-backups keep-daily=7,keep-weekly=4

pbs: pbs1
	datastore main
	server 10.0.0.9
	content backup
	fingerprint aa:bb:cc
	username backup@pbs
`;

Deno.test("the Proxmox sample configuration parses into four sections", () => {
  const sections = parseSections(PROXMOX_SAMPLE, "storage.cfg");
  assert.deepEqual(sections.map((s) => `${s.type}:${s.id}`), [
    "dir:local",
    "lvmthin:local-lvm",
    "nfs:nas",
    "pbs:pbs1",
  ]);
  const local = checkSection(sections[0], dir);
  assert.deepEqual(local.options, {
    path: "/var/lib/vz",
    content: ["iso", "vztmpl", "backup", "snippets", "import"],
    shared: false,
  });
  assert.deepEqual(sections[2].properties.at(-1), ["prune-backups", "keep-daily=7,keep-weekly=4"]);
});

Deno.test("section config writes back what it read", () => {
  const sections = parseSectionConfig(PROXMOX_SAMPLE, "storage.cfg");
  assert.equal(writeSectionConfig(sections), PROXMOX_SAMPLE);
});

Deno.test("volt status lists local as active and the other types as unsupported", async () => {
  await using tmp = new TempDir();
  const cfg = tmp.join("storage.cfg");
  await Deno.writeTextFile(cfg, PROXMOX_SAMPLE.replace("/var/lib/vz", tmp.join("vz")));
  const r = await volt(["status", "--config", cfg, "--output-format", "json"]);
  assert.equal(r.code, 0, r.stderr);
  const rows = JSON.parse(r.stdout) as { name: string; status: string; type: string }[];
  assert.deepEqual(rows.map((x) => [x.name, x.type, x.status]), [
    ["local", "dir", "active"],
    ["local-lvm", "lvmthin", "unsupported"],
    ["nas", "nfs", "unsupported"],
    ["pbs1", "pbs", "unsupported"],
  ]);
  const text = await volt(["status", "--config", cfg]);
  assert.equal(text.code, 0);
  assert.match(text.stdout, /^local\s+dir\s+active/m);
});

Deno.test("storage options are checked with errors naming the storage and option", () => {
  const check = (text: string) => checkSection(parseSectionConfig(text, "t")[0], dir);
  assert.throws(() => check("dir: x\n\tpath /a\n\tfoo 1\n"), /storage 'x': unknown option 'foo'/);
  assert.throws(() => check("dir: x\n\tcontent images\n"), /storage 'x': 'path' is required/);
  assert.throws(() => check("dir: x\n\tpath /a\n\tpreallocation lots\n"), /'lots' is not one of/);
  assert.throws(
    () => check("dir: x\n\tpath /a\n\tcontent images,movies\n"),
    /'movies' is not one of/,
  );
  assert.throws(() => check("dir: x\n\tpath /a\n\tprune-backups keep-often=3\n"), /keep-often/);
  assert.throws(() => parseSectionConfig("dir: x\n\tpath /a\n\tpath /b\n", "t"), /given twice/);
  assert.throws(
    () => parseSections("dir: xy\n\tpath /a\n\ndir: xy\n\tpath /b\n", "t"),
    /defined twice/,
  );
  assert.throws(() => parseSectionConfig("\tpath /a\n", "t"), /t:1: property line outside/);
});

Deno.test("external-snapshots is accepted as the alias of snapshot-as-volume-chain", () => {
  const s = checkSection(
    parseSectionConfig("dir: x\n\tpath /a\n\texternal-snapshots 1\n", "t")[0],
    dir,
  );
  assert.equal(s.options["snapshot-as-volume-chain"], true);
  const flag = checkSection(parseSectionConfig("dir: x\n\tpath /a\n\tdisable\n", "t")[0], dir);
  assert.equal(flag.options.disable, true);
});

Deno.test("a broken configuration storage is reported by volt status, the others keep working", async () => {
  await using tmp = new TempDir();
  const cfg = tmp.join("storage.cfg");
  await Deno.writeTextFile(
    cfg,
    `dir: good\n\tpath ${tmp.join("g")}\n\ndir: bad\n\tpath /x\n\tfoo 1\n`,
  );
  const r = await volt(["status", "--config", cfg]);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^good\s+dir\s+active/m);
  assert.match(r.stdout, /^bad\s+dir\s+invalid/m);
  assert.match(r.stderr, /storage 'bad': unknown option 'foo'/);
  const use = await volt(["alloc", "bad", "100", "auto", "1M", "--config", cfg]);
  assert.equal(use.code, 1);
  assert.equal(use.stderr.trim(), "volt: storage 'bad': unknown option 'foo'");
});

Deno.test("without a configuration file the built-in local storage lives under VOLT_HOME", async () => {
  await using tmp = new TempDir();
  const env = { VOLT_CONFIG: tmp.join("none.cfg"), VOLT_HOME: tmp.join("home") };
  const r = await volt(["config", "show"], { env });
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^# built-in default$/m);
  assert.match(r.stdout, new RegExp(`^\\tpath ${tmp.join("home")}$`, "m"));
  const add = await volt(["add", "dir", "extra", `path=${tmp.join("extra")}`, "content=iso"], {
    env,
  });
  assert.equal(add.code, 0, add.stderr);
  const written = await Deno.readTextFile(tmp.join("none.cfg"));
  assert.match(written, /^dir: local$/m);
  assert.match(written, /^dir: extra\n\tpath .*\n\tcontent iso$/m);
  const bad = await volt(["set", "extra", "foo=1"], { env });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /unknown option 'foo'/);
});
