import {
  capturedBytes,
  encodeRecords,
  MAX_SNAPLEN,
  measureRecords,
  packetsBytes,
  RECORD_HEADER_BYTES,
  recordTimestamp,
  truncatePackets,
  validatePackets,
  walkRecords,
  writeRecordHeader,
} from "../protocol/records.ts";
import { DecodeError } from "../protocol/decode_error.ts";
import { assertEquals, assertThrows } from "./support/assert.ts";

const pkts = [
  { tsNs: 5n, data: new Uint8Array(60).fill(1) },
  { tsNs: 6n, data: new Uint8Array(1500).fill(2), origlen: 9000 },
  { tsNs: 7n, data: new Uint8Array(0) },
];

function payloadOf(records: Uint8Array, count: number): Uint8Array {
  const p = new Uint8Array(4 + records.byteLength);
  new DataView(p.buffer).setUint32(0, count, true);
  p.set(records, 4);
  return p;
}

Deno.test("records: walk, measure, count and truncate agree", () => {
  const records = encodeRecords(pkts);
  const seen: number[] = [];
  assertEquals(walkRecords(records, (_v, _o, caplen) => seen.push(caplen)), 3);
  assertEquals(seen, [60, 1500, 0]);
  assertEquals(measureRecords(records, 2), { end: 2 * RECORD_HEADER_BYTES + 1560, bytes: 1560 });
  assertEquals(measureRecords(records, 10).bytes, 1560);
  assertEquals(capturedBytes(records.byteLength, 3), 1560);
  const payload = payloadOf(records, 3);
  assertEquals(packetsBytes(payload, 3), 1560);
  const cut = truncatePackets(payload, 1);
  assertEquals(validatePackets(cut).count, 1);
  assertEquals(packetsBytes(cut, 1), 60);
});

Deno.test("records: a malformed record is a DecodeError naming the packet", () => {
  const records = encodeRecords(pkts);
  assertThrows(() => walkRecords(records.subarray(0, 80)), DecodeError, "packet 2");
  const big = encodeRecords([{ tsNs: 1n, data: new Uint8Array(4) }]);
  new DataView(big.buffer).setUint32(8, MAX_SNAPLEN + 1, true);
  assertThrows(() => walkRecords(big), DecodeError, "too large");
  assertThrows(() => validatePackets(payloadOf(records, 4)), DecodeError, "announces 4");
});

Deno.test("records: writeRecordHeader stores sec*1e9+nsec exactly", () => {
  const buf = new Uint8Array(RECORD_HEADER_BYTES);
  const view = new DataView(buf.buffer);
  writeRecordHeader(view, 0, 1_700_000_123, 999_999_999, 10, 20);
  assertEquals(recordTimestamp(view, 0), 1_700_000_123n * 1_000_000_000n + 999_999_999n);
  assertEquals(view.getUint32(8, true), 10);
  assertEquals(view.getUint32(12, true), 20);
});
