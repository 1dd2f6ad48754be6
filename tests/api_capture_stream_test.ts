/**
 * server/capture_stream.ts: the one sink Fanout writes every event to. Packets are tallied,
 * merged and counted under the resolver's label; a client limit stops the capture with the
 * crossing batch cut; control frames pass; nothing is delivered after close.
 */
import { assert, assertEquals } from "./support/assert.ts";
import { CaptureStream } from "../server/capture_stream.ts";
import { ClientMerger } from "../server/merge.ts";
import { createApiMetrics } from "../server/metrics.ts";
import { effectiveBounds } from "../server/limits.ts";
import type { ApiError } from "../server/errors.ts";
import { decodeSingleFrame, encodeRecords, FrameKind } from "../protocol/frame_codec.ts";
import { emptySourceStats } from "../protocol/messages.ts";

function batch(n: number, size = 100): Uint8Array {
  const recs = encodeRecords(
    Array.from({ length: n }, (_, i) => ({ tsNs: BigInt(i), data: new Uint8Array(size) })),
  );
  const out = new Uint8Array(4 + recs.length);
  new DataView(out.buffer).setUint32(0, n, true);
  out.set(recs, 4);
  return out;
}

function setup(maxPackets: number) {
  const sent: Uint8Array[] = [];
  const socket = { bufferedAmount: 0, readyState: 1, send: (d: Uint8Array) => void sent.push(d) };
  const merger = new ClientMerger(socket, { size: 1000, upperLimit: 900, lowerLimit: 500 });
  const metrics = createApiMetrics();
  const stops: string[] = [];
  const limits: ApiError[] = [];
  const stream = new CaptureStream({
    merger,
    metrics,
    resolver: "lab",
    bounds: effectiveBounds({}, { maxDurationMs: 0, maxBytes: 0 }),
    maxPackets,
    onLimit: (e) => limits.push(e),
    onStop: (r) => stops.push(r),
  });
  const kinds = () => sent.map((m) => decodeSingleFrame(m).kind);
  return { stream, merger, metrics, stops, limits, kinds };
}

Deno.test("capture stream: packets and control frames through one sink, max_packets cuts", () => {
  const { stream, merger, metrics, stops, limits, kinds } = setup(5);
  try {
    stream.source(0, { origin: "lab:router/0", interface: "eth0", link_type: 1, snaplen: 65535 });
    stream.packets(0, batch(3), 3);
    stream.packets(0, batch(4), 4); // crosses max_packets: 2 of 4 are delivered
    stream.stats(0, { ...emptySourceStats(), final: true });
    stream.status(0, "CAPTURE_STOPPED", "lab:router/0", "done");
    assertEquals(kinds(), [
      FrameKind.SOURCE,
      FrameKind.PACKETS,
      FrameKind.PACKETS,
      FrameKind.STATS,
      FrameKind.STATUS,
    ]);
    assertEquals([stream.packetCount, metrics.packets.get({ resolver: "lab" })], [5, 5]);
    assertEquals(stream.byteCount, metrics.bytes.get({ resolver: "lab" }));
    assertEquals(stops, ["packet limit of 5 reached"]);
    assertEquals(limits, []);
    assert(!stream.congested);
  } finally {
    stream.close();
    merger.close();
  }
});

Deno.test("capture stream: nothing is delivered after close", () => {
  const { stream, merger, kinds } = setup(0);
  stream.close();
  merger.close();
  stream.packets(0, batch(2), 2);
  assertEquals(stream.packetCount, 0);
  assertEquals(kinds(), []);
});
