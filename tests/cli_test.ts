import assert from "node:assert/strict";
import { volt } from "./helpers/volt.ts";

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
