/**
 * Binary framing shared by agent, api and clients (docs/protocol.md).
 *
 * Frame: u8 kind | u8 flags | u16 source | u32 payload length | payload, little-endian.
 * PACKETS payload: u32 count | records, record = u64 ts_ns | u32 caplen | u32 origlen | bytes.
 * Packets travel in batches so that per-frame cost is paid once per many packets.
 */

export const FRAME_HEADER_BYTES = 8;
export const RECORD_HEADER_BYTES = 16;
/** Large enough for a full batch of jumbo frames, small enough that a bad length cannot OOM us. */
export const MAX_PAYLOAD_BYTES = 8 * 1024 * 1024;
export const MAX_SNAPLEN = 262144;

export const FrameKind = {
  HELLO: 1,
  SOURCE: 2,
  PACKETS: 3,
  STATUS: 4,
  STATS: 5,
  PING: 6,
  END: 7,
} as const;
export type FrameKind = typeof FrameKind[keyof typeof FrameKind];
const KIND_NAMES = new Map<number, string>(Object.entries(FrameKind).map(([k, v]) => [v, k]));

export function frameKindName(kind: number): string {
  return KIND_NAMES.get(kind) ?? `unknown(${kind})`;
}

export interface Frame {
  kind: FrameKind;
  flags: number;
  source: number;
  payload: Uint8Array;
}

/** Thrown for any malformed input; the only error type decoding ever raises. */
export class DecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DecodeError";
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

function checkSource(source: number): void {
  if (!Number.isInteger(source) || source < 0 || source > 0xffff) {
    throw new RangeError(`frame source ${source} is outside 0..65535`);
  }
}

export function encodeFrame(kind: FrameKind, source: number, payload: Uint8Array): Uint8Array {
  checkSource(source);
  if (payload.byteLength > MAX_PAYLOAD_BYTES) {
    throw new RangeError(
      `frame payload of ${payload.byteLength} bytes exceeds ${MAX_PAYLOAD_BYTES}`,
    );
  }
  const out = new Uint8Array(FRAME_HEADER_BYTES + payload.byteLength);
  const view = new DataView(out.buffer);
  view.setUint8(0, kind);
  view.setUint8(1, 0);
  view.setUint16(2, source, true);
  view.setUint32(4, payload.byteLength, true);
  out.set(payload, FRAME_HEADER_BYTES);
  return out;
}

export function encodeJsonFrame(kind: FrameKind, source: number, value: unknown): Uint8Array {
  return encodeFrame(kind, source, encoder.encode(JSON.stringify(value)));
}

