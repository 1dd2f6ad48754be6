/**
 * Binary framing shared by agent, api and clients (docs/protocol.md "Frames").
 *
 * Frame: `u8 kind | u8 flags | u16 source | u32 payload length | payload`, little-endian.
 * A PACKETS payload is a batch of packet records (see records.ts), so that the per-frame cost
 * is paid once per many packets. Streams (HTTP bodies) are cut into frames by FrameAssembler or
 * FrameDecoder; a WebSocket message holds exactly one frame (decodeSingleFrame).
 *
 * @example Encode a frame and decode it from a stream cut at any byte
 * ```ts
 * import { encodeJsonFrame, FrameDecoder, FrameKind } from "./frame_codec.ts";
 *
 * const bytes = encodeJsonFrame(FrameKind.STATUS, 3, { type: "CAPTURE_STOPPED" });
 * const decoder = new FrameDecoder();
 * const frames = [...decoder.push(bytes.subarray(0, 5)), ...decoder.push(bytes.subarray(5))];
 * decoder.finish(); // throws DecodeError if the stream stopped inside a frame
 * console.log(frames[0].source); // 3
 * ```
 *
 * @module
 */
import { DecodeError } from "./decode_error.ts";
import { PACKETS_COUNT_BYTES } from "./records.ts";

export { DecodeError } from "./decode_error.ts";
// Kept for importers that predate records.ts; new code imports records.ts.
export {
  encodeRecords,
  forEachPacket,
  MAX_SNAPLEN,
  type PacketView,
  RECORD_HEADER_BYTES,
  type RecordVisitor,
  validatePackets,
  walkRecords,
} from "./records.ts";

/** Size of a frame header. */
export const FRAME_HEADER_BYTES = 8;
/** Large enough for a full batch of jumbo frames, small enough that a bad length cannot OOM us. */
export const MAX_PAYLOAD_BYTES = 8 * 1024 * 1024;

/**
 * Bound on the payload of every frame but PACKETS where a receiver asks for it (the api reading
 * agents): HELLO, SOURCE, STATUS and STATS are small JSON, so a larger one is refused from its
 * header, before its payload is buffered.
 */
export const MAX_CONTROL_PAYLOAD_BYTES = 64 * 1024;

/** Frame kinds of protocol v1 (docs/protocol.md). */
export const FrameKind = {
  HELLO: 1,
  SOURCE: 2,
  PACKETS: 3,
  STATUS: 4,
  STATS: 5,
  PING: 6,
  END: 7,
} as const;
/** One of FrameKind's values. */
export type FrameKind = typeof FrameKind[keyof typeof FrameKind];
const KIND_NAMES = new Map<number, string>(Object.entries(FrameKind).map(([k, v]) => [v, k]));

/** `PACKETS` for 3; `unknown(n)` for a kind v1 does not know. */
export function frameKindName(kind: number): string {
  return KIND_NAMES.get(kind) ?? `unknown(${kind})`;
}

