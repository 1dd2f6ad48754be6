/**
 * Packet records, the body of a PACKETS frame (docs/protocol.md "Packet batches"). This module
 * is the only place that knows their layout:
 *
 * `u64 ts_ns | u32 caplen | u32 origlen | caplen bytes`, little-endian, back to back.
 *
 * A PACKETS payload is a `u32 count` followed by `count` records. Everything that builds,
 * walks, measures or cuts records goes through the functions here.
 *
 * @example Build a batch, walk it, cut it
 * ```ts
 * import { encodeRecords, measureRecords, walkRecords } from "./records.ts";
 *
 * const records = encodeRecords([
 *   { tsNs: 1n, data: new Uint8Array(60) },
 *   { tsNs: 2n, data: new Uint8Array(1500), origlen: 9000 },
 * ]);
 * const n = walkRecords(records, (_view, _off, caplen, origlen) => console.log(caplen, origlen));
 * const first = measureRecords(records, 1); // { end: 76, bytes: 60 }
 * console.log(n, first);
 * ```
 *
 * @module
 */
import { DecodeError } from "./decode_error.ts";

/** Size of a record header: ts_ns (8), caplen (4), origlen (4). */
export const RECORD_HEADER_BYTES = 16;
/** Largest caplen any peer accepts (libpcap's MAXIMUM_SNAPLEN). */
export const MAX_SNAPLEN = 262144;
/** Largest record: a header and MAX_SNAPLEN bytes. */
export const MAX_RECORD_BYTES: number = RECORD_HEADER_BYTES + MAX_SNAPLEN;
/** Size of the `u32 count` that starts a PACKETS payload. */
export const PACKETS_COUNT_BYTES = 4;

const CAPLEN_AT = 8;
const ORIGLEN_AT = 12;

/** One packet inside a records buffer, without copying it. */
export interface PacketView {
  /** capture time, ns since the Unix epoch */
  tsNs: bigint;
  /** bytes captured */
  caplen: number;
  /** length on the wire */
  origlen: number;
  /** Offset of the packet bytes inside `records`. */
  offset: number;
}

/** One record: `off` is where its header starts inside the walked buffer. */
export type RecordVisitor = (view: DataView, off: number, caplen: number, origlen: number) => void;

/**
 * The error for record `n` (0-based) at byte `off`. Built only when thrown: formatting the place
 * for every record cost ~15 ns per packet and walk (a closure over the loop's counters would slow
 * the loop as much), and the client walks each batch three times.
 */
function badRecord(n: number, off: number, what: string): DecodeError {
  return new DecodeError(`packet ${n + 1} (byte ${off}): ${what}`);
}

/**
 * Walks packet records, checking each header against the buffer before `visit` sees it, so that
 * visitors need no bounds checks. Returns the count; DecodeError on the first malformed record.
 */
export function walkRecords(records: Uint8Array, visit?: RecordVisitor): number {
  const view = new DataView(records.buffer, records.byteOffset, records.byteLength);
  const end = records.byteLength;
  let off = 0;
  let n = 0;
  while (off < end) {
    if (off + RECORD_HEADER_BYTES > end) throw badRecord(n, off, "truncated packet record header");
    const caplen = view.getUint32(off + CAPLEN_AT, true);
    const origlen = view.getUint32(off + ORIGLEN_AT, true);
    if (caplen > MAX_SNAPLEN) throw badRecord(n, off, `caplen ${caplen} too large`);
    if (origlen < caplen) {
      throw badRecord(n, off, `origlen ${origlen} is below its caplen ${caplen}`);
    }
    if (off + RECORD_HEADER_BYTES + caplen > end) {
      throw badRecord(n, off, `claims ${caplen} bytes past the end of the batch`);
    }
    visit?.(view, off, caplen, origlen);
    off += RECORD_HEADER_BYTES + caplen;
    n++;
  }
  return n;
}

/** The ts_ns of the record whose header starts at `off` (walked records only). */
export function recordTimestamp(view: DataView, off: number): bigint {
  return view.getBigUint64(off, true);
}

/**
 * The ts_ns of a walked record as two u32 halves (low, high), for hot paths that avoid a BigInt
 * per packet.
 */
export function recordTimestampLow(view: DataView, off: number): number {
  return view.getUint32(off, true);
}

