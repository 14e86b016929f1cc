import assert from "node:assert/strict";
import { bindOnUse } from "../ffi/bind_on_use.ts";

const TABLE = {
  getpid: { parameters: [], result: "i32" },
  getppid: { parameters: [], result: "i32" },
  getuid: { parameters: [], result: "i32" },
  volt_no_such_function: { parameters: [], result: "i32" },
} as const;

Deno.test("bindOnUse binds the eager symbols at once and each other one on its own first use", () => {
  const lib = bindOnUse("libc.so.6", TABLE, ["getpid"]);
  const bound = (name: string) => Object.getOwnPropertyDescriptor(lib, name)!.get === undefined;
  assert.ok(bound("getpid"));
  assert.ok(!bound("getppid") && !bound("getuid"));
  assert.equal(lib.getpid(), Deno.pid);
  assert.equal(lib.getppid(), Deno.ppid);
  assert.ok(bound("getppid"), "a lazy symbol becomes a plain property once used");
  assert.ok(!bound("getuid"), "using one lazy symbol binds no other");
  assert.equal(lib.getppid(), Deno.ppid);
  assert.deepEqual(Object.keys(lib).sort(), Object.keys(TABLE).sort());
});

Deno.test("bindOnUse: a missing lazy symbol fails on its first use with the caller's error", () => {
  const lib = bindOnUse(
    "libc.so.6",
    TABLE,
    ["getpid"],
    (name) => new Error(`libc has no ${name}: upgrade`),
  );
  assert.equal(lib.getpid(), Deno.pid);
  assert.throws(() => lib.volt_no_such_function(), {
    message: "libc has no volt_no_such_function: upgrade",
  });
  const plain = bindOnUse("libc.so.6", TABLE, []);
  assert.throws(() => plain.volt_no_such_function(), {
    message: "libc.so.6 has no function volt_no_such_function",
  });
});

Deno.test("bindOnUse: a missing eager symbol or library fails at once", () => {
  assert.throws(() => bindOnUse("libc.so.6", TABLE, ["volt_no_such_function"]));
  assert.throws(() => bindOnUse("/nonexistent/libvolt.so", TABLE, ["getpid"]));
});
