// The marks that let the next import free a volume whose importer was killed outright.
import assert from "node:assert/strict";
import { markImport, sweepKilledImports } from "../lib/streams/import_marker.ts";

/** A pid that has just exited (a finished `true`). */
async function deadPid(): Promise<number> {
  const child = new Deno.Command("true").spawn();
  await child.status;
  return child.pid;
}

/** Rewrites the mark of `path` as if another process, `pid`, had written it. */
function claimMark(path: string, pid: number): void {
  const marker = path.replace(/\/([^/]+)$/, "/.$1.volt-import");
  const record = JSON.parse(Deno.readTextFileSync(marker));
  Deno.writeTextFileSync(marker, JSON.stringify({ ...record, pid }));
}

async function sweep(dir: string): Promise<{ freed: string[]; log: string[] }> {
  const freed: string[] = [];
  const log: string[] = [];
  await sweepKilledImports(dir, (name) => {
    freed.push(name);
    Deno.removeSync(`${dir}/${name.split("/").at(-1)}`);
    return Promise.resolve();
  }, (m) => log.push(m));
  return { freed, log };
}

Deno.test("a mark of a killed importer frees its volume; one of a live importer does not", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const live = `${dir}/vm-1-disk-0.raw`;
    const dead = `${dir}/vm-1-disk-1.raw`;
    Deno.writeFileSync(live, new Uint8Array(4));
    Deno.writeFileSync(dead, new Uint8Array(4));
    const unmarkLive = await markImport(live, "1/vm-1-disk-0.raw");
    await markImport(dead, "1/vm-1-disk-1.raw");
    claimMark(dead, await deadPid());

    // A mark whose writer was killed before it renamed it into place.
    Deno.writeTextFileSync(`${dir}/.vm-1-disk-2.raw.volt-import.${await deadPid()}.tmp`, "{");

    const { freed, log } = await sweep(dir);
    assert.deepEqual(freed, ["1/vm-1-disk-1.raw"]);
    assert.match(log[0], /freed '1\/vm-1-disk-1.raw': an import killed earlier/);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      ".vm-1-disk-0.raw.volt-import",
      "vm-1-disk-0.raw",
    ]);
    await unmarkLive();
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["vm-1-disk-0.raw"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a volume created again under a killed import's name is never freed", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/vm-2-disk-0.raw`;
    Deno.writeFileSync(path, new Uint8Array(4));
    await markImport(path, "2/vm-2-disk-0.raw");
    claimMark(path, await deadPid());
    // The killed import's volume was freed by hand, and a new one made under the same name
    // (ext4 may hand out the same inode number again: the birth time tells them apart).
    Deno.removeSync(path);
    await new Promise((r) => setTimeout(r, 5));
    Deno.writeFileSync(path, new Uint8Array([7, 7]));

    const { freed, log } = await sweep(dir);
    assert.deepEqual(freed, []);
    assert.deepEqual(log, []);
    assert.deepEqual(Deno.readFileSync(path), new Uint8Array([7, 7]));
    assert.ok(![...Deno.readDirSync(dir)].some((e) => e.name.endsWith(".volt-import")));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
