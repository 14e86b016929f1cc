/**
 * `deno task conformance`: runs the backup provider conformance suite
 * (`tests/providers/conformance.ts`, the scenarios the built-in and the example provider pass
 * in `deno task test`) against a backup storage type given on the command line, usually a
 * third-party plugin:
 *
 * ```
 * deno task conformance --plugin ./their.ts [--type TYPE] [--option KEY=VALUE]…
 * deno task conformance --plugin ./their.ts --storage-section section.cfg
 * deno task conformance --type backup-dir                  # a built-in type
 * ```
 *
 * The storage under test is one storage.cfg section. Either the runner writes it, `TYPE: conf`
 * with one line per `--option` (and `path {dir}` when the type has a `path` option and none
 * was given), or `--storage-section FILE` gives it whole. In both, every `{dir}` becomes an
 * empty directory of each scenario, so each scenario starts with an empty storage. `--type`
 * defaults to the plugin's own type. `--only ID,…` runs some scenarios (`--list` names them).
 *
 * Prints one line per scenario and a summary; exits 0 when all passed, 1 when one failed,
 * 2 on a usage error.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { loadPlugins } from "../lib/plugins/loader.ts";
import {
  type ConformanceTarget,
  runScenario,
  SCENARIOS,
  sectionId,
} from "../tests/providers/conformance.ts";

const USAGE = "usage: deno task conformance --plugin FILE [--type TYPE] [--option KEY=VALUE]… " +
  "[--storage-section FILE] [--only ID,…] [--list]";

/** A command-line mistake: one line and exit code 2. */
class Usage extends Error {}

/** Paths are relative to where `deno task` was started, not to the project. */
function fromUserCwd(path: string): string {
  if (path.startsWith("/")) return path;
  return `${Deno.env.get("INIT_CWD") ?? Deno.cwd()}/${path}`;
}

/** The target the command line describes. */
async function targetFromArgs(
  argv: string[],
): Promise<{ target: ConformanceTarget; only?: string[] }> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      plugin: { type: "string" },
      type: { type: "string" },
      option: { type: "string", multiple: true },
      "storage-section": { type: "string" },
      only: { type: "string" },
      list: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  if (values.list) {
    for (const s of SCENARIOS) console.log(`${s.id.padEnd(16)}${s.title}`);
    Deno.exit(0);
  }
  if (positionals.length > 0) throw new Usage(`unexpected argument '${positionals[0]}'`);
  if (values.plugin === undefined && values.type === undefined) {
    throw new Usage("give the plugin to check with --plugin FILE (or a built-in --type)");
  }
  const only = values.only?.split(",").filter(Boolean);
  for (const id of only ?? []) {
    if (!SCENARIOS.some((s) => s.id === id)) {
      throw new Usage(`--only: no scenario '${id}' (${SCENARIOS.map((s) => s.id).join(", ")})`);
    }
  }
  const pluginPath = values.plugin === undefined ? undefined : fromUserCwd(values.plugin);

  // Load the plugin as volt will (and only it: no plugins directory).
  const registry = await loadPlugins({
    paths: pluginPath ? [pluginPath] : [],
    dir: "/nonexistent/volt-conformance",
  });
  if (registry.errors.length > 0) throw new Usage(registry.errors[0].message);
  const type = values.type ?? registry.plugins.find((p) => !p.builtin)!.plugin.type;
  const plugin = registry.get(type);
  if (!plugin) throw new Usage(`no storage type '${type}' (is --type right?)`);
  if (!plugin.features?.includes("backup-provider")) {
    throw new Usage(
      `storage type '${type}' is not a backup provider (no 'backup-provider' feature)`,
    );
  }

  let storageSection: string;
  if (values["storage-section"] !== undefined) {
    if (values.option) throw new Usage("give either --storage-section or --option, not both");
    const file = fromUserCwd(values["storage-section"]);
    try {
      storageSection = await Deno.readTextFile(file);
    } catch (err) {
      throw new Usage(`--storage-section: cannot read '${file}': ${(err as Error).message}`);
    }
  } else {
    const options = (values.option ?? []).map((o) => {
      const m = /^([a-z][a-z0-9-]*)=(.*)$/.exec(o);
      if (!m) throw new Usage(`--option '${o}': expected KEY=VALUE`);
      return [m[1], m[2]];
    });
    if (plugin.options.path && !options.some(([k]) => k === "path")) {
      options.push(["path", "{dir}"]);
    }
    storageSection = [`${type}: conf`, ...options.map(([k, v]) => `\t${k} ${v}`)].join("\n") + "\n";
  }
  try {
    sectionId(storageSection);
  } catch (err) {
    throw new Usage(`storage section: ${(err as Error).message}`);
  }
  return { target: { name: type, pluginPath, storageSection }, only };
}

/** The first lines of an error, indented for the report. */
function explain(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  const lines = text.split("\n").filter((l) => l.trim() !== "");
  const shown = lines.slice(0, 20).map((l) => `          ${l}`);
  if (lines.length > 20) shown.push(`          … ${lines.length - 20} more lines`);
  return shown.join("\n");
}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = await targetFromArgs(argv);
  } catch (err) {
    // parseArgs reports unknown or malformed options as errors with an ERR_PARSE_ARGS_ code.
    const parseError = String((err as { code?: unknown }).code ?? "").startsWith("ERR_PARSE_ARGS");
    if (!(err instanceof Usage) && !parseError) throw err;
    console.error(`conformance: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const { target, only } = parsed;
  const scenarios = SCENARIOS.filter((s) => !only || only.includes(s.id));
  console.log(
    `backup provider conformance: storage type ${target.name}` +
      (target.pluginPath ? ` from ${target.pluginPath}` : " (built in)"),
  );
  console.log(`storage section ({dir}: an empty directory per scenario):`);
  for (const line of target.storageSection.trimEnd().split("\n")) console.log(`    ${line}`);
  if (!target.storageSection.includes("{dir}")) {
    console.log("no {dir} in the section: leftover files after a failure are not looked for");
  }
  console.log("");

  const failed: string[] = [];
  const t0 = performance.now();
  for (const s of scenarios) {
    const t = performance.now();
    const seconds = () => `${((performance.now() - t) / 1000).toFixed(1)} s`;
    try {
      const notes = await runScenario(target, s);
      console.log(`  ok      ${s.id.padEnd(16)}${s.title} (${seconds()})`);
      for (const note of notes) console.log(`          note: ${note}`);
    } catch (err) {
      failed.push(s.id);
      console.log(`  FAILED  ${s.id.padEnd(16)}${s.title} (${seconds()})`);
      console.log(explain(err));
    }
  }
  const total = ((performance.now() - t0) / 1000).toFixed(1);
  console.log(
    `\n${scenarios.length - failed.length} passed, ${failed.length} failed (${total} s)` +
      (failed.length > 0 ? `: ${failed.join(", ")}` : ""),
  );
  return failed.length > 0 ? 1 : 0;
}

Deno.exit(await main(Deno.args));
