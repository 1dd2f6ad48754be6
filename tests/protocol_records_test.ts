import {
  capturedBytes,
  encodeRecords,
  MAX_SNAPLEN,
  measureRecords,
  packetsBytes,
  RECORD_HEADER_BYTES,
  RecordHeaderWriter,
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

Deno.test("records: RecordHeaderWriter writes exactly what writeRecordHeader does", () => {
  const U32 = 4294967295;
  const NS = 1_000_000_000;
  // Timestamps whose sec * 1e9 low word sits just below a carry: lo + nsec crosses 2^32.
  const nearCarry: number[] = [];
  for (let sec = 0, found = 0; found < 8; sec++) {
    const lo = Number((BigInt(sec) * 1_000_000_000n) & 0xffffffffn);
    if (lo > 2 ** 32 - NS) {
      nearCarry.push(sec);
      found++;
    }
  }
  const secs = [0, 1, 4, 5, 65535, 65536, 1_700_000_123, 2 ** 31, U32 - 1, U32, ...nearCarry];
  let seed = 12345;
  const rand = (n: number) => { // a fixed LCG, so a failure reproduces
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const samples: [number, number][] = [];
  for (const sec of secs) {
    for (const nsec of [0, 1, NS / 2, NS - 1]) samples.push([sec, nsec]);
    // nsec just below and at the carry for this sec
    const lo = Number((BigInt(sec) * 1_000_000_000n) & 0xffffffffn);
    for (const d of [-1, 0, 1]) {
      const nsec = 2 ** 32 - lo + d;
      if (nsec >= 0 && nsec < NS) samples.push([sec, nsec]);
    }
  }
  for (let i = 0; i < 2000; i++) samples.push([rand(U32) + rand(2), rand(NS)]);
  // Any u32 nsec (libpcap's field is one), not only < 1e9.
  for (const sec of [0, U32, nearCarry[0]]) samples.push([sec, U32], [sec, 2 ** 31]);
  // sec going back and forth, repeated, and an order where it changes every packet
  const order = [
    ...samples,
    ...samples.toReversed(),
    ...samples.map((_, i) => samples[(i * 7) % samples.length]),
  ];

  const got = new DataView(new ArrayBuffer(RECORD_HEADER_BYTES));
  const want = new DataView(new ArrayBuffer(RECORD_HEADER_BYTES));
  const w = new RecordHeaderWriter(got);
  for (const [sec, nsec] of order) {
    const caplen = rand(MAX_SNAPLEN), origlen = caplen + rand(100);
    w.write(0, sec, nsec, caplen, origlen);
    writeRecordHeader(want, 0, sec, nsec, caplen, origlen);
    const exact = BigInt(sec) * 1_000_000_000n + BigInt(nsec);
    assertEquals(recordTimestamp(got, 0), exact, `sec ${sec} nsec ${nsec}`);
    assertEquals(
      new Uint8Array(got.buffer),
      new Uint8Array(want.buffer),
      `sec ${sec} nsec ${nsec}`,
    );
  }
});
