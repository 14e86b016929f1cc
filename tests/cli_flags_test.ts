import assert from "node:assert/strict";
import { parseArgs } from "node:util";
import { FlagError, type FlagSpec, parseFlags } from "../lib/cli/flags.ts";

const SPECS: Record<string, FlagSpec> = {
  depth: { type: "string" },
  sync: { type: "boolean" },
  plugin: { type: "string", multiple: true },
  verbose: { type: "boolean", multiple: true },
  help: { type: "boolean", short: "h" },
  output: { type: "string", short: "o" },
};

/** node:util's parseArgs in the mode volt used before (strict, positionals allowed). */
function nodeParse(argv: string[]) {
  const { values, positionals } = parseArgs({
    args: argv,
    options: SPECS,
    allowPositionals: true,
    strict: true,
  });
  return { values: { ...values }, positionals };
}

function ours(argv: string[]) {
  const { values, positionals } = parseFlags(argv, SPECS);
  return { values: { ...values }, positionals };
}

Deno.test("parseFlags gives node:util parseArgs' values for what both accept", () => {
  const accepted: string[][] = [
    [],
    ["a", "b"],
    ["--depth", "8", "src", "dst"],
    ["--depth=8", "--sync", "src"],
    ["src", "--depth", "-"], // a lone '-' is a value (stdin)
    ["-", "--sync"],
    ["--depth=-1"], // a value starting with '-' given with '='
    ["--depth=", "x"], // an empty value
    ["--depth", "1", "--depth", "2"], // the last one wins
    ["--plugin", "a.ts", "--plugin=b.ts", "x"],
    ["--verbose", "--verbose"],
    ["-h"],
    ["x", "-h", "y"],
    ["-o", "out", "-oout2"],
    ["-ho", "f"],
    ["--", "--sync", "-h", "--unknown"],
    ["a", "--", "b"],
  ];
  for (const argv of accepted) {
    assert.deepEqual(ours(argv), nodeParse(argv), JSON.stringify(argv));
  }
});

Deno.test("parseFlags refuses what node:util parseArgs refuses, with one line naming the option", () => {
  const refused: [string[], RegExp][] = [
    [["--frob"], /^unknown option '--frob'$/],
    [["--frob=1"], /^unknown option '--frob'$/],
    [["-x"], /^unknown option '-x'$/],
    [["-5"], /^unknown option '-5'$/], // a negative number is not a positional
    [["--depth"], /^--depth needs a value$/],
    [["--depth", "-1"], /^--depth needs a value; one starting with '-' is given as --depth=VALUE$/],
    [["--depth", "--sync"], /^--depth needs a value; /],
    [["--depth", "--"], /^--depth needs a value; /],
    [["--sync=yes"], /^--sync takes no value$/],
    [["-o"], /^-o needs a value$/],
  ];
  for (const [argv, message] of refused) {
    assert.throws(() => nodeParse(argv), JSON.stringify(argv));
    assert.throws(() => ours(argv), (err: Error) => {
      assert.ok(err instanceof FlagError, String(err));
      assert.match(err.message, message);
      return true;
    });
  }
});
