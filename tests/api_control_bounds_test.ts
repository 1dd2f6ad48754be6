/**
 * Bounds on control frames (issue 12, defect 6), unit level: an agent's control frame is refused
 * from its header when oversized, STATUS text is truncated and rate-limited per source, only the
 * latest STATS per source is held while the client is congested, and a hard cap on the bytes
 * held for a client ends the session with one clear LIMIT_REACHED. tests/api_control_flood_test.ts
 * drives the same through a real api with a fake agent.
 */
import { assert, assertEquals, assertMatch, assertThrows } from "./support/assert.ts";
import {
  DecodeError,
  decodeJson,
  decodeSingleFrame,
  encodeFrame,
  encodeJsonFrame,
  encodeRecords,
  FRAME_HEADER_BYTES,
  FrameAssembler,
  FrameKind,
  MAX_CONTROL_PAYLOAD_BYTES,
} from "../protocol/frame_codec.ts";
import { emptySourceStats, type SourceStats, status } from "../protocol/messages.ts";
import {
  AgentStatusGate,
  boundedStatus,
  MAX_STATUS_TEXT,
  STATUS_BURST,
  STATUS_PER_SECOND,
} from "../server/agent_status.ts";
import { API_SOURCE, ClientMerger, HELD_BYTES_LIMIT } from "../server/merge.ts";

class FakeSocket {
  sent: Uint8Array[] = [];
  bufferedAmount = 0;
  readyState = 1;
  send(d: Uint8Array) {
    this.sent.push(d);
    this.bufferedAmount += d.byteLength;
  }
  frames() {
    return this.sent.map((m) => decodeSingleFrame(m));
  }
}

function packets(n: number, size: number): Uint8Array {
  const recs = encodeRecords(
    Array.from({ length: n }, (_, i) => ({ tsNs: BigInt(i), data: new Uint8Array(size) })),
  );
  const out = new Uint8Array(4 + recs.length);
  new DataView(out.buffer).setUint32(0, n, true);
  out.set(recs, 4);
  return out;
}

const stats = (received: number, final = false): SourceStats => ({
  ...emptySourceStats(),
  received,
  packets: received,
  final,
});

Deno.test("frame assembler: an oversized control frame is refused from its header alone", () => {
  const a = new FrameAssembler(undefined, { maxControlPayload: MAX_CONTROL_PAYLOAD_BYTES });
  // Only the header of an 8 MiB STATUS arrives: refused before any payload is buffered.
  const header = encodeFrame(FrameKind.STATUS, 0, new Uint8Array()).slice();
  new DataView(header.buffer).setUint32(4, 8 * 1024 * 1024, true);
  const err = assertThrows(() => [...a.frames(header)], DecodeError);
  assertMatch(err.message, /STATUS frame of 8388608 bytes exceeds the 65536-byte limit/);
  assertEquals(a.pending, FRAME_HEADER_BYTES);
  // PACKETS keep the 8 MiB frame bound; control frames within the limit pass.
  const b = new FrameAssembler(undefined, { maxControlPayload: MAX_CONTROL_PAYLOAD_BYTES });
  const big = encodeFrame(FrameKind.PACKETS, 0, packets(1, 200_000));
  const ok = encodeJsonFrame(FrameKind.STATUS, 0, status("CONGESTED", "a", "x".repeat(60_000)));
  assertEquals([...b.frames(big), ...b.frames(ok)].map((f) => f.kind), [
    FrameKind.PACKETS,
    FrameKind.STATUS,
  ]);
});

Deno.test("agent STATUS: text truncated to about 1 KiB, limit fields bounded", () => {
  const huge = "A".repeat(8 * 1024 * 1024);
  const m = boundedStatus(status("LIMIT_REACHED", "vm", huge, {
    limit: { name: "n".repeat(10_000), value: "v".repeat(10_000) },
  }));
  assert(m.text.length < MAX_STATUS_TEXT + 100, `${m.text.length} characters`);
  assertMatch(m.text, /truncated: the agent sent 8388608 characters/);
  assertEquals(m.limit!.name.length, 128);
  assertEquals((m.limit!.value as string).length, 128);
  assertEquals(boundedStatus(status("CONGESTED", "vm", "short")).text, "short");
});