/** Wraps already-encoded packet records (as the capture engine produces them) in one frame. */
export function encodePacketsFrame(source: number, count: number, records: Uint8Array): Uint8Array {
  checkSource(source);
  const payloadLen = 4 + records.byteLength;
  if (payloadLen > MAX_PAYLOAD_BYTES) {
    throw new RangeError(`packet batch of ${payloadLen} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
  }
  const out = new Uint8Array(FRAME_HEADER_BYTES + payloadLen);
  const view = new DataView(out.buffer);
  view.setUint8(0, FrameKind.PACKETS);
  view.setUint16(2, source, true);
  view.setUint32(4, payloadLen, true);
  view.setUint32(8, count, true);
  out.set(records, 12);
  return out;
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
    view.setUint32(off + 8, p.data.byteLength, true);
    view.setUint32(off + 12, p.origlen ?? p.data.byteLength, true);
    out.set(p.data, off + RECORD_HEADER_BYTES);
    off += RECORD_HEADER_BYTES + p.data.byteLength;
  }
  return out;
}

export function decodeJson(frame: Frame): unknown {
  try {
    return JSON.parse(decoder.decode(frame.payload));
  } catch (e) {
    throw new DecodeError(
      `${frameKindName(frame.kind)} frame does not hold valid UTF-8 JSON: ${(e as Error).message}`,
    );
  }
}

export interface PacketView {
  tsNs: bigint;
  caplen: number;
  origlen: number;
  /** Offset of the packet bytes inside `records`. */
  offset: number;
}

/**
 * Validates a PACKETS payload and returns the record count and the records slice, checking
 * every record header so that consumers can then walk it without bounds checks.
 */
export function validatePackets(payload: Uint8Array): { count: number; records: Uint8Array } {
  if (payload.byteLength < 4) throw new DecodeError("PACKETS frame shorter than its count field");
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const count = view.getUint32(0, true);
  let off = 4;
  for (let i = 0; i < count; i++) {
    if (off + RECORD_HEADER_BYTES > payload.byteLength) {
      throw new DecodeError(`PACKETS frame truncated in the header of packet ${i + 1} of ${count}`);
    }
    const caplen = view.getUint32(off + 8, true);
    const origlen = view.getUint32(off + 12, true);
    if (caplen > MAX_SNAPLEN) throw new DecodeError(`packet ${i + 1} caplen ${caplen} too large`);
    if (origlen < caplen) {
      throw new DecodeError(`packet ${i + 1} origlen ${origlen} is below its caplen ${caplen}`);
    }
    off += RECORD_HEADER_BYTES + caplen;
    if (off > payload.byteLength) {
      throw new DecodeError(`PACKETS frame truncated in the data of packet ${i + 1} of ${count}`);
    }
  }
  if (off !== payload.byteLength) {
    throw new DecodeError(`PACKETS frame has ${payload.byteLength - off} trailing bytes`);
  }
  return { count, records: payload.subarray(4) };
}

/** Walks validated records; the callback gets the records buffer and offsets, no copies. */
export function forEachPacket(
  records: Uint8Array,
  cb: (p: PacketView, records: Uint8Array) => void,
): void {
  const view = new DataView(records.buffer, records.byteOffset, records.byteLength);
  let off = 0;
  while (off + RECORD_HEADER_BYTES <= records.byteLength) {
    const caplen = view.getUint32(off + 8, true);
    cb({
      tsNs: view.getBigUint64(off, true),
      caplen,
      origlen: view.getUint32(off + 12, true),
      offset: off + RECORD_HEADER_BYTES,
    }, records);
    off += RECORD_HEADER_BYTES + caplen;
  }
}

/**
 * Incremental decoder for a byte stream of frames (HTTP body). WebSocket peers get one frame per
 * message and use decodeSingleFrame instead.
 */
export class FrameDecoder {
  #buf = new Uint8Array(0);
  #start = 0;
  #end = 0;

  /** Appends a chunk and returns every complete frame it finished. */
  push(chunk: Uint8Array): Frame[] {
    this.#append(chunk);
    const frames: Frame[] = [];
    while (this.#end - this.#start >= FRAME_HEADER_BYTES) {
      const view = new DataView(this.#buf.buffer, this.#start, FRAME_HEADER_BYTES);
      const kind = view.getUint8(0);
      const len = view.getUint32(4, true);
      checkHeader(kind, view.getUint8(1), len);
      if (this.#end - this.#start < FRAME_HEADER_BYTES + len) break;
      const begin = this.#start + FRAME_HEADER_BYTES;
      frames.push({
        kind: kind as FrameKind,
        flags: view.getUint8(1),
        source: view.getUint16(2, true),
        // Copy so that frames stay valid after the buffer is compacted or reused.
        payload: this.#buf.slice(begin, begin + len),
      });
      this.#start = begin + len;
    }
    return frames;
  }

  /** Bytes of an incomplete frame still held; non-zero at end of stream means truncation. */
  get pending(): number {
    return this.#end - this.#start;
  }

  /** Call at end of stream: throws if it stopped inside a frame. */
  finish(): void {
    if (this.pending > 0) {
      throw new DecodeError(`stream ended inside a frame (${this.pending} bytes left over)`);
    }
  }

  #append(chunk: Uint8Array): void {
    const live = this.#end - this.#start;
    if (this.#buf.byteLength - this.#end < chunk.byteLength) {
      const need = live + chunk.byteLength;
      const next = need <= this.#buf.byteLength
        ? this.#buf
        : new Uint8Array(Math.max(need, this.#buf.byteLength * 2, 64 * 1024));
      next.set(this.#buf.subarray(this.#start, this.#end), 0);
      this.#buf = next;
      this.#start = 0;
      this.#end = live;
    }
    this.#buf.set(chunk, this.#end);
    this.#end += chunk.byteLength;
  }
}

function checkHeader(kind: number, flags: number, len: number): void {
  if (!KIND_NAMES.has(kind)) throw new DecodeError(`unknown frame kind ${kind}`);
  if (flags !== 0) throw new DecodeError(`frame flags ${flags} are not supported by protocol v1`);
  if (len > MAX_PAYLOAD_BYTES) {
    throw new DecodeError(`frame payload of ${len} bytes exceeds the ${MAX_PAYLOAD_BYTES} limit`);
  }
}

/** Decodes a message that must hold exactly one frame (one WebSocket binary message). */
export function decodeSingleFrame(message: Uint8Array): Frame {
  if (message.byteLength < FRAME_HEADER_BYTES) {
    throw new DecodeError(`message of ${message.byteLength} bytes is shorter than a frame header`);
  }
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  const kind = view.getUint8(0);
  const len = view.getUint32(4, true);
  checkHeader(kind, view.getUint8(1), len);
  if (FRAME_HEADER_BYTES + len !== message.byteLength) {
    throw new DecodeError(
      `frame announces ${len} payload bytes but the message carries ${
        message.byteLength - FRAME_HEADER_BYTES
      }`,
    );
  }
  return {
    kind: kind as FrameKind,
    flags: 0,
    source: view.getUint16(2, true),
    payload: message.subarray(FRAME_HEADER_BYTES),
  };
}
