import { decodeMessageEvent } from "../protocol/events.ts";
import {
  encodeFrame,
  encodeJsonFrame,
  encodePacketsFrame,
  FrameKind,
} from "../protocol/frame_codec.ts";
import { encodeRecords } from "../protocol/records.ts";
import { DecodeError } from "../protocol/decode_error.ts";
import { assert, assertEquals, assertThrows } from "./support/assert.ts";

Deno.test("events: every frame kind becomes its typed event", () => {
  const records = encodeRecords([{ tsNs: 1n, data: new Uint8Array(8) }]);
  const ev = decodeMessageEvent(encodePacketsFrame(4, 1, records));
  assert(ev.kind === "packets" && ev.count === 1 && ev.source === 4);
  assertEquals(ev.records.byteLength, records.byteLength);
  const st = decodeMessageEvent(
    encodeJsonFrame(FrameKind.STATUS, 1, {
      type: "CONGESTED",
      text: "x",
      origin: "api",
      counts: { cleared: 1, api_dropped: 3, future_key: 2 },
    }),
  );
  assert(st.kind === "status" && st.status.counts?.api_dropped === 3);
  assertEquals(decodeMessageEvent(encodeFrame(FrameKind.END, 0, new Uint8Array())).kind, "end");
});

Deno.test("events: malformed payloads are DecodeErrors", () => {
  assertThrows(
    () => decodeMessageEvent(encodeJsonFrame(FrameKind.STATS, 0, { received: "x" })),
    DecodeError,
    "invalid STATS message",
  );
  assertThrows(
    () =>
      decodeMessageEvent(
        encodeJsonFrame(FrameKind.STATUS, 0, {
          type: "CONGESTED",
          text: "",
          origin: "",
          counts: { cleared: "yes" },
        }),
      ),
    DecodeError,
  );
  assertThrows(() => decodeMessageEvent("text"), DecodeError, "text message");
  assertThrows(
    () => decodeMessageEvent(encodeFrame(FrameKind.PACKETS, 0, new Uint8Array(2))),
    DecodeError,
    "count field",
  );
});
