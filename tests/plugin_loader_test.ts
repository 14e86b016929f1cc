import assert from "node:assert/strict";
import { checkApiVersion } from "../lib/plugins/loader.ts";
import { APIVER } from "../plugins/api.ts";
import { TempDir, volt } from "./helpers/volt.ts";

/** A small third-party storage plugin: raw images in one flat directory, no imports. */
function flatPlugin(type: string, api: number, omit?: string): string {
  const methods: Record<string, string> = {
    parseVolname: `parseVolname(volname) {
      const m = /^(\\d+)\\/(vm-\\d+-disk-\\d+\\.raw)$/.exec(volname);
      if (!m) throw new TypeError("invalid volume name '" + volname + "'");
      return { vtype: "images", name: m[2], vmid: Number(m[1]), format: "raw" };
    }`,
    path: `path(storage, volname) {
      this.parseVolname(volname);
      return storage.options.path + "/" + volname.split("/")[1];
    }`,
    activateStorage: `async activateStorage(storage) {
      await Deno.mkdir(storage.options.path, { recursive: true });
    }`,
    status: `async status() { return { active: true, total: 100, used: 1, avail: 99 }; }`,
    allocImage: `async allocImage(storage, vmid, format, name, size) {
      if (format !== "raw") throw new Error("flat storages only hold raw images");
      let n = 0;
      while (true) {
        const file = name ?? "vm-" + vmid + "-disk-" + n + ".raw";
        try {
          const f = await Deno.open(storage.options.path + "/" + file, { write: true, createNew: true });
          await f.truncate(size);
          f.close();
          return vmid + "/" + file;
        } catch (err) {
          if (name || !(err instanceof Deno.errors.AlreadyExists)) throw err;
          n++;
        }
      }
    }`,
    freeImage:
      `async freeImage(storage, volname) { await Deno.remove(this.path(storage, volname)); }`,
    listVolumes: `async listVolumes(storage) {
      const out = [];
      for await (const e of Deno.readDir(storage.options.path)) {
        const m = /^vm-(\\d+)-disk-\\d+\\.raw$/.exec(e.name);
        if (!m) continue;
        const st = await Deno.stat(storage.options.path + "/" + e.name);
        out.push({ volid: storage.id + ":" + m[1] + "/" + e.name, format: "raw", size: st.size,
          used: st.blocks * 512, vmid: Number(m[1]), content: "images", ctime: 0 });
      }
      return out;
    }`,
    volumeSizeInfo: `async volumeSizeInfo(storage, volname) {
      const st = await Deno.stat(this.path(storage, volname));
      return { format: "raw", size: st.size, used: st.blocks * 512 };
    }`,
  };
  const body = Object.entries(methods).filter(([k]) => k !== omit).map(([, v]) => v).join(
    ",\n    ",
  );
  return `export const plugin = {
    type: ${JSON.stringify(type)},
    api: ${api},
    description: "raw images in one flat directory",
    content: { supported: ["images"], default: ["images"] },
    options: { path: { type: "string", required: true, description: "directory" } },
    ${body}
  };\n`;
}

async function setup(tmp: TempDir) {
  const cfg = tmp.join("storage.cfg");
  await Deno.writeTextFile(
    cfg,
    `dir: local\n\tpath ${tmp.join("home")}\n\nflat: fl\n\tpath ${tmp.join("flat")}\n`,
  );
  return { VOLT_CONFIG: cfg, VOLT_PLUGINS: tmp.join("no-plugins-dir") };
}

Deno.test("a third-party plugin loaded with --plugin is listed and serves alloc and list", async () => {
  await using tmp = new TempDir();
  const env = await setup(tmp);
  const file = tmp.join("flat.ts");
  await Deno.writeTextFile(file, flatPlugin("flat", APIVER));
  const p = await volt(["plugins", "--plugin", file, "--output-format", "json"], { env });
  assert.equal(p.code, 0, p.stderr);
  const rows = JSON.parse(p.stdout) as { type: string; source: string; api: number }[];
  assert.deepEqual(rows.map((r) => [r.type, r.source, r.api]), [
    ["dir", "plugins/dir.ts", 1],
    ["backup-dir", "plugins/backup_dir.ts", 1],
    ["flat", file, APIVER],
  ]);
  const a = await volt(["alloc", "fl", "100", "auto", "1M", "--plugin", file], { env });
  assert.equal(a.code, 0, a.stderr);
  assert.equal(a.stdout.trim(), "successfully created 'fl:100/vm-100-disk-0.raw'");
  assert.equal((await Deno.stat(tmp.join("flat/vm-100-disk-0.raw"))).size, 1024 * 1024);
  const l = await volt(["list", "fl", "--plugin", file, "--output-format", "json"], { env });
  assert.deepEqual(JSON.parse(l.stdout).map((v: { volid: string }) => v.volid), [
    "fl:100/vm-100-disk-0.raw",
  ]);
  const s = await volt(["status", "--plugin", file], { env });
  assert.match(s.stdout, /^fl\s+flat\s+active/m);
});

