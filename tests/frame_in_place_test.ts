/** The agent's rule for sending a batch from the engine's queue (agent/frame_in_place.ts). */
import { BATCH_ROOM, HELD_BYTES, HOLD_QUEUED, mayHold } from "../agent/frame_in_place.ts";
import { ALONE_BYTES, CHUNK_ROOM } from "../agent/engine/frame_queue.ts";
import { FRAME_HEADER_BYTES } from "../protocol/frame_codec.ts";
import { PACKETS_COUNT_BYTES } from "../protocol/records.ts";
import { assertEquals } from "./support/assert.ts";

Deno.test("mayHold: large frames while the socket keeps up and the engine has room; else copied", () => {
  const big = 200_000;
  assertEquals(mayHold({ frameBytes: big, queuedFrames: 0, heldBytes: 0 }), true);
  assertEquals(mayHold({ frameBytes: ALONE_BYTES, queuedFrames: 0, heldBytes: 0 }), true);
  assertEquals(
    mayHold({ frameBytes: ALONE_BYTES - 1, queuedFrames: 0, heldBytes: 0 }),
    false,
    "a small frame is joined into a chunk (a copy anyway)",
  );
  assertEquals(mayHold({ frameBytes: big, queuedFrames: HOLD_QUEUED - 1, heldBytes: 0 }), true);
  assertEquals(
    mayHold({ frameBytes: big, queuedFrames: HOLD_QUEUED, heldBytes: 0 }),
    false,
    "behind a slow socket: copied, so back-pressure sees the queue",
  );
  assertEquals(mayHold({ frameBytes: big, queuedFrames: 0, heldBytes: HELD_BYTES - big }), true);
  assertEquals(
    mayHold({ frameBytes: big, queuedFrames: 0, heldBytes: HELD_BYTES - big + 1 }),
    false,
    "the held batches would take more of the engine's queue than allowed",
  );
});

Deno.test("BATCH_ROOM holds the chunk-size line, the frame header and the count; CRLF after", () => {
  assertEquals(BATCH_ROOM, {
    before: CHUNK_ROOM.before + FRAME_HEADER_BYTES + PACKETS_COUNT_BYTES,
    after: CHUNK_ROOM.after,
  });
  assertEquals(BATCH_ROOM.before, 22);
});
