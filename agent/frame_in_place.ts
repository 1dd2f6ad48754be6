/**
 * When the agent sends a batch of packets from the capture engine's queue itself instead of
 * copying it into a frame of its own: the frame header and the chunk framing are written into
 * room the engine keeps around every batch (BATCH_ROOM), and the batch is held until the socket
 * has written it. Pure policy; agent/capture_session.ts applies it.
 *
 * @example
 * ```ts
 * import { mayHold } from "./frame_in_place.ts";
 *
 * mayHold({ frameBytes: 200_000, queuedFrames: 1, heldBytes: 0 }); // true: sent in place
 * mayHold({ frameBytes: 200_000, queuedFrames: 9, heldBytes: 0 }); // false: copied
 * ```
 *
 * @module
 */
import { FRAME_HEADER_BYTES } from "../protocol/frame_codec.ts";
import { PACKETS_COUNT_BYTES } from "../protocol/records.ts";
import { ALONE_BYTES, CHUNK_ROOM } from "./engine/frame_queue.ts";

/** Room the engine keeps around each batch: chunk-size line, frame header, count; CRLF after. */
export const BATCH_ROOM = {
  before: CHUNK_ROOM.before + FRAME_HEADER_BYTES + PACKETS_COUNT_BYTES,
  after: CHUNK_ROOM.after,
} as const;

/**
 * Held batches take at most this much of the engine's 16 MiB queue; beyond, a batch is copied
 * into a pooled frame and handed back at once.
 */
export const HELD_BYTES = 4 << 20;

/**
 * ...and only while fewer frames than this wait for the socket. A held batch keeps the engine
 * from reusing the queue behind it until it is written, so behind a slow socket the engine would
 * fill and drop. Copying lets the session's own queue fill instead, whose back-pressure discards
 * and reports the excess (CONGESTED).
 */
export const HOLD_QUEUED = 4;

/**
 * Whether a frame of `frameBytes` goes out from the engine's queue: only one written alone (a
 * small one is joined into a chunk, a copy anyway), while the socket keeps up and the held
 * batches leave the engine room.
 */
export function mayHold(
  o: { frameBytes: number; queuedFrames: number; heldBytes: number },
): boolean {
  return o.frameBytes >= ALONE_BYTES && o.queuedFrames < HOLD_QUEUED &&
    o.heldBytes + o.frameBytes <= HELD_BYTES;
}