/** The high u32 half of a walked record's ts_ns; see recordTimestampLow. */
export function recordTimestampHigh(view: DataView, off: number): number {
  return view.getUint32(off + 4, true);
}

/** The origlen (length on the wire) of a walked record. */
export function recordOriglen(view: DataView, off: number): number {
  return view.getUint32(off + ORIGLEN_AT, true);
}

/** The most records a buffer of `bytes` can hold (each has at least its header). */
export function maxRecordCount(bytes: number): number {
  return Math.floor(bytes / RECORD_HEADER_BYTES);
}

/** Where the packet bytes of the record whose header starts at `off` begin. */
export function recordDataOffset(off: number): number {
  return off + RECORD_HEADER_BYTES;
}

/** Walks validated records; the callback gets the records buffer and offsets, no copies. */
export function forEachPacket(
  records: Uint8Array,
  cb: (p: PacketView, records: Uint8Array) => void,
): void {
  walkRecords(records, (view, off, caplen, origlen) =>
    cb({
      tsNs: recordTimestamp(view, off),
      caplen,
      origlen,
      offset: recordDataOffset(off),
    }, records));
}

/** Encodes packets one by one into records; used by tests and tools, not on the hot path. */
export function encodeRecords(
  packets: { tsNs: bigint; origlen?: number; data: Uint8Array }[],
): Uint8Array {
  const size = packets.reduce((n, p) => n + RECORD_HEADER_BYTES + p.data.byteLength, 0);
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let off = 0;
  for (const p of packets) {
    view.setBigUint64(off, p.tsNs, true);
    view.setUint32(off + CAPLEN_AT, p.data.byteLength, true);
    view.setUint32(off + ORIGLEN_AT, p.origlen ?? p.data.byteLength, true);
    out.set(p.data, off + RECORD_HEADER_BYTES);
    off += RECORD_HEADER_BYTES + p.data.byteLength;
  }
  return out;
}

/**
 * Writes a record header at `at` from a libpcap timestamp (seconds and nanoseconds), as the
 * capture engine does for every packet: ts_ns = sec * 1e9 + nsec, split into two u32 words
 * without BigInt (exact in doubles) because this runs once per captured packet.
 */
export function writeRecordHeader(
  view: DataView,
  at: number,
  sec: number,
  nsec: number,
  caplen: number,
  origlen: number,
): void {
  const x = (sec & 0xffff) * 1e9 + nsec;
  const y = (sec >>> 16) * 1e9;
  let lo = (y % 65536) * 65536 + (x % 4294967296);
  const hi = Math.floor(y / 65536) + Math.floor(x / 4294967296) + Math.floor(lo / 4294967296);
  lo = lo % 4294967296;
  view.setUint32(at, lo, true);
  view.setUint32(at + 4, hi, true);
  view.setUint32(at + CAPLEN_AT, caplen, true);
  view.setUint32(at + ORIGLEN_AT, origlen, true);
}

/**
 * writeRecordHeader for a stream of packets, whose `sec` rarely changes: the split of sec * 1e9
 * into two u32 words is kept per distinct `sec`, so a packet costs one add and one compare for
 * the carry instead of writeRecordHeader's float `%` (a native call each) and Math.floor.
 * Writes exactly what writeRecordHeader writes for u32 `sec` and `nsec`.
 */
export class RecordHeaderWriter {
  readonly #view: DataView;
  /** sec; sec * 1e9's low u32 word + 0.5; its high word (see write()). */
  readonly #split = new Float64Array([NaN, 0, 0]);

  /** Writes into `view` (a records buffer). */
  constructor(view: DataView) {
    this.#view = view;
  }

  /** Like writeRecordHeader(view, at, …); sec and nsec are u32 (libpcap's or the kernel's). */
  write(at: number, sec: number, nsec: number, caplen: number, origlen: number): void {
    const split = this.#split;
    if (sec !== split[0]) splitSeconds(split, sec);
    // lo + 0.5 + nsec < 2^33: setUint32 stores its integer part mod 2^32 (ToUint32), and the
    // carry is at most 1 (sec * 1e9 + nsec < 2^64). The 0.5 (never a small integer) and no
    // branch on the carry keep V8's type feedback the same in every second; otherwise a later
    // second could deoptimise the reader loop this is inlined into.
    const lo = split[1] + nsec;
    const view = this.#view;
    view.setUint32(at, lo, true);
    view.setUint32(at + 4, split[2] + (lo > 4294967296 ? 1 : 0), true);
    view.setUint32(at + CAPLEN_AT, caplen, true);
    view.setUint32(at + ORIGLEN_AT, origlen, true);
  }
}

