// The reorder window's batch index (cli/record_index.ts): exact, right after reuse of its
// scratch, within a limit, beyond the scratch's size, and refusing a malformed batch.
import { assertEquals, assertThrows } from "./support/assert.ts";
import { RecordIndexer } from "../cli/record_index.ts";
import { encodeRecords, RECORD_HEADER_BYTES } from "../protocol/records.ts";
import { DecodeError } from "../protocol/decode_error.ts";

const BASE = 1_700_000_000_000_000_000n;

function batch(count: number, size: number, t0: bigint) {
  return encodeRecords(
    Array.from({ length: count }, (_, i) => ({
      tsNs: t0 + BigInt(i) * 4_294_967_297n, // both halves move
      data: new Uint8Array(size).fill(i & 0xff),
    })),
  );
}

function expected(count: number, size: number, t0: bigint) {
  const ts = Array.from({ length: count }, (_, i) => t0 + BigInt(i) * 4_294_967_297n);
  return {
    start: [...Array.from({ length: count + 1 }, (_, i) => i * (RECORD_HEADER_BYTES + size))],
    hi: ts.map((t) => Number(t >> 32n)),
    lo: ts.map((t) => Number(t & 0xffffffffn)),
    caplen: ts.map(() => size),
  };
}

const plain = (
  x: { start: Uint32Array; hi: Uint32Array; lo: Uint32Array; caplen: Uint32Array },
) => ({
  start: [...x.start],
  hi: [...x.hi],
  lo: [...x.lo],
  caplen: [...x.caplen],
});

Deno.test("RecordIndexer: exact arrays per batch, own memory, correct after the scratch is reused", () => {
  const ix = new RecordIndexer();
  const a = ix.index(batch(50, 1500, BASE));
  assertEquals(a.hi.length, 50);
  assertEquals(a.hi.buffer.byteLength, 50 * 4, "no bound-sized array kept");
  assertEquals(plain(a), expected(50, 1500, BASE));
  const b = ix.index(batch(7, 64, BASE + 99n));
  assertEquals(plain(b), expected(7, 64, BASE + 99n));
  assertEquals(plain(a), expected(50, 1500, BASE), "the first batch is not overwritten");
});

Deno.test("RecordIndexer: a limit cuts the index and its end; a batch beyond the scratch is whole", () => {
  const ix = new RecordIndexer();
  const cut = ix.index(batch(10, 100, BASE), 4);
  assertEquals(cut.hi.length, 4);
  assertEquals(cut.start[4], 4 * (RECORD_HEADER_BYTES + 100), "ends where record 4 starts");
  const many = 70_000; // above the 65 536 records of the scratch
  const big = ix.index(batch(many, 0, BASE));
  assertEquals(big.hi.length, many);
  assertEquals(big.start[many], many * RECORD_HEADER_BYTES);
  assertEquals(big.lo[many - 1], Number((BASE + BigInt(many - 1) * 4_294_967_297n) & 0xffffffffn));
});

Deno.test("RecordIndexer: a malformed batch throws DecodeError, and the next batch is indexed right", () => {
  const ix = new RecordIndexer();
  const bad = batch(3, 100, BASE).subarray(0, 2 * (RECORD_HEADER_BYTES + 100) + 5);
  assertThrows(() => ix.index(bad), DecodeError);
  assertEquals(plain(ix.index(batch(3, 100, BASE))), expected(3, 100, BASE));
});