/** A decoded frame. */
export interface Frame {
  /** what the payload is */
  kind: FrameKind;
  /** 0 in v1 */
  flags: number;
  /** which source the frame is about */
  source: number;
  /** the payload bytes */
  payload: Uint8Array;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

function checkSource(source: number): void {
  if (!Number.isInteger(source) || source < 0 || source > 0xffff) {
    throw new RangeError(`frame source ${source} is outside 0..65535`);
  }
}

/** Encodes one frame; RangeError for a bad source or an oversized payload. */
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

/** Encodes one frame with `value` as its JSON payload. */
export function encodeJsonFrame(kind: FrameKind, source: number, value: unknown): Uint8Array {
  return encodeFrame(kind, source, encoder.encode(JSON.stringify(value)));
}

/**
 * Wraps already-encoded packet records (as the capture engine produces them) in one frame.
 * `room` reserves bytes before and after the frame in its buffer (the agent writes its HTTP chunk
 * framing there, so that the frame goes to the socket without another copy); the result is then
 * a view at `room.before` into that larger buffer: `room.buffer` if it is large enough (memory
 * the caller reuses; every byte of the frame is written), else a new one.
 */
export function encodePacketsFrame(
  source: number,
  count: number,
  records: Uint8Array,
  room?: { before: number; after: number; buffer?: ArrayBuffer },
): Uint8Array {
  checkSource(source);
  const payloadLen = packetsPayloadLength(records);
  const before = room?.before ?? 0;
  const size = FRAME_HEADER_BYTES + payloadLen;
  const total = before + size + (room?.after ?? 0);
  const reused = room?.buffer && room.buffer.byteLength >= total ? room.buffer : undefined;
  const buf = reused ? new Uint8Array(reused) : new Uint8Array(total);
  writePacketsHeader(new DataView(buf.buffer, before), source, count, payloadLen);
  buf.set(records, before + FRAME_HEADER_BYTES + PACKETS_COUNT_BYTES);
  return room ? buf.subarray(before, before + size) : buf;
}

/**
 * The PACKETS frame around `records` without copying them: its header is written into the
 * FRAME_HEADER_BYTES + PACKETS_COUNT_BYTES bytes right before `records` in their buffer, which
 * must be the caller's to overwrite (the capture engine's batch room). Returns the frame's view.
 */
export function packetsFrameInPlace(
  source: number,
  count: number,
  records: Uint8Array,
): Uint8Array {
  checkSource(source);
  const head = FRAME_HEADER_BYTES + PACKETS_COUNT_BYTES;
  if (records.byteOffset < head) {
    throw new RangeError(
      `records at offset ${records.byteOffset} leave no room for a frame header`,
    );
  }
  const payloadLen = packetsPayloadLength(records);
  const at = records.byteOffset - head;
  writePacketsHeader(new DataView(records.buffer, at), source, count, payloadLen);
  return new Uint8Array(records.buffer, at, head + records.byteLength);
}

function packetsPayloadLength(records: Uint8Array): number {
  const payloadLen = PACKETS_COUNT_BYTES + records.byteLength;
  if (payloadLen > MAX_PAYLOAD_BYTES) {
    throw new RangeError(`packet batch of ${payloadLen} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
  }
  return payloadLen;
}

function writePacketsHeader(view: DataView, source: number, count: number, payloadLen: number) {
  view.setUint8(0, FrameKind.PACKETS);
  view.setUint8(1, 0);
  view.setUint16(2, source, true);
  view.setUint32(4, payloadLen, true);
  view.setUint32(FRAME_HEADER_BYTES, count, true);
}

/** The JSON payload of a frame; DecodeError when it is not UTF-8 JSON. */
export function decodeJson(frame: Frame): unknown {
  try {
    return JSON.parse(decoder.decode(frame.payload));
  } catch (e) {
    throw new DecodeError(
      `${frameKindName(frame.kind)} frame does not hold valid UTF-8 JSON: ${(e as Error).message}`,
    );
  }
}

/**
 * Incremental decoder for a byte stream of frames (HTTP body). WebSocket peers get one frame per
 * message and use decodeSingleFrame instead.
 */
export class FrameDecoder {
  readonly #assembler = new FrameAssembler();

  /** Appends a chunk and returns every complete frame it finished (each owns its bytes). */
  push(chunk: Uint8Array): Frame[] {
    return [...this.#assembler.frames(chunk)];
  }

  /** Bytes of an incomplete frame still held; non-zero at end of stream means truncation. */
  get pending(): number {
    return this.#assembler.pending;
  }

  /** Call at end of stream: throws if it stopped inside a frame. */
  finish(): void {
    if (this.pending > 0) {
      throw new DecodeError(`stream ended inside a frame (${this.pending} bytes left over)`);
    }
  }
}

/** A frame from FrameAssembler: the payload is a view into `bytes`, the whole encoded frame. */
export interface AssembledFrame extends Frame {
  /** the complete frame, header included (payload = bytes.subarray(8)) */
  bytes: Uint8Array;
  /**
   * true when the frame sits in the assembler's reused scratch space (the caller asked to
   * discard it): valid only until the next frame is taken from the assembler.
   */
  borrowed: boolean;
}

/**
 * Incremental decoder like FrameDecoder, with one copy per frame instead of two: each frame is
 * assembled straight into a buffer of exactly its size (header included), which the caller may
 * forward as is (see enclosingFrame/setFrameSource). Frames that `scratch(kind, source)` says
 * will be discarded are assembled into one reused buffer instead, so dropping costs no garbage.
 * `frames(chunk)` is lazy: take each frame before the next (a borrowed one is overwritten).
 */
export class FrameAssembler {
  readonly #scratch?: (kind: number, source: number) => boolean;
  readonly #maxControlPayload: number;
  readonly #allocate: (bytes: number) => Uint8Array;
  readonly #head = new Uint8Array(FRAME_HEADER_BYTES);
  #headFill = 0;
  #cur: Uint8Array | null = null;
  #curFill = 0;
  #curBorrowed = false;
  #scratchBuf = new Uint8Array(0);

  /**
   * An assembler; `scratch` says which frames (by kind and source) the caller will discard;
   * `maxControlPayload` bounds every frame but PACKETS (default: MAX_PAYLOAD_BYTES, as PACKETS);
   * `allocate` gives an owned frame its memory (a view that ends where its buffer ends, e.g. with
   * room for another protocol's header before it; default: a buffer of exactly its size).
   */
  constructor(
    scratch?: (kind: number, source: number) => boolean,
    opts: { maxControlPayload?: number; allocate?: (bytes: number) => Uint8Array } = {},
  ) {
    this.#scratch = scratch;
    this.#maxControlPayload = opts.maxControlPayload ?? MAX_PAYLOAD_BYTES;
    this.#allocate = opts.allocate ?? ((n) => new Uint8Array(n));
  }

  /** Appends a chunk; yields every frame it completes, one at a time. Throws DecodeError. */
  *frames(chunk: Uint8Array): Generator<AssembledFrame> {
    let off = 0;
    const n = chunk.byteLength;
    while (off < n) {
      if (this.#cur === null) {
        const k = Math.min(FRAME_HEADER_BYTES - this.#headFill, n - off);
        this.#head.set(chunk.subarray(off, off + k), this.#headFill);
        this.#headFill += k;
        off += k;
        if (this.#headFill < FRAME_HEADER_BYTES) break;
        this.#begin();
      }
      const cur = this.#cur!;
      const k = Math.min(cur.byteLength - this.#curFill, n - off);
      if (k > 0) {
        cur.set(chunk.subarray(off, off + k), this.#curFill);
        this.#curFill += k;
        off += k;
      }
      if (this.#curFill < cur.byteLength) break;
      this.#cur = null;
      this.#headFill = 0;
      yield {
        kind: cur[0] as FrameKind,
        flags: 0,
        source: cur[2] | (cur[3] << 8),
        payload: cur.subarray(FRAME_HEADER_BYTES),
        bytes: cur,
        borrowed: this.#curBorrowed,
      };
    }
  }

  /** Bytes of an incomplete frame held; non-zero at end of stream means truncation. */
  get pending(): number {
    return this.#cur === null ? this.#headFill : this.#curFill;
  }

  #begin(): void {
    const h = this.#head;
    const view = new DataView(h.buffer);
    const kind = h[0], len = view.getUint32(4, true);
    checkHeader(kind, h[1], len);
    if (kind !== FrameKind.PACKETS && len > this.#maxControlPayload) {
      throw new DecodeError(
        `${
          frameKindName(kind)
        } frame of ${len} bytes exceeds the ${this.#maxControlPayload}-byte ` +
          "limit for control frames",
      );
    }
    const total = FRAME_HEADER_BYTES + len;
    this.#curBorrowed = this.#scratch?.(kind, view.getUint16(2, true)) ?? false;
    if (this.#curBorrowed) {
      // Always strictly larger than the frame it holds, so enclosingFrame never takes it
      // for an exactly-sized (owned) frame.
      if (this.#scratchBuf.byteLength <= total) this.#scratchBuf = new Uint8Array(total + 4096);
      this.#cur = this.#scratchBuf.subarray(0, total);
    } else {
      this.#cur = this.#allocate(total);
      frameStarts.set(this.#cur.buffer, this.#cur.byteOffset);
    }
    this.#cur.set(h);
    this.#curFill = FRAME_HEADER_BYTES;
  }
}

/** where FrameAssembler put the owned frame of each buffer it allocated */
const frameStarts = new WeakMap<ArrayBufferLike, number>();

/**
 * The whole encoded frame around `payload` when `payload` is the whole payload of a `kind` frame
 * that FrameAssembler assembled as owned (it ends where its buffer ends; it may have room before
 * it), or that fills its buffer exactly; else null: such a frame can be forwarded without
 * re-encoding. A cut batch ends earlier; a borrowed frame's scratch buffer is always longer than
 * the frame; a view inside a frame (its tail) does not start where the frame starts.
 */
export function enclosingFrame(payload: Uint8Array, kind: FrameKind): Uint8Array | null {
  const start = payload.byteOffset - FRAME_HEADER_BYTES;
  const known = frameStarts.get(payload.buffer) ?? 0;
  if (start !== known || payload.byteOffset + payload.byteLength !== payload.buffer.byteLength) {
    return null;
  }
  const frame = new Uint8Array(
    payload.buffer as ArrayBuffer,
    start,
    FRAME_HEADER_BYTES + payload.byteLength,
  );
  const len = new DataView(frame.buffer, start).getUint32(4, true);
  return frame[0] === kind && frame[1] === 0 && len === payload.byteLength ? frame : null;
}

/** Rewrites the source field of an encoded frame in place (forwarding under a new number). */
export function setFrameSource(frame: Uint8Array, source: number): void {
  checkSource(source);
  frame[2] = source & 0xff;
  frame[3] = source >> 8;
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
