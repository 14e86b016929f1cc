/**
 * `deno task bench`: runs every benchmark in scripts/bench/ (each `*.ts` except this file) in
 * turn, or only those named: `deno task bench streams nbd`. Each benchmark is a standalone
 * script that measures volt side by side with the tool a user would use instead and prints
 * ratios; this runner only sequences them so they do not disturb each other.
 *
 * @module
 */

const dir = new URL(".", import.meta.url).pathname;
const wanted = Deno.args;
const benches: string[] = [];
for await (const e of Deno.readDir(dir)) {
  if (e.isFile && e.name.endsWith(".ts") && e.name !== "run.ts" && !e.name.startsWith("_")) {
    const name = e.name.replace(/\.ts$/, "");
    if (wanted.length === 0 || wanted.includes(name)) benches.push(name);
  }
}
benches.sort();
let failed = 0;
for (const name of benches) {
  console.log(`\n=== bench ${name}`);
  const { code } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${dir}${name}.ts`],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (code !== 0) {
    console.log(`bench ${name} failed (exit ${code})`);
    failed++;
  }
}
Deno.exit(failed > 0 ? 1 : 0);
