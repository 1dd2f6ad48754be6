/**
 * HTTP/1.1 chunked transfer coding (RFC 9112 §7.1) written by the agent itself, so that a capture
 * stream goes to the TLS socket as a few large writes: `size CRLF data CRLF` in ONE buffer per
 * write. node:http's own chunked write hands size line, data and CRLF to the socket as a writev,
 * which Deno's node compat joins into a new buffer: a copy of every frame (docs/benchmarks.md,
 * "Where a 1500 B packet's CPU goes"). Here a large frame gets its framing written into room
 * reserved around it when it was built (no copy); small frames are joined into one chunk.
 *
 * @example
 * ```ts
 * import { CHUNK_ROOM, chunkInPlace, joinChunk } from "./http_chunks.ts";
 *
 * const buf = new Uint8Array(CHUNK_ROOM.before + 5 + CHUNK_ROOM.after);
 * buf.set(new TextEncoder().encode("hello"), CHUNK_ROOM.before);
 * const frame = buf.subarray(CHUNK_ROOM.before, CHUNK_ROOM.before + 5);
 * new TextDecoder().decode(chunkInPlace(frame)); // "5\r\nhello\r\n"
 * new TextDecoder().decode(joinChunk([frame, frame], 10)); // "a\r\nhellohello\r\n"
 * ```
 *
 * @module
 */

/** Room a frame needs around it for chunkInPlace: 8 hex digits and CRLF before, CRLF after. */
export const CHUNK_ROOM = { before: 10, after: 2 } as const;

/** The last chunk and an empty trailer section: what ends a chunked body. */
export const LAST_CHUNK = new Uint8Array([0x30, 13, 10, 13, 10]);

const HEX = new Uint8Array([..."0123456789abcdef"].map((c) => c.charCodeAt(0)));

/** Hex digits of `n` (1..0xffffffff), written to end right before `end`; returns the start. */
function writeSizeLine(buf: Uint8Array, end: number, n: number): number {
  buf[end - 2] = 13;
  buf[end - 1] = 10;
  let i = end - 2;
  do {
    buf[--i] = HEX[n & 15];
    n >>>= 4;
  } while (n > 0);
  return i;
}

/**
 * The chunk for `frame`, framed in the room reserved around it in its buffer (CHUNK_ROOM, e.g.
 * through encodePacketsFrame's `room`): a view of the same memory, nothing copied. Only for
 * frames built with that room: the bytes around any other view belong to someone else.
 */
export function chunkInPlace(frame: Uint8Array): Uint8Array {
  const n = frame.byteLength;
  if (
    n === 0 || n > 0xffffffff || frame.byteOffset < CHUNK_ROOM.before ||
    frame.buffer.byteLength - frame.byteOffset - n < CHUNK_ROOM.after
  ) {
    throw new RangeError(
      `frame of ${n} bytes at offset ${frame.byteOffset} has no room for its chunk framing; ` +
        "build it with CHUNK_ROOM",
    );
  }
  const buf = new Uint8Array(frame.buffer, 0, frame.byteOffset + n + CHUNK_ROOM.after);
  const end = frame.byteOffset + n;
  buf[end] = 13;
  buf[end + 1] = 10;
  const start = writeSizeLine(buf, frame.byteOffset, n);
  return buf.subarray(start);
}

/** One chunk holding `parts` (`size` bytes in all, > 0) back to back: one copy of each. */
export function joinChunk(parts: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(CHUNK_ROOM.before + size + CHUNK_ROOM.after);
  let off = CHUNK_ROOM.before;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  out[off] = 13;
  out[off + 1] = 10;
  return out.subarray(writeSizeLine(out, CHUNK_ROOM.before, size));
}