const splitScratch = new DataView(new ArrayBuffer(RECORD_HEADER_BYTES));

/** Once per second, out of line: RecordHeaderWriter.write() stays small enough to be inlined. */
function splitSeconds(split: Float64Array, sec: number): void {
  writeRecordHeader(splitScratch, 0, sec, 0, 0, 0);
  split[0] = sec;
  split[1] = splitScratch.getUint32(0, true) + 0.5;
  split[2] = splitScratch.getUint32(4, true);
}

// Warmed at load: V8 keeps type feedback for a function only after its first few calls, so
// splitSeconds' call site, reached by the first packet only, would have none, and the first
// second boundary after the reader loop (which inlines write()) was optimised would deoptimise
// it: a recompile of the whole loop in the capture's first busy second (seen with --log-deopt).
{
  const warm = new RecordHeaderWriter(new DataView(new ArrayBuffer(RECORD_HEADER_BYTES)));
  for (let i = 0; i < 64; i++) warm.write(0, 2 ** 31 + (i >> 4), 999_999_000 + i, i, i);
}

/** Size of the record that carries `caplen` packet bytes. */
export function recordSize(caplen: number): number {
  return RECORD_HEADER_BYTES + caplen;
}

/** Captured bytes (the caplen sum) of `count` records that fill `recordsBytes` bytes. */
export function capturedBytes(recordsBytes: number, count: number): number {
  return recordsBytes - RECORD_HEADER_BYTES * count;
}

/**
 * Byte length of the first `n` records (or all, if fewer) and their caplen sum. The records
 * must have been walked (validated) before.
 */
export function measureRecords(records: Uint8Array, n: number): { end: number; bytes: number } {
  const view = new DataView(records.buffer, records.byteOffset, records.byteLength);
  let off = 0;
  let bytes = 0;
  for (let i = 0; i < n && off + RECORD_HEADER_BYTES <= records.byteLength; i++) {
    const caplen = view.getUint32(off + CAPLEN_AT, true);
    bytes += caplen;
    off += RECORD_HEADER_BYTES + caplen;
  }
  return { end: off, bytes };
}

/** The count field of a PACKETS payload (at least PACKETS_COUNT_BYTES long). */
export function packetsCount(payload: Uint8Array): number {
  return new DataView(payload.buffer, payload.byteOffset, PACKETS_COUNT_BYTES).getUint32(0, true);
}

/**
 * Validates a PACKETS payload and returns the record count and the records slice, checking
 * every record header so that consumers can then walk it without bounds checks.
 */
export function validatePackets(payload: Uint8Array): { count: number; records: Uint8Array } {
  if (payload.byteLength < PACKETS_COUNT_BYTES) {
    throw new DecodeError("PACKETS frame shorter than its count field");
  }
  const count = packetsCount(payload);
  const records = payload.subarray(PACKETS_COUNT_BYTES);
  const found = walkRecords(records);
  if (found !== count) {
    const what = found < count ? "truncated" : "has trailing records";
    throw new DecodeError(
      `PACKETS frame ${what}: it announces ${count} packets but holds ${found}`,
    );
  }
  return { count, records };
}

/**
 * A copy of the first `keep` packets of a validated PACKETS payload (count + records), for
 * packet limits.
 */
export function truncatePackets(payload: Uint8Array, keep: number): Uint8Array {
  const { end } = measureRecords(payload.subarray(PACKETS_COUNT_BYTES), keep);
  const out = payload.slice(0, PACKETS_COUNT_BYTES + end);
  new DataView(out.buffer).setUint32(0, keep, true);
  return out;
}

/** Captured bytes in a validated PACKETS payload of `count` packets. */
export function packetsBytes(payload: Uint8Array, count: number): number {
  return capturedBytes(payload.byteLength - PACKETS_COUNT_BYTES, count);
}
