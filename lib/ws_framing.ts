/**
 * RFC 6455 framing (pure): a streaming frame decoder that enforces a message-size bound at the
 * frame header, and the frame encoder. Shared by the client (cli/tls_websocket.ts) and the api's
 * server side (server/ws_connection.ts), which differ only in who masks.
 *
 * The bound is checked before any payload is held: a header announcing more than the limit, or a
 * fragment that would take the message so far past it, is refused (1009) at once, so an
 * oversized message is never buffered. Fragments are gathered into one buffer (not one object
 * each), and a message in more than MAX_FRAGMENTS frames is refused (1008), so neither empty nor
 * tiny fragments can make a message cost more than its bytes. What is held at any time is at
 * most one message (≤ the limit) and one incomplete frame header (≤ 14 bytes).
 *
 * @module
 */

export const OP_CONTINUATION = 0x0;
export const OP_TEXT = 0x1;
export const OP_BINARY = 0x2;
export const OP_CLOSE = 0x8;
export const OP_PING = 0x9;
export const OP_PONG = 0xa;

/** The WebSocket API's readyState values, for both sides' connections. */
export const CONNECTING = 0, OPEN = 1, CLOSING = 2, CLOSED = 3;

/** Close codes used here (RFC 6455 §7.4.1). */
export const CLOSE_PROTOCOL_ERROR = 1002;
export const CLOSE_INVALID_DATA = 1007;
export const CLOSE_POLICY = 1008;
export const CLOSE_TOO_BIG = 1009;

/** The most frames one data message may come in (ours never fragment; browsers rarely do). */
export const MAX_FRAGMENTS = 1024;

/** The longest frame header: 2 bytes, 8 of extended length, 4 of mask. */
const MAX_HEADER_BYTES = 14;
/** Opcodes defined by RFC 6455. */
const KNOWN_OPCODES = new Set([OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG]);

/** A violation of the framing, with the close code it calls for. */
export class FramingError extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

/** A complete data message (text or binary) or control frame. */
export interface WsFrame {
  opcode: number;
  payload: Uint8Array;
}

/** Where a decoder takes the buffers of large data frames from (lib/frame_pool.ts's FramePool). */
export interface PayloadPool {
  readonly bufferBytes: number;
  take(bytes: number): ArrayBuffer | undefined;
}

export interface DecoderOptions {
  /**
   * large unfragmented data messages (half its buffer size up to its size) are decoded into its
   * buffers, so their payloads are views of a pooled buffer; the rest get buffers of their own
   */
  pool?: PayloadPool;
  /** the largest data message accepted, fragments summed */
  maxMessageBytes: number;
  /** frames from the peer must be masked (a server's decoder) or must not (a client's) */
  masked: boolean;
  /** names the peer in errors, e.g. "the api" or "the client" */
  peer: string;
}

interface FrameInProgress {
  opcode: number;
  fin: boolean;
  buf: Uint8Array;
  filled: number;
  mask: Uint8Array | null;
}

/**
 * Feeds bytes in as they arrive; returns the messages and control frames completed by them, in
 * order. Throws a FramingError at the first violation; after that the decoder must be dropped.
 */
export class FrameDecoder {
  readonly #o: DecoderOptions;
  /** an incomplete frame header carried over from the previous chunk */
  #head = new Uint8Array(0);
  #frame: FrameInProgress | null = null;
  /** the fragmented message so far: #fragmentBytes of it are filled */
  #message: Uint8Array | null = null;
  #fragmentBytes = 0;
  #fragmentCount = 0;
  #fragmentOp = 0;

  constructor(o: DecoderOptions) {
    this.#o = o;
  }

  /** Bytes held for a message not yet complete (bounded by maxMessageBytes + 14). */
  get heldBytes(): number {
    return this.#head.byteLength + this.#fragmentBytes + (this.#frame?.buf.byteLength ?? 0);
  }

