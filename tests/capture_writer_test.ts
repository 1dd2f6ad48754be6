// The cli output leaf: the growing byte builder, all-or-nothing record encoding, link-type names.
import { assertEquals, assertThrows } from "./support/assert.ts";
import { ByteBuilder, encodeRecordsInto, linkTypeName } from "../cli/capture_writer.ts";
import { DecodeError, encodeRecords } from "../protocol/frame_codec.ts";
import { MemorySink } from "./support/capture_sinks.ts";

Deno.test("ByteBuilder: little-endian fields, growth past the first buffer, padding, patch", () => {
  const b = new ByteBuilder(4);
  b.u8(0xab);
  b.u16(0x0102);
  b.u32(0xdeadbeef);
  b.u64(0x0102030405060708n);
  b.pad4();
  b.bytes(new Uint8Array([9, 9, 9]));
  b.patchU32(4, 7);
  // the patch at 4 overwrites the u32's last three bytes and the u64's first one
  const expected = [0xab, 2, 1, 0xef, 7, 0, 0, 0, 7, 6, 5, 4, 3, 2, 1, 0, 9, 9, 9];
  assertEquals(Array.from(b.view()), expected);
  const sink = new MemorySink();
  b.drainTo(sink);
  assertEquals(b.pos, 0);
  b.drainTo(sink); // nothing pending: no empty write
  assertEquals(sink.length, 19);
});

Deno.test("encodeRecordsInto: visits every record; a malformed batch leaves the builder as it was", () => {
  const b = new ByteBuilder();
  b.u32(1);
  const recs = encodeRecords([{ tsNs: 1n, data: new Uint8Array(3) }, {
    tsNs: 2n,
    data: new Uint8Array(5),
  }]);
  const caplens: number[] = [];
  assertEquals(
    encodeRecordsInto(b, recs, (_v, _o, caplen) => (caplens.push(caplen), b.u8(caplen))),
    2,
  );
  assertEquals(caplens, [3, 5]);
  assertEquals(b.pos, 6);
  assertThrows(
    () => encodeRecordsInto(b, recs.subarray(0, recs.length - 1), (_v, _o, c) => b.u8(c)),
    DecodeError,
    "past the end",
  );
  assertEquals(b.pos, 6);
});

Deno.test("linkTypeName names the link types agents report and says unknown otherwise", () => {
  assertEquals([1, 113, 276, 101, 0, 9999].map(linkTypeName), [
    "ETHERNET",
    "LINUX_SLL",
    "LINUX_SLL2",
    "RAW",
    "NULL",
    "unknown",
  ]);
});

Deno.test("ByteBuilder.copyFrom: word loop for small copies, set for large, both exact", () => {
  // src is a view at an odd offset: the word loop must not assume aligned data
  const backing = Uint8Array.from({ length: 701 }, (_, i) => (i * 7 + 3) & 0xff);
  const src = backing.subarray(1);
  const sv = new DataView(src.buffer, src.byteOffset, src.byteLength);
  const b = new ByteBuilder(8);
  const pieces: Array<[number, number]> = [
    [0, 0],
    [5, 6],
    [1, 65],
    [10, 75],
    [3, 131],
    [2, 130],
    [7, 136],
    [17, 600],
  ];
  const expected: number[] = [];
  for (const [from, to] of pieces) {
    b.copyFrom(src, sv, from, to);
    expected.push(...src.subarray(from, to));
  }
  assertEquals(b.pos, expected.length);
  assertEquals(Array.from(b.view()), expected);
});
