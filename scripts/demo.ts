/**
 * `deno task demo`: runs volt's job end to end on the embedded default configuration, printing
 * each command and its output. Everything happens under a fresh `VOLT_HOME` in a temporary
 * directory (removed afterwards unless `VOLT_DEMO_KEEP=1`), so the demo never touches the
 * host's own storages.
 *
 * @module
 */

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const home = Deno.makeTempDirSync({ prefix: "volt-demo-" });
const env = { VOLT_HOME: `${home}/home`, VOLT_CONFIG: `${home}/storage.cfg`, NO_COLOR: "1" };

async function step(title: string, args: string[]): Promise<string> {
  console.log(`\n$ volt ${args.join(" ")}${title ? `    # ${title}` : ""}`);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  if (stdout) console.log(stdout.trimEnd());
  if (stderr) console.log(stderr.trimEnd());
  if (out.code !== 0) throw new Error(`volt ${args[0]} failed (exit ${out.code})`);
  return stdout;
}

async function tool(cmd: string, args: string[]): Promise<void> {
  console.log(`\n$ ${cmd} ${args.join(" ")}`);
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout).trimEnd();
  if (text) console.log(text);
  if (out.code !== 0) throw new Error(`${cmd} failed: ${new TextDecoder().decode(out.stderr)}`);
}

try {
  console.log(`volt demo: storage under ${env.VOLT_HOME} (built-in default configuration)`);
  await step("the storages", ["status"]);
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
  const path = (await step("where it lives", ["path", volid])).trim();
  await tool("qemu-io", ["-f", "qcow2", "-c", "write -P 0xab 0 4M", path]);
  await step("its size and usage", ["info", volid]);
  await step("a raw disk and a container subvolume", ["alloc", "local", "100", "auto", "64M"]);
  await step("", ["alloc", "local", "100", "auto", "0", "--format", "subvol"]);
  await step("the volumes of the storage", ["list", "local"]);
  await step("the plugins", ["plugins"]);
  for (const v of ["local:100/vm-100-disk-1.raw", "local:100/subvol-100-disk-2.subvol", volid]) {
    await step("remove it", ["free", v]);
  }
  await step("the storage is empty again", ["list", "local"]);
  console.log("\nvolt demo: done");
} catch (err) {
  console.error(`volt demo failed: ${(err as Error).message}`);
  Deno.exitCode = 1;
} finally {
  if (Deno.env.get("VOLT_DEMO_KEEP") === "1") console.log(`kept ${home}`);
  else Deno.removeSync(home, { recursive: true });
}
