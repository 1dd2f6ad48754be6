/**
 * A fake agent that lies: it answers each POST /captures with a valid HELLO and SOURCE followed by
 * frames from `lyingFrames` — packet counts and lengths that do not match the bytes, oversized
 * announced lengths, unknown kinds, flags, frames out of order, garbage JSON, bit flips — and then
 * ends the stream without END. The api must fail that source clearly and never crash.
 */
import {
  encodeFrame,
  encodeJsonFrame,
  encodePacketsFrame,
  encodeRecords,
  FrameKind,
} from "../../../protocol/frame_codec.ts";
import { makeHello } from "../../../protocol/hello.ts";
import type { Prng } from "./chaos.ts";

export const LIES = [
  "count-high",
  "count-low",
  "count-huge",
  "caplen-past-end",
  "caplen-over-origlen",
  "caplen-over-snaplen",
  "length-past-end",
  "length-huge",
  "unknown-kind",
  "flags",
  "other-source",
  "stats-garbage",
  "stats-negative",
  "status-not-json",
  "status-huge-text",
  "second-hello",
  "second-source",
  "end-then-more",
  "random-bytes",
  "bit-flips",
] as const;
export type Lie = typeof LIES[number];

function packets(n: number, size = 60): Uint8Array {
  return encodeRecords(
    Array.from({ length: n }, (_, i) => ({ tsNs: BigInt(1e18 + i), data: new Uint8Array(size) })),
  );
}

function setU32(frame: Uint8Array, at: number, v: number): Uint8Array {
  new DataView(frame.buffer, frame.byteOffset).setUint32(at, v >>> 0, true);
  return frame;
}

/** The frames after HELLO and SOURCE for one lie, varied by the PRNG. Pure given the PRNG. */
export function lyingFrames(lie: Lie, r: Prng): Uint8Array[] {
  const n = 1 + r.int(20);
  const good = encodePacketsFrame(0, n, packets(n));
  switch (lie) {
    case "count-high":
      return [setU32(good.slice(), 8, n + 1 + r.int(1000))];
    case "count-low":
      return [setU32(good.slice(), 8, r.int(n))];
    case "count-huge":
      return [setU32(good.slice(), 8, 0xffffffff - r.int(10))];
    case "caplen-past-end": // first record claims more bytes than the frame holds
      return [setU32(good.slice(), 8 + 4 + 8, 60 + 1 + r.int(100_000))];
    case "caplen-over-origlen":
      return [setU32(good.slice(), 8 + 4 + 12, r.int(60))];
    case "caplen-over-snaplen": {
      const big = encodePacketsFrame(0, 1, packets(1, 64));
      return [setU32(big, 8 + 4 + 8, 262_145 + r.int(1e6))];
    }
    case "length-past-end": // the header announces more than will ever come
      return [setU32(good.slice(), 4, good.length - 8 + 1 + r.int(1e6))];
    case "length-huge":
      return [setU32(good.slice(), 4, 0x80000000 + r.int(1e6))];
    case "unknown-kind": {
      const f = good.slice();
      f[0] = 8 + r.int(248);
      return [f];
    }
    case "flags": {
      const f = good.slice();
      f[1] = 1 + r.int(255);
      return [f];
    }
    case "other-source":
      return [encodePacketsFrame(1 + r.int(65535), n, packets(n))];
    case "stats-garbage":
      return [encodeJsonFrame(FrameKind.STATS, 0, { received: "lots", final: "maybe" })];
    case "stats-negative":
      return [encodeJsonFrame(FrameKind.STATS, 0, {
        received: -1 - r.int(100),
        dropped: 0,
        if_dropped: 0,
        engine_dropped: 0,
        agent_dropped: 0,
        packets: 0,
        bytes: 0,
        final: false,
      })];
    case "status-not-json":
      return [encodeFrame(FrameKind.STATUS, 0, r.bytes(1 + r.int(200)))];
    case "status-huge-text":
      return [encodeJsonFrame(FrameKind.STATUS, 0, {
        type: "CONGESTED",
        origin: "liar",
        text: "x".repeat(64 * 1024 + r.int(1024 * 1024)),
      })];
    case "second-hello":
      return [good, encodeJsonFrame(FrameKind.HELLO, 0, makeHello("agent", "liar-again"))];
    case "second-source":
      return [good, encodeJsonFrame(FrameKind.SOURCE, 0, source("eth1"))];
    case "end-then-more":
      return [encodeFrame(FrameKind.END, 0, new Uint8Array()), good];
    case "random-bytes":
      return [r.bytes(1 + r.int(4096))];
    case "bit-flips": {
      const f = good.slice();
      for (let i = 0, k = 1 + r.int(8); i < k; i++) f[r.int(f.length)] ^= 1 << r.int(8);
      return [f];
    }
  }
}

function source(iface: string) {
  return { origin: "liar", interface: iface, link_type: 1, snaplen: 65535 };
}

export interface LyingAgent {
  /** frames the next capture gets after HELLO and SOURCE */
  next: Uint8Array[];
  starts: number;
  stop(): Promise<void>;
}

/** An HTTPS agent on hostname:port that serves `next` to every capture. */
export async function startLyingAgent(
  cert: { cert: string; key: string },
  hostname: string,
  port: number,
): Promise<LyingAgent> {
  const agent: LyingAgent = { next: [], starts: 0, stop: () => Promise.resolve() };
  const { promise, resolve } = Promise.withResolvers<void>();
  const health = { healthy: true, draining: false, id: "liar", active_captures: 0 };
  const server = Deno.serve({ hostname, port, ...cert, onListen: () => resolve() }, async (req) => {
    const path = new URL(req.url).pathname;
    if (req.method === "GET" && path === "/health") return Response.json(health);
    if (req.method === "POST" && path === "/captures") {
      await req.body?.cancel();
      agent.starts++;
      const frames = [
        encodeJsonFrame(FrameKind.HELLO, 0, makeHello("agent", "liar")),
        encodeJsonFrame(FrameKind.SOURCE, 0, source("eth0")),
        ...agent.next,
      ];
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          for (const f of frames) c.enqueue(f);
          c.close();
        },
      });
      return new Response(body, {
        headers: { "content-type": "application/octet-stream", "x-pcap-capture-id": "liar-1" },
      });
    }
    if (req.method === "POST" && path.endsWith("/stop")) return new Response(null, { status: 202 });
    return Response.json({ type: "INVALID_REQUEST", text: "no such route" }, { status: 404 });
  });
  await promise;
  agent.stop = () => server.shutdown();
  return agent;
}