  push(chunk: Uint8Array): WsFrame[] {
    const out: WsFrame[] = [];
    const data = chunk;
    let off = 0;
    if (this.#head.byteLength) {
      // complete the carried header from the chunk's first bytes only (never copy the chunk)
      const held = this.#head.byteLength;
      const take = Math.min(MAX_HEADER_BYTES - held, chunk.byteLength);
      const joined = new Uint8Array(held + take);
      joined.set(this.#head);
      joined.set(chunk.subarray(0, take), held);
      const used = this.#header(joined, 0);
      if (used === 0) {
        this.#head = joined;
        return out;
      }
      this.#head = new Uint8Array(0);
      off = used - held;
      if (this.#frame!.buf.byteLength === 0) this.#frameDone(out);
    }
    while (off < data.byteLength) {
      const f = this.#frame;
      if (f) {
        const n = Math.min(f.buf.byteLength - f.filled, data.byteLength - off);
        f.buf.set(data.subarray(off, off + n), f.filled);
        if (f.mask) unmask(f.buf, f.filled, n, f.mask);
        f.filled += n;
        off += n;
        if (f.filled === f.buf.byteLength) this.#frameDone(out);
        continue;
      }
      const used = this.#header(data, off);
      if (used === 0) {
        this.#head = data.slice(off);
        break;
      }
      off += used;
      if (this.#frame!.buf.byteLength === 0) this.#frameDone(out);
    }
    return out;
  }

  /** Parses one frame header at `off`; its length, or 0 when incomplete. */
  #header(d: Uint8Array, off: number): number {
    const avail = d.byteLength - off;
    if (avail < 2) return 0;
    const { peer, masked, maxMessageBytes: max } = this.#o;
    const b0 = d[off], b1 = d[off + 1];
    if (b0 & 0x70) throw new FramingError(CLOSE_PROTOCOL_ERROR, `${peer} set reserved bits`);
    if (((b1 & 0x80) !== 0) !== masked) {
      throw new FramingError(
        CLOSE_PROTOCOL_ERROR,
        `${peer} sent ${masked ? "an unmasked" : "a masked"} frame`,
      );
    }
    const opcode = b0 & 0x0f, fin = (b0 & 0x80) !== 0;
    const control = opcode >= 8;
    if (!KNOWN_OPCODES.has(opcode)) {
      throw new FramingError(CLOSE_PROTOCOL_ERROR, `${peer} sent an unknown opcode ${opcode}`);
    }
    let len = b1 & 0x7f, hdr = 2;
    if (len === 126) {
      if (avail < 4) return 0;
      len = (d[off + 2] << 8) | d[off + 3];
      hdr = 4;
    } else if (len === 127) {
      if (avail < 10) return 0;
      const big = new DataView(d.buffer, d.byteOffset + off, avail).getBigUint64(2);
      // beyond any limit; a Number would lose precision past 2^53
      len = big > BigInt(max) ? Infinity : Number(big);
      hdr = 10;
    }
    if (control && (len > 125 || !fin)) {
      throw new FramingError(CLOSE_PROTOCOL_ERROR, `${peer} sent a malformed control frame`);
    }
    if (!control) {
      if (opcode === OP_CONTINUATION && !this.#fragmentOp) {
        throw new FramingError(
          CLOSE_PROTOCOL_ERROR,
          `${peer} sent a continuation without a message`,
        );
      }
      if (opcode !== OP_CONTINUATION && this.#fragmentOp) {
        throw new FramingError(CLOSE_PROTOCOL_ERROR, `${peer} interleaved two messages`);
      }
      const total = this.#fragmentBytes + len;
      if (total > max) {
        const size = Number.isFinite(total) ? `${total} bytes` : "more than 2^53 bytes";
        throw new FramingError(
          CLOSE_TOO_BIG,
          `${peer} sent a message of ${size} so far, over the limit of ${max} bytes`,
        );
      }
    }
    const maskLen = masked ? 4 : 0;
    if (avail < hdr + maskLen) return 0;
    const mask = masked ? d.slice(off + hdr, off + hdr + 4) : null;
    this.#frame = {
      opcode,
      fin,
      buf: this.#payloadBuffer(len, !control && fin && !this.#fragmentOp),
      filled: 0,
      mask,
    };
    return hdr + maskLen;
  }

  /** A whole data message's may be pooled; a fragment is copied into the message (not pooled). */
  #payloadBuffer(len: number, wholeMessage: boolean): Uint8Array {
    const pool = this.#o.pool;
    if (!pool || !wholeMessage || 2 * len < pool.bufferBytes || len > pool.bufferBytes) {
      return new Uint8Array(len);
    }
    const pooled = pool.take(len);
    return pooled ? new Uint8Array(pooled, 0, len) : new Uint8Array(len);
  }

