/**
 * The Worker of `_nbd_floor.ts`: a bare libnbd read loop (1 MiB requests, 4 in flight on one
 * connection, `nbd_poll` while none has completed). Deliberately not volt's binding
 * (`ffi/libnbd.ts`) nor its engine: this measures what is left without them.
 *
 * @module
 */

/// <reference lib="deno.worker" />

const CALLBACK = { struct: ["pointer", "pointer", "pointer"] } as const;
const REQUEST = 2 ** 20;
const DEPTH = 4;

self.onmessage = (e: MessageEvent<{ uri: string; rangesFile: string }>) => {
  try {
    self.postMessage({
      bytes: readAll(e.data.uri, JSON.parse(Deno.readTextFileSync(e.data.rangesFile))),
    });
  } catch (err) {
    self.postMessage({ error: err instanceof Error ? err.message : String(err) });
  }
};

function readAll(uri: string, ranges: [number, number][]): number {
  const nbd = Deno.dlopen("libnbd.so.0", {
    nbd_create: { parameters: [], result: "pointer" },
    nbd_connect_uri: { parameters: ["pointer", "buffer"], result: "i32" },
    nbd_aio_pread: {
      parameters: ["pointer", "pointer", "usize", "u64", CALLBACK, "u32"],
      result: "i64",
    },
    nbd_aio_command_completed: { parameters: ["pointer", "i64"], result: "i32" },
    nbd_poll: { parameters: ["pointer", "i32"], result: "i32" },
  }).symbols;
  const requests: [number, number][] = [];
  for (const [offset, length] of ranges) {
    for (let o = offset; o < offset + length; o += REQUEST) {
      requests.push([o, Math.min(REQUEST, offset + length - o)]);
    }
  }
  const h = nbd.nbd_create();
  if (nbd.nbd_connect_uri(h, new TextEncoder().encode(`${uri}\0`)) < 0) {
    throw new Error(`cannot connect to ${uri}`);
  }
  const buffers = Array.from({ length: DEPTH }, () => new Uint8Array(REQUEST));
  const noCallback = new Uint8Array(24);
  const inFlight: (bigint | null)[] = new Array(DEPTH).fill(null);
  let next = 0;
  let done = 0;
  let bytes = 0;
  const issue = (slot: number) => {
    const [offset, length] = requests[next++];
    const ptr = Deno.UnsafePointer.of(buffers[slot]);
    inFlight[slot] = nbd.nbd_aio_pread(h, ptr, BigInt(length), BigInt(offset), noCallback, 0);
    if (inFlight[slot]! < 0n) throw new Error(`read at ${offset} not issued`);
    bytes += length;
  };
  for (let slot = 0; slot < DEPTH && next < requests.length; slot++) issue(slot);
  while (done < requests.length) {
    let progressed = false;
    for (let slot = 0; slot < DEPTH; slot++) {
      const cookie = inFlight[slot];
      if (cookie === null) continue;
      const r = nbd.nbd_aio_command_completed(h, cookie);
      if (r < 0) throw new Error("read failed");
      if (r === 1) {
        done++;
        progressed = true;
        inFlight[slot] = null;
        if (next < requests.length) issue(slot);
      }
    }
    if (!progressed && nbd.nbd_poll(h, -1) < 0) throw new Error("poll failed");
  }
  return bytes;
}
