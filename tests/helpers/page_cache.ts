/**
 * How much of a file is in the page cache, for tests of writers that must not leave their
 * data there.
 *
 * @module
 */

import assert from "node:assert/strict";

/** How many bytes of `path` are in the page cache (`mmap` + `mincore`). */
export function residentBytes(path: string): number {
  const libc = Deno.dlopen("libc.so.6", {
    open: { parameters: ["buffer", "i32"], result: "i32" },
    close: { parameters: ["i32"], result: "i32" },
    mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
    munmap: { parameters: ["pointer", "usize"], result: "i32" },
    mincore: { parameters: ["pointer", "usize", "buffer"], result: "i32" },
  });
  const { open, close, mmap, munmap, mincore } = libc.symbols;
  const size = Deno.statSync(path).size;
  const fd = open(new TextEncoder().encode(`${path}\0`), 0 /* O_RDONLY */);
  assert.ok(fd >= 0, `open ${path}`);
  try {
    const PROT_READ = 1;
    const MAP_SHARED = 1;
    const map = mmap(null, BigInt(size), PROT_READ, MAP_SHARED, fd, 0n);
    assert.ok(map && Deno.UnsafePointer.value(map) !== 2n ** 64n - 1n, "mmap");
    try {
      const pages = new Uint8Array(Math.ceil(size / 4096));
      assert.equal(mincore(map, BigInt(size), pages), 0, "mincore");
      return pages.reduce((n, p) => n + (p & 1), 0) * 4096;
    } finally {
      munmap(map, BigInt(size));
    }
  } finally {
    close(fd);
    libc.close();
  }
}
