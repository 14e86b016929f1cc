import assert from "node:assert/strict";
import { decodeSizeHeader, encodeSizeHeader } from "../lib/streams/size_header.ts";
import {
  decodeMetaJson,
  decodeMetaLength,
  encodeMetaHeader,
  META_MAX_LENGTH,
} from "../lib/streams/meta_header.ts";
import {
  exportFormatsFor,
  importFormatsFor,
  negotiateFormat,
  parseStreamFormat,
} from "../lib/streams/formats.ts";
import { rawPayloadRange } from "../lib/streams/import.ts";
import { StreamChannel } from "../lib/streams/channel.ts";
import { writeSparse } from "../lib/streams/sparse_writer.ts";
import { closeFd, O, openFd } from "../lib/streams/fd.ts";
import type { StreamChunk } from "../plugins/api.ts";
import { TempDir } from "./helpers/volt.ts";
import { residentBytes } from "./helpers/page_cache.ts";

const enc = new TextEncoder();

Deno.test("size header is a u64 little-endian byte count", () => {
  assert.deepEqual([...encodeSizeHeader(1024)], [0x00, 0x04, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual([...encodeSizeHeader(2 * 1024 * 1024)], [0, 0, 0x20, 0, 0, 0, 0, 0]);
  assert.deepEqual([...encodeSizeHeader(2 ** 40 + 1)], [1, 0, 0, 0, 0, 1, 0, 0]);
  assert.equal(decodeSizeHeader(encodeSizeHeader(123456789)), 123456789);
});

Deno.test("size header shorter than 8 bytes is a SyntaxError saying how much arrived", () => {
  assert.throws(
    () => decodeSizeHeader(new Uint8Array(5)),
    (e: Error) => e instanceof SyntaxError && /ended after 5 bytes/.test(e.message),
  );
});

Deno.test("size header beyond 2^53 is refused", () => {
  assert.throws(() => decodeSizeHeader(new Uint8Array(8).fill(0xff)), RangeError);
});

Deno.test("meta header: length, then the JSON with vtype and format first", () => {
  const h = encodeMetaHeader({ vtype: "images", format: "raw" });
  const json = '{"vtype":"images","format":"raw"}';
  assert.deepEqual([...h.subarray(0, 8)], [json.length, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(new TextDecoder().decode(h.subarray(8)), json);
});

Deno.test("meta reader accepts any key order and ignores unknown keys", () => {
  const bytes = enc.encode('{"future":[1,2],"format":"tar","vtype":"rootdir","x":"ü"}');
  const m = decodeMetaJson(bytes, bytes.length);
  assert.equal(m.vtype, "rootdir");
  assert.equal(m.format, "tar");
  assert.deepEqual(m.extra, { future: [1, 2], x: "ü" });
});

Deno.test("meta length over 64 KiB is refused before anything is read", () => {
  assert.equal(decodeMetaLength(encodeSizeHeader(META_MAX_LENGTH)), META_MAX_LENGTH);
  assert.throws(
    () => decodeMetaLength(encodeSizeHeader(META_MAX_LENGTH + 1)),
    (e: Error) => e instanceof RangeError && /exceeds the limit of 65536/.test(e.message),
  );
  assert.throws(() => decodeMetaLength(encodeSizeHeader(2 ** 40)), RangeError);
  assert.throws(() => decodeMetaLength(encodeSizeHeader(0)), SyntaxError);
});

Deno.test("malformed meta JSON is a SyntaxError naming the problem", () => {
  const bad = (text: string | Uint8Array, re: RegExp, length?: number) => {
    const bytes = typeof text === "string" ? enc.encode(text) : text;
    assert.throws(
      () => decodeMetaJson(bytes, length ?? bytes.length),
      (e: Error) => e instanceof SyntaxError && re.test(e.message),
    );
  };
  bad('{"vtype":"images",', /malformed metadata header/);
  bad("[1,2]", /not a JSON object/);
  bad("null", /not a JSON object/);
  bad('{"format":"raw"}', /no 'vtype'/);
  bad('{"vtype":"iso","format":7}', /no 'format'/);
  bad(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), /not valid UTF-8/);
  bad('{"vtype":"iso"', /stream ended inside its metadata header/, 40);
});

Deno.test("format names parse into size, meta and other kinds", () => {
  assert.deepEqual(parseStreamFormat("qcow2+size"), {
    kind: "size",
    name: "qcow2+size",
    data: "qcow2",
  });
  assert.deepEqual(parseStreamFormat("snippets+meta"), {
    kind: "meta",
    name: "snippets+meta",
    vtype: "snippets",
  });
  assert.equal(parseStreamFormat("zfs")?.kind, "other");
  assert.equal(parseStreamFormat("bogus+meta"), undefined);
  assert.equal(parseStreamFormat("raw"), undefined);
});

Deno.test("export format lists follow Proxmox's order and snapshot rules", () => {
  const ex = (vtype: Parameters<typeof exportFormatsFor>[0], fmt: string, ws: boolean) =>
    exportFormatsFor(vtype, fmt, ws).join(",");
  assert.equal(ex("images", "raw", false), "images+meta,raw+size");
  assert.equal(ex("images", "qcow2", false), "raw+size");
  assert.equal(ex("images", "vmdk", false), "raw+size");
  assert.equal(ex("images", "raw", true), "");
  assert.equal(ex("images", "qcow2", true), "images+meta,qcow2+size");
  assert.equal(ex("images", "vmdk", true), "images+meta,vmdk+size");
  assert.equal(ex("rootdir", "subvol", false), "rootdir+meta,tar+size");
  assert.equal(ex("rootdir", "subvol", true), "");
  for (const vtype of ["iso", "vztmpl", "snippets", "import"] as const) {
    assert.equal(ex(vtype, "raw", false), `${vtype}+meta,raw+size`);
    assert.equal(ex(vtype, "raw", true), "");
  }
  assert.equal(ex("backup", "raw", false), "backup+meta");
});

Deno.test("import format lists refuse what the target file cannot hold", () => {
  const im = (vtype: Parameters<typeof importFormatsFor>[0], fmt: string, ws: boolean) =>
    importFormatsFor(vtype, fmt, ws).join(",");
  assert.equal(im("images", "raw", false), "images+meta,raw+size");
  assert.equal(im("images", "qcow2", false), "");
  assert.equal(im("images", "qcow2", true), "images+meta,qcow2+size");
  assert.equal(im("rootdir", "subvol", false), "rootdir+meta,tar+size");
  assert.equal(im("import", "ova", false), "import+meta,raw+size");
});

Deno.test("negotiation picks the first exporter format the importer accepts", () => {
  assert.equal(
    negotiateFormat(["images+meta", "raw+size"], ["raw+size", "images+meta"]),
    "images+meta",
  );
  assert.equal(negotiateFormat(["images+meta", "raw+size"], ["raw+size"]), "raw+size");
  assert.equal(negotiateFormat(["raw+size"], ["images+meta", "qcow2+size"]), undefined);
});

Deno.test("raw payload may be up to 511 bytes shorter than a 512-aligned header", () => {
  assert.deepEqual(rawPayloadRange(1024), { min: 513, max: 1024 });
  assert.deepEqual(rawPayloadRange(1000), { min: 1000, max: 1000 });
  assert.deepEqual(rawPayloadRange(0), { min: 0, max: 0 });
});

async function* chunksOf(...list: StreamChunk[]): AsyncGenerator<StreamChunk> {
  for (const c of list) yield c;
}

Deno.test("sparse writer leaves zero blocks as holes and sets the length", async () => {
  await using tmp = new TempDir();
  const path = tmp.join("out");
  const fd = openFd(path, O.RDWR | O.CREAT, 0o644);
  try {
    const data = new Uint8Array(64 * 1024);
    data.fill(7, 0, 4096); // first block data
    data.fill(9, 40960 + 100, 40960 + 200); // one block in the middle
    const n = await writeSparse(
      fd,
      chunksOf({ data }, { zeros: 1 << 20 }, { data: new Uint8Array([1, 2, 3]) }),
    );
    assert.equal(n, 64 * 1024 + (1 << 20) + 3);
  } finally {
    closeFd(fd);
  }
  const bytes = Deno.readFileSync(path);
  assert.equal(bytes.length, 64 * 1024 + (1 << 20) + 3);
  assert.equal(bytes[0], 7);
  assert.equal(bytes[40960 + 150], 9);
  assert.equal(bytes[4096], 0);
  assert.deepEqual([...bytes.subarray(-3)], [1, 2, 3]);
  const st = Deno.statSync(path);
  assert.ok((st.blocks ?? 0) * 512 <= 4 * 4096, `allocated ${(st.blocks ?? 0) * 512}`);
});

Deno.test("sparse writer writes back as it goes: an import leaves no page cache behind", async () => {
  await using tmp = new TempDir();
  const path = tmp.join("out");
  const fd = openFd(path, O.RDWR | O.CREAT, 0o644);
  const MiB = 1 << 20;
  async function* chunks() {
    for (let i = 0; i < 64; i++) yield { data: new Uint8Array(MiB).fill(i + 1) };
  }
  try {
    assert.equal(await writeSparse(fd, chunks()), 64 * MiB);
  } finally {
    closeFd(fd);
  }
  const resident = residentBytes(path);
  assert.ok(resident <= 24 * MiB, `${resident / MiB} MiB of the import stayed in the page cache`);
  const bytes = Deno.readFileSync(path);
  assert.equal(bytes[0], 1);
  assert.equal(bytes[64 * MiB - 1], 64);
});

Deno.test("sparse writer stops as soon as the payload exceeds maxBytes", async () => {
  await using tmp = new TempDir();
  const fd = openFd(tmp.join("out"), O.RDWR | O.CREAT, 0o644);
  try {
    await assert.rejects(
      writeSparse(fd, chunksOf({ data: new Uint8Array(600) }, { data: new Uint8Array(600) }), {
        maxBytes: 1024,
      }),
      (e: Error) => e instanceof RangeError && /longer than its size header/.test(e.message),
    );
  } finally {
    closeFd(fd);
  }
});

Deno.test("channel splits chunks for exact reads and merges zero runs", async () => {
  const ch = new StreamChannel();
  await ch.sink.write(new Uint8Array([1, 2, 3, 4, 5]));
  await ch.sink.writeZeros(10);
  await ch.sink.writeZeros(6);
  ch.close();
  assert.deepEqual([...await ch.source.readExact(2)], [1, 2]);
  const rest: StreamChunk[] = [];
  for await (const c of ch.source.chunks()) {
    rest.push("data" in c ? { data: c.data.slice() } : c);
  }
  assert.deepEqual(rest, [{ data: new Uint8Array([3, 4, 5]) }, { zeros: 16 }]);
  assert.equal(ch.bytes, 21);
});

Deno.test("channel: an exporter failure reaches the reader, a reader failure the writer", async () => {
  const a = new StreamChannel();
  a.fail(new Error("export broke"));
  await assert.rejects(a.source.readExact(1), /export broke/);
  const b = new StreamChannel({ highWaterMark: 4 });
  b.cancel(new Error("import broke"));
  await assert.rejects(b.sink.write(new Uint8Array(8)), /import broke/);
});