Deno.test("agent STATUS: a burst, then a few per second; the next says how many were left out", () => {
  let now = 0;
  const gate = new AgentStatusGate(() => now);
  const flood = Array.from({ length: 1000 }, () => gate.admit(status("CONGESTED", "vm", "x")));
  assertEquals(flood.filter((v) => v.forward).length, STATUS_BURST);
  assertEquals(gate.suppressed, 1000 - STATUS_BURST);
  // How a source ended always passes, once.
  const failed = gate.admit(status("INSTANCE_UNAVAILABLE", "vm", "capture failed"));
  assert(failed.forward);
  assertMatch(failed.status.text, /^capture failed \(980 earlier status message\(s\)/);
  assert(!gate.admit(status("INSTANCE_UNAVAILABLE", "vm", "again")).forward);
  now += 1000;
  const later = Array.from({ length: 100 }, () => gate.admit(status("CONGESTED", "vm", "y")));
  assertEquals(later.filter((v) => v.forward).length, STATUS_PER_SECOND);
  assert(later[0].forward && /1 earlier status message/.test(later[0].status.text));
});

Deno.test("ClientMerger: while congested only the latest STATS per source is kept", () => {
  const sock = new FakeSocket();
  const merger = new ClientMerger(sock, { size: 10, upperLimit: 4, lowerLimit: 2 });
  try {
    for (let i = 0; i < 4; i++) merger.packets(0, packets(1, 10), 1);
    assert(merger.congested);
    const before = sock.sent.length;
    for (let i = 1; i <= 1000; i++) {
      merger.stats(0, stats(i));
      merger.stats(1, stats(2 * i));
    }
    assertEquals(sock.sent.length, before, "STATS are held while congested");
    // A STATUS of a source goes out after that source's latest STATS.
    merger.status(1, "CAPTURE_STOPPED", "vm1", "done");
    const tail = sock.frames().slice(before);
    assertEquals(tail.map((f) => [f.kind, f.source]), [
      [FrameKind.STATS, 1],
      [FrameKind.STATUS, 1],
    ]);
    assertEquals((decodeJson(tail[0]) as SourceStats).received, 2000);
    // END sends what is left, the latest only.
    merger.stats(0, stats(1001, true));
    merger.control(encodeFrame(FrameKind.END, API_SOURCE, new Uint8Array()));
    const end = sock.frames().slice(before + 2);
    assertEquals(end.map((f) => [f.kind, f.source]), [
      [FrameKind.STATS, 0],
      [FrameKind.END, API_SOURCE],
    ]);
    assertEquals(decodeJson(end[0]), { ...stats(1001, true), api_dropped: 0 });
  } finally {
    merger.close();
  }
});

Deno.test("ClientMerger: control bytes count; past the hard cap one LIMIT_REACHED, then nothing", () => {
  const sock = new FakeSocket(); // a client that never reads
  const overflows: string[] = [];
  const merger = new ClientMerger(
    sock,
    { size: 100, upperLimit: 90, lowerLimit: 50, maxBufferedBytes: 10_000, maxHeldBytes: 20_000 },
    { onOverflow: (text) => overflows.push(text) },
  );
  try {
    // Packets congest at the byte bound and are discarded from then on ...
    merger.packets(0, packets(80, 100), 80);
    assert(merger.congested);
    assert(!merger.packets(0, packets(80, 100), 80));
    // ... but status keeps coming (e.g. from many sources at their rate limit).
    for (let i = 0; i < 1000; i++) merger.status(i % 50, "CONGESTED", "vm", "x".repeat(500));
    assertEquals(overflows.length, 1);
    assert(merger.overflowed);
    const last = sock.frames().at(-1)!;
    const st = decodeJson(last) as { type: string; text: string; limit: unknown };
    assertEquals([last.kind, last.source, st.type], [
      FrameKind.STATUS,
      API_SOURCE,
      "LIMIT_REACHED",
    ]);
    assertEquals(st.limit, { name: HELD_BYTES_LIMIT, value: 20_000 });
    assertMatch(st.text, /reads too slowly.*hard cap of 20000.*capture is ended/);
    assert(sock.bufferedAmount <= 20_000 + last.payload.byteLength + 8, `${sock.bufferedAmount}`);
    const n = sock.sent.length;
    merger.status(0, "CONGESTED", "vm", "more");
    merger.stats(0, stats(1));
    merger.control(encodeFrame(FrameKind.END, API_SOURCE, new Uint8Array()));
    assertEquals(sock.sent.length, n, "nothing is sent past the cap");
  } finally {
    merger.close();
  }
});
