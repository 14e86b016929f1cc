/**
 * The floor under any incremental `volt nbd copy` on this runtime, for `nbd.ts`: the least a
 * Deno program can do to read a list of ranges from an NBD export the way the issue asks
 * (the loop off the main thread): start, create one Worker, which binds five libnbd
 * functions, connects, reads the ranges in 1 MiB requests, 4 in flight, into memory, and
 * exits. No volt module is loaded, no map is read (the ranges come from a file), nothing is
 * written. What volt's incremental takes above this is volt's own cost (its modules, the
 * map, the sink); what this takes is the runtime's and the server's.
 *
 * Usage: `deno run -A scripts/bench/_nbd_floor.ts URI RANGES_JSON` where RANGES_JSON holds
 * `[[offset, length], ...]`; prints the bytes read.
 *
 * @module
 */

const [uri, rangesFile] = Deno.args;
const reader = new Worker(new URL("./_nbd_floor_reader.ts", import.meta.url).href, {
  type: "module",
});
reader.onmessage = (e: MessageEvent<{ bytes?: number; error?: string }>) => {
  if (e.data.error) {
    console.error(`nbd_floor: ${e.data.error}`);
    Deno.exit(1);
  }
  console.log(e.data.bytes);
  Deno.exit(0);
};
reader.postMessage({ uri, rangesFile });