Deno.test("a plugin in the plugins directory loads without --plugin", async () => {
  await using tmp = new TempDir();
  const env = await setup(tmp);
  await Deno.mkdir(tmp.join("plugins"));
  await Deno.writeTextFile(tmp.join("plugins/flat.ts"), flatPlugin("flat", APIVER));
  const r = await volt(["alloc", "fl", "7", "auto", "4K"], {
    env: { ...env, VOLT_PLUGINS: tmp.join("plugins") },
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), "successfully created 'fl:7/vm-7-disk-0.raw'");
});

for (
  const [what, source, message] of [
    [
      "a too-new API version",
      flatPlugin("flat", APIVER + 1),
      /API version \d+ is newer than volt's/,
    ],
    ["a missing method", flatPlugin("flat", APIVER, "allocImage"), /missing 'allocImage'/],
    [
      "a duplicate type name",
      flatPlugin("dir", APIVER),
      /storage type 'dir' is already provided by plugins\/dir\.ts/,
    ],
    ["a syntax error", "export const plugin = {", /cannot load module/],
    ["no plugin export", "export const other = 1;\n", /no 'plugin' export/],
  ] as const
) {
  Deno.test(`a plugin with ${what} is refused naming its file, and volt keeps working`, async () => {
    await using tmp = new TempDir();
    const env = await setup(tmp);
    const file = tmp.join("broken.ts");
    await Deno.writeTextFile(file, source);
    const p = await volt(["plugins", "--plugin", file, "--output-format", "json"], { env });
    assert.equal(p.code, 0, p.stderr);
    const errLine = p.stderr.trim().split("\n").find((l) => l.includes(file));
    assert.ok(errLine, `no error naming ${file}: ${p.stderr}`);
    assert.match(errLine, message);
    const rows = JSON.parse(p.stdout) as { type: string; source: string }[];
    assert.deepEqual(rows.filter((r) => r.source === file), [], "the broken plugin must not load");
    assert.ok(rows.every((r) => r.source.startsWith("plugins/")), "only built-ins remain");
    assert.equal(rows.filter((r) => r.type === "dir").length, 1);
    const a = await volt(["alloc", "local", "100", "auto", "1M", "--plugin", file], { env });
    assert.equal(a.code, 0, a.stderr);
    assert.match(a.stdout, /local:100\/vm-100-disk-0\.raw/);
    const s = await volt(["status", "--plugin", file], { env });
    assert.match(s.stdout, /^fl\s+flat\s+unsupported/m);
  });
}

Deno.test("the API version window accepts older versions with a warning", () => {
  assert.equal(checkApiVersion(5, 5, 2), undefined);
  assert.match(checkApiVersion(3, 5, 2)!, /older than volt's \(5\)/);
  assert.throws(() => checkApiVersion(2, 5, 2), /too old \(volt accepts 3 to 5\)/);
  assert.throws(() => checkApiVersion(6, 5, 2), /newer than volt's \(5\)/);
  assert.throws(() => checkApiVersion(0), /positive integer/);
});

Deno.test("a missing --plugin file is reported and volt keeps working", async () => {
  await using tmp = new TempDir();
  const env = await setup(tmp);
  const r = await volt(["plugins", "--plugin", tmp.join("nope.ts")], { env });
  assert.equal(r.code, 0);
  assert.match(r.stderr, /plugin .*nope\.ts: file not found/);
});

Deno.test("the example plugin from docs/plugins.md loads by path and serves alloc, list, free", async () => {
  await using tmp = new TempDir();
  const cfg = tmp.join("storage.cfg");
  await Deno.writeTextFile(cfg, `flat: scratch\n\tpath ${tmp.join("scratch")}\n`);
  const example = new URL("../plugins/examples/flat.ts", import.meta.url).pathname;
  const env = { VOLT_CONFIG: cfg, VOLT_PLUGINS: tmp.join("none") };
  const a = await volt(["alloc", "scratch", "5", "auto", "2M", "--plugin", example], { env });
  assert.equal(a.code, 0, a.stderr);
  assert.equal(a.stdout.trim(), "successfully created 'scratch:5/vm-5-disk-0.raw'");
  const l = await volt(["list", "scratch", "--plugin", example, "--output-format", "json"], {
    env,
  });
  assert.deepEqual(
    JSON.parse(l.stdout).map((v: { volid: string; size: number }) => [v.volid, v.size]),
    [
      ["scratch:5/vm-5-disk-0.raw", 2 * 1024 * 1024],
    ],
  );
  assert.equal(
    (await volt(["free", "scratch:5/vm-5-disk-0.raw", "--plugin", example], { env })).code,
    0,
  );
  await assert.rejects(Deno.stat(tmp.join("scratch/vm-5-disk-0.raw")), Deno.errors.NotFound);
});