  #frameDone(out: WsFrame[]): void {
    const f = this.#frame!;
    this.#frame = null;
    if (f.opcode >= 8) {
      out.push({ opcode: f.opcode, payload: f.buf });
      return;
    }
    if (f.fin && !this.#fragmentOp) {
      out.push({ opcode: f.opcode, payload: f.buf });
      return;
    }
    if (!this.#fragmentOp) this.#fragmentOp = f.opcode;
    if (++this.#fragmentCount > MAX_FRAGMENTS) {
      throw new FramingError(
        CLOSE_POLICY,
        `${this.#o.peer} sent a message in more than ${MAX_FRAGMENTS} fragments`,
      );
    }
    const n = f.buf.byteLength;
    if (n) {
      const need = this.#fragmentBytes + n;
      if (!this.#message || this.#message.byteLength < need) {
        // doubling, never past the limit (the header check keeps `need` within it)
        const size = Math.min(
          this.#o.maxMessageBytes,
          Math.max(need, 2 * (this.#message?.byteLength ?? 0), 4096),
        );
        const grown = new Uint8Array(size);
        if (this.#message) grown.set(this.#message.subarray(0, this.#fragmentBytes));
        this.#message = grown;
      }
      this.#message.set(f.buf, this.#fragmentBytes);
      this.#fragmentBytes = need;
    }
    if (!f.fin) return;
    const payload = this.#message
      ? this.#message.subarray(0, this.#fragmentBytes)
      : new Uint8Array(0);
    out.push({ opcode: this.#fragmentOp, payload });
    this.#message = null;
    this.#fragmentBytes = 0;
    this.#fragmentCount = 0;
    this.#fragmentOp = 0;
  }
}

/** XORs buf[from, from + n) with the mask; the key's phase counts from `start`. */
function unmask(buf: Uint8Array, from: number, n: number, mask: Uint8Array, start = 0): void {
  for (let i = from; i < from + n; i++) buf[i] ^= mask[(i - start) & 3];
}

/**
 * The header of one final frame of `length` bytes; with `mask` (a client's frame) the 4 mask
 * bytes follow, and the payload must then be masked with maskPayload.
 */
export function frameHeader(opcode: number, length: number, mask?: Uint8Array): Uint8Array {
  const ext = length < 126 ? 0 : length < 65536 ? 2 : 8;
  const h = new Uint8Array(2 + ext + (mask ? 4 : 0));
  h[0] = 0x80 | opcode;
  h[1] = (mask ? 0x80 : 0) | (ext === 0 ? length : ext === 2 ? 126 : 127);
  const v = new DataView(h.buffer);
  if (ext === 2) v.setUint16(2, length);
  if (ext === 8) v.setBigUint64(2, BigInt(length));
  if (mask) h.set(mask, 2 + ext);
  return h;
}

/** The longest header of an unmasked frame (a server's): 2 bytes and a 64-bit length. */
const HEADER_ROOM = 10;
/** buffers made by withHeaderRoom whose first HEADER_ROOM bytes are free */
const roomy = new WeakSet<ArrayBufferLike>();

/**
 * `bytes` of fresh memory with room for a server frame's header before them: when the whole view
 * is sent, frameInPlace writes the header there and the frame goes out as one buffer (no second
 * write to join, no copy). server/ws_connection.ts frees such a frame once written.
 */
export function withHeaderRoom(bytes: number): Uint8Array {
  const buf = new Uint8Array(HEADER_ROOM + bytes);
  roomy.add(buf.buffer);
  return buf.subarray(HEADER_ROOM);
}

/**
 * The unmasked frame of `payload` written in place, when `payload` is a whole withHeaderRoom view
 * (else null): its header goes into the room before it.
 */
export function frameInPlace(opcode: number, payload: Uint8Array): Uint8Array | null {
  if (
    payload.byteOffset !== HEADER_ROOM || !roomy.has(payload.buffer) ||
    HEADER_ROOM + payload.byteLength !== payload.buffer.byteLength
  ) return null;
  const h = frameHeader(opcode, payload.byteLength);
  const frame = new Uint8Array(
    payload.buffer as ArrayBuffer,
    HEADER_ROOM - h.byteLength,
    h.byteLength + payload.byteLength,
  );
  frame.set(h);
  return frame;
}

/** One whole final frame: header and payload (masked when a mask is given). */
export function encodeWsFrame(opcode: number, payload: Uint8Array, mask?: Uint8Array): Uint8Array {
  const h = frameHeader(opcode, payload.byteLength, mask);
  const f = new Uint8Array(h.byteLength + payload.byteLength);
  f.set(h);
  f.set(payload, h.byteLength);
  if (mask) unmask(f, h.byteLength, payload.byteLength, mask, h.byteLength);
  return f;
}

/** The payload of a close frame: the code and a reason cut to fit 125 bytes (whole characters). */
export function closePayload(code: number, reason: string): Uint8Array {
  const all = new TextEncoder().encode(reason);
  let end = Math.min(all.byteLength, 123);
  // never between the bytes of one UTF-8 character (continuation bytes are 10xxxxxx)
  if (end < all.byteLength) { while (end > 0 && (all[end] & 0xc0) === 0x80) end--; }
  const r = all.subarray(0, end);
  const p = new Uint8Array(2 + r.byteLength);
  p[0] = code >> 8;
  p[1] = code & 0xff;
  p.set(r, 2);
  return p;
}

/** Close codes a peer may send (RFC 6455 §7.4, IANA registry); others are a protocol error. */
export function validCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
    (code >= 3000 && code <= 4999);
}

/** A close frame's code (1005 when absent) and reason. */
export function parseClose(payload: Uint8Array): { code: number; reason: string } {
  if (payload.byteLength === 1) {
    throw new FramingError(CLOSE_PROTOCOL_ERROR, "a close frame of 1 byte");
  }
  const code = payload.byteLength >= 2 ? (payload[0] << 8) | payload[1] : 1005;
  try {
    return { code, reason: new TextDecoder("utf-8", { fatal: true }).decode(payload.subarray(2)) };
  } catch {
    throw new FramingError(CLOSE_INVALID_DATA, "a close frame whose reason is not UTF-8");
  }
}
