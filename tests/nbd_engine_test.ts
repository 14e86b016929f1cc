/**
 * The copy engine's start-up handshake in shared memory: the main thread publishes the data
 * buffer and doorbells after the workers have started, the reader publishes the export size
 * once connected, the writer its sink; an abort wakes whoever waits.
 */
import assert from "node:assert/strict";
import { ABORT_FAILED, CopyShared, COUNTER } from "../lib/nbd/copy_shared.ts";

Deno.test("the set-up published by the main thread arrives whole, any address", () => {
  for (const address of [0x1000n, 0x7fff_8000_1000n, 0x0000_7f12_fedc_b000n, 0xffff_ffffn]) {
    const main = CopyShared.create(4);
    main.publishSetup(address, 7, -1);
    const worker = new CopyShared(main.buffer);
    assert.deepEqual(worker.waitSetup(), { buffer: address, readerBell: 7, consumerBell: -1 });
  }
});

Deno.test("the sink state is unknown until the writer opens its sink", () => {
  const s = CopyShared.create(2);
  assert.equal(s.sinkZero(), undefined);
  s.setSinkOpen(false);
  assert.equal(s.sinkZero(), false);
  const t = CopyShared.create(2);
  t.setSinkOpen(true);
  assert.equal(new CopyShared(t.buffer).sinkZero(), true);
});

Deno.test("connected: the size is readable by the thread that waited for it", () => {
  const s = CopyShared.create(2);
  s.setCounter(COUNTER.size, 5 * 2 ** 32 + 512);
  s.setConnected();
  const w = new CopyShared(s.buffer);
  assert.equal(w.waitConnected(), true);
  assert.equal(w.counter(COUNTER.size), 5 * 2 ** 32 + 512);
});

Deno.test("an abort before the set-up or the connection ends the waits with 'no'", () => {
  const s = CopyShared.create(2);
  s.abort(ABORT_FAILED);
  assert.equal(s.waitSetup(), undefined);
  assert.equal(s.waitConnected(), false);
  // What was published after the abort does not revive the copy.
  s.publishSetup(0x1000n, 3, 4);
  s.setConnected();
  assert.equal(s.waitSetup(), undefined);
  assert.equal(s.waitConnected(), false);
});

Deno.test("a worker blocked waiting for the set-up and the connection wakes on abort", async () => {
  const url = new URL("../lib/nbd/copy_shared.ts", import.meta.url).href;
  const code = `
    import { CopyShared } from ${JSON.stringify(url)};
    self.onmessage = (e) => {
      const s = new CopyShared(e.data);
      self.postMessage("waiting");
      const setup = s.waitSetup();
      const connected = s.waitConnected();
      self.postMessage({ setup: setup === undefined ? "none" : "some", connected });
    };
  `;
  const blob = URL.createObjectURL(new Blob([code], { type: "application/javascript" }));
  const worker = new Worker(blob, { type: "module" });
  try {
    const messages: unknown[] = [];
    const done = new Promise<void>((resolve, reject) => {
      worker.onerror = (e) => {
        e.preventDefault();
        reject(new Error(e.message));
      };
      worker.onmessage = (e) => {
        messages.push(e.data);
        if (messages.length === 2) resolve();
      };
    });
    const s = CopyShared.create(2);
    worker.postMessage(s.buffer);
    while (messages.length === 0) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 50)); // let it block in Atomics.wait
    s.abort(ABORT_FAILED);
    await done;
    assert.deepEqual(messages, ["waiting", { setup: "none", connected: false }]);
  } finally {
    worker.terminate();
    URL.revokeObjectURL(blob);
  }
});
