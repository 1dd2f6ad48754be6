/**
 * The agent's own chunked writer (agent/http_chunks.ts, agent/engine/frame_queue.ts,
 * agent/stream_writer.ts): the chunks it frames decode, byte for byte and in order, through the
 * api's HTTP/1.1 reader (lib/http1_wire.ts); a real agent's stream read by the api's socket reader
 * (server/agent_stream_tls.ts) carries every packet intact and in order, with small frames joined
 * and large ones framed in place; a reader that stops makes the agent discard and count, with
 * nothing unaccounted; a disconnect releases the capture; a shutdown still delivers STATS,
 * STATUS and END; an HTTP/1.0 request (no chunked coding) gets no raw chunks.
 */
import { assert, assertEquals, assertThrows } from "./support/assert.ts";
import {
  agentYaml,
  type Lab,
  markedSequence,
  readStream,
  type RunningAgent,
  sendMarked,
  startBody,
  type StreamResult,
  type TestPki,
  waitFor,
  withAgent,
  withPki,
  withVmLab,
} from "./support/agent_harness.ts";
import {
  encodeFrame,
  encodePacketsFrame,
  FrameDecoder,
  FrameKind,
} from "../protocol/frame_codec.ts";
import { CHUNK_ROOM, chunkInPlace, joinChunk } from "../agent/http_chunks.ts";
import { ALONE_BYTES, FrameQueue } from "../agent/engine/frame_queue.ts";
import { FramePool } from "../lib/frame_pool.ts";
import { BodyDecoder } from "../lib/http1_wire.ts";
import { requestOverSocket, type SocketResponse } from "../server/agent_stream_tls.ts";
import { isRoot } from "../lab/netns.ts";

const dec = new TextDecoder();

/** Decodes a chunked body as the api does, fed in pieces cut at pseudo-random points. */
function decodeChunked(wire: Uint8Array, seed: number): { frames: Uint8Array[]; done: boolean } {
  const body = new BodyDecoder({ kind: "chunked" });
  const frames = new FrameDecoder();
  const out: Uint8Array[] = [];
  let x = seed;
  for (let off = 0; off < wire.byteLength;) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    const n = 1 + (x % 40_000);
    for (const part of body.push(wire.subarray(off, off + n))) {
      for (const f of frames.push(part)) out.push(encodeFrame(f.kind, f.source, f.payload));
    }
    off += n;
  }
  frames.finish();
  return { frames: out, done: body.done };
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  return out;
}

Deno.test("http chunks: framed in place or joined, sizes in hex, refused without room", () => {
  const frame = encodePacketsFrame(0, 1, new Uint8Array(0x1234 - 12).fill(7), CHUNK_ROOM);
  const chunk = chunkInPlace(frame);
  assertEquals(chunk.buffer, frame.buffer, "framed in the frame's own buffer, not copied");
  assertEquals(dec.decode(chunk.subarray(0, 6)), "1234\r\n");
  assertEquals(chunk.subarray(6, 6 + frame.byteLength), frame);
  assertEquals(dec.decode(chunk.subarray(-2)), "\r\n");
  const one = new Uint8Array([1]);
  assertEquals(dec.decode(joinChunk([one, one, one], 3)), "3\r\n\x01\x01\x01\r\n");
  assertThrows(() => chunkInPlace(new Uint8Array(20)), RangeError, "no room");
  const big = new Uint8Array(CHUNK_ROOM.before + 0xabcdef + CHUNK_ROOM.after);
  const view = big.subarray(CHUNK_ROOM.before, CHUNK_ROOM.before + 0xabcdef);
  assertEquals(dec.decode(chunkInPlace(view).subarray(0, 8)), "abcdef\r\n");
});

Deno.test("frame queue: chunks decode through the api's reader, every frame in order", () => {
  const q = new FrameQueue();
  const sent: Uint8Array[] = [];
  let x = 7;
  for (let i = 0; i < 400; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    // control frames, small packet batches (joined) and large ones (framed in place)
    const kind = x % 5;
    let frame: Uint8Array;
    if (kind === 0) {
      frame = encodeFrame(FrameKind.STATS, 0, new TextEncoder().encode(`{"n":${i}}`));
    } else {
      const len = kind === 1 ? 200_000 + (x % 70_000) : 1 + (x % 30_000);
      const records = new Uint8Array(len);
      for (let j = 0; j < len; j += 997) records[j] = (i + j) & 0xff;
      frame = encodePacketsFrame(0, i, records, CHUNK_ROOM);
    }
    q.push(frame, kind !== 0, kind !== 0);
    sent.push(frame.slice());
  }
  assertEquals(q.packetFrames, sent.filter((f) => f[0] === FrameKind.PACKETS).length);
  const chunks: Uint8Array[] = [];
  for (let c = q.takeChunk(); c; c = q.takeChunk()) chunks.push(c);
  assertEquals(q.packetFrames, 0);
  assert(chunks.length < sent.length, "small frames were joined");
  const wire = concat([...chunks, new TextEncoder().encode("0\r\n\r\n")]);
  for (const seed of [1, 2, 3]) {
    const got = decodeChunked(wire, seed);
    assert(got.done, "the last chunk ends the body");
    assertEquals(got.frames.length, sent.length);
    for (let i = 0; i < sent.length; i++) assertEquals(got.frames[i], sent[i], `frame ${i}`);
  }
});

Deno.test("frame queue: a frame's done comes once its memory is free: joined, released, or cleared", () => {
  const q = new FrameQueue();
  const done: string[] = [];
  const frame = (len: number) => encodePacketsFrame(0, 1, new Uint8Array(len).fill(7), CHUNK_ROOM);
  q.push(frame(100), true, true, () => done.push("small a"));
  q.push(frame(200), true, true, () => done.push("small b"));
  q.push(frame(ALONE_BYTES), true, true, () => done.push("large"));
  q.push(frame(300), true, true, () => done.push("queued"));
  const joined = q.takeChunk()!;
  assertEquals(done, ["small a", "small b"], "joined frames were copied: free at once");
  const alone = q.takeChunk()!;
  assertEquals(done.length, 2, "a frame written alone is free only once the socket is done");
  assertEquals(q.release(joined), false, "a joined chunk is the queue's own memory");
  assertEquals(q.release(alone), true);
  assertEquals(q.release(alone), false, "once");
  assertEquals(done, ["small a", "small b", "large"]);
  q.clear();
  assertEquals(done.at(-1), "queued", "clear() frees what was still queued");
  assertEquals(done.length, 4);
});

Deno.test("frame pool: frames built in reused memory stay intact on the wire", () => {
  const pool = new FramePool(300_000, 2);
  const q = new FrameQueue();
  const wire: Uint8Array[] = [];
  const sent: Uint8Array[] = [];
  for (let i = 0; i < 20; i++) {
    // shrinking and growing batches in the same buffers: no byte of an earlier frame shows
    const records = new Uint8Array(ALONE_BYTES + ((i * 7919) % 250_000)).fill(i + 1);
    const buffer = pool.take(CHUNK_ROOM.before + 12 + records.byteLength + CHUNK_ROOM.after);
    assert(buffer, "a batch up to the buffer size gets a pooled buffer");
    const frame = encodePacketsFrame(0, i, records, { ...CHUNK_ROOM, buffer });
    assertEquals(frame.buffer, buffer, "built in the pooled buffer");
    sent.push(frame.slice());
    q.push(frame, true, true);
    const chunk = q.takeChunk()!;
    assertEquals(chunk.buffer, buffer, "written from the pooled buffer, not copied");
    wire.push(chunk.slice()); // what the socket took
    pool.give(chunk.buffer); // its write callback
  }
  assertEquals(pool.idle, 1, "one buffer went round");
  assertEquals(pool.take(300_001), undefined, "a larger frame is not pooled");
  pool.give(new ArrayBuffer(10));
  assertEquals(pool.idle, 1, "a buffer of another size is not kept");
  const got = decodeChunked(concat([...wire, new TextEncoder().encode("0\r\n\r\n")]), 5);
  assertEquals(got.frames, sent);
});

// ---- a real agent, read by the api's socket reader ----

async function probe(lab: Lab): Promise<void> {
  const script = `require "socket"
UDPSocket.new.send("PCAPPROBE", 0, "198.18.0.1", 9999)`;
  await lab.netns.exec(lab.peer, ["ruby", "-e", script]);
}

/** `count` 1400-byte datagrams "PCAPFLOOD nnnnnn " + 'y'…, as fast as ruby sends them. */
async function flood(lab: Lab, count: number): Promise<void> {
  const script = `require "socket"
s = UDPSocket.new
ARGV[0].to_i.times { |i| s.send(format("PCAPFLOOD %06d ", i) + "y" * 1384, 0, "198.18.0.1", 9999); sleep 0.0002 if i % 20 == 0 }`;
  await lab.netns.exec(lab.peer, ["ruby", "-e", script, String(count)]);
}

const ETH_IP_UDP = 42;
const mark = (p: { data: Uint8Array }) => dec.decode(p.data.subarray(ETH_IP_UDP, ETH_IP_UDP + 9));

/** Flood sequence numbers, checking each datagram is whole and intact. */
function floodSequence(r: StreamResult): number[] {
  const seq: number[] = [];
  for (const p of r.packets) {
    if (mark(p) !== "PCAPFLOOD") continue;
    const text = dec.decode(p.data.subarray(ETH_IP_UDP));
    const m = /^PCAPFLOOD (\d{6}) (y*)$/.exec(text);
    assert(m && m[2].length === 1384 && p.caplen === p.origlen, `flood datagram intact: ${text}`);
    seq.push(Number(m[1]));
  }
  return seq;
}

/** Opens a capture through server/agent_stream_tls.ts, as the api reads agents. */
function openViaApiReader(
  t: TestPki,
  agent: RunningAgent,
  lab: Lab,
  signal: AbortSignal,
): Promise<SocketResponse> {
  return requestOverSocket(
    "127.0.0.1",
    agent.port,
    { ca: t.pki.caCert, cert: t.client.cert, key: t.client.key, skipVerify: false },
    {
      method: "POST",
      path: "/captures",
      headers: { "content-type": "application/json" },
      body: startBody({ interface: lab.vmDev, filter: "udp dst port 9999" }),
    },
    signal,
  );
}

/** Every packet the kernel saw: streamed or dropped somewhere, by count (final STATS). */
function assertAccounted(r: StreamResult): Record<string, unknown> {
  const final = r.json.filter((j) => j.kind === "STATS").at(-1)!;
  assertEquals(final.final, true);
  assertEquals(final.packets, r.packets.length, "STATS packets = packets in the stream");
  assertEquals(
    r.packets.length + (final.agent_dropped as number) + (final.engine_dropped as number) +
      (final.dropped as number),
    final.received,
  );
  return final;
}

function withLabAgent(
  extra: string,
  fn: (lab: Lab, t: TestPki, agent: RunningAgent, client: Deno.HttpClient) => Promise<void>,
): () => Promise<void> {
  return () =>
    withVmLab("agent-writer-", (lab, t) =>
      withAgent(
        t,
        { yaml: agentYaml(t, { extra }), netns: `/run/netns/${lab.vm}` },
        (agent, client) => fn(lab, t, agent, client),
      ));
}

Deno.test({
  name: "api reader: small and large frames arrive intact and in order; stop drains to END",
  ignore: !isRoot(),
  fn: withLabAgent("capture:\n  timeout_ms: 20\n", async (lab, t, agent, client) => {
    const abort = new AbortController();
    const res = await openViaApiReader(t, agent, lab, abort.signal);
    assertEquals(res.status, 200);
    assertEquals(res.header("transfer-encoding"), "chunked");
    const id = res.header("x-pcap-capture-id")!;
    const floods = 3000;
    let sent: Promise<void> | null = null;
    const result = await readStream(res.body!, (f) => {
      if (f.kind !== FrameKind.SOURCE) return;
      // slow marked datagrams (small frames), a flood (large ones), marked again, then stop
      sent = (async () => {
        await sendMarked(lab, 50, 0, 3);
        await flood(lab, floods);
        await sendMarked(lab, 50, 50);
        const r = await fetch(agent.url(`/captures/${id}/stop`), { method: "POST", client });
        assertEquals(r.status, 202);
        await r.body?.cancel();
      })();
    });
    await sent;
    assertEquals(result.kinds.slice(0, 2), ["HELLO", "SOURCE"]);
    assertEquals(result.kinds.slice(-3), ["STATS", "STATUS", "END"]);
    assertEquals(result.json.at(-1)!.type, "CAPTURE_STOPPED");
    const final = assertAccounted(result);
    assertEquals(final.agent_dropped, 0, "a reader that keeps up loses nothing to back-pressure");
    assertEquals(markedSequence(result.packets), Array.from({ length: 100 }, (_, i) => i));
    const seq = floodSequence(result);
    assert(seq.every((s, i) => i === 0 || s > seq[i - 1]), "flood datagrams in order");
    // (not all `floods`: the veth backlog may drop a few before libpcap sees them, uncounted)
    assert(seq.length > 0 && seq.at(-1)! < floods, `flood datagrams captured: ${seq.length}`);
    const biggest = Math.max(...result.frames.map((f) => f.payload.byteLength));
    assert(biggest >= 16 * 1024, `the flood made large frames (largest ${biggest} bytes)`);
    await waitFor(() => agent.server.activeCaptures === 0, 5000, "the capture to end");
    // The large frames went out from the engine's queue itself (framed in its batch room).
    const ended = agent.logs.find((l) => l.msg === "capture ended")!;
    assert((ended.frames_in_place as number) > 0, `frames in place: ${ended.frames_in_place}`);
  }),
});

Deno.test({
  name: "api reader that stops: the agent discards and counts, nothing unaccounted",
  ignore: !isRoot(),
  fn: withLabAgent(
    "buffer:\n  size: 8\n  upper_limit: 6\n  lower_limit: 2\ncapture:\n  timeout_ms: 20\n",
    async (lab, t, agent, client) => {
      const abort = new AbortController();
      const res = await openViaApiReader(t, agent, lab, abort.signal);
      assertEquals(res.status, 200);
      const id = res.header("x-pcap-capture-id")!;
      let flooded = false;
      let stopping = false;
      const result = await readStream(res.body!, async (f, r) => {
        if (f.kind === FrameKind.SOURCE) await probe(lab);
        if (!flooded && r.packets.some((p) => mark(p) === "PCAPPROBE")) {
          flooded = true;
          // Not reading: TCP fills, then the agent's queue, until it discards.
          await flood(lab, 12000);
          await waitFor(
            () => agent.logs.some((l) => l.msg === "client too slow, discarding packets"),
            10_000,
            "the agent to discard packets for the stopped reader (CONGESTED)",
          );
        }
        const cleared = r.json.some((j) =>
          j.type === "CONGESTED" && String(j.text)
            .startsWith("congestion cleared")
        );
        if (cleared && !stopping) {
          stopping = true;
          const s = await fetch(agent.url(`/captures/${id}/stop`), { method: "POST", client });
          await s.body?.cancel();
        }
      });
      assert(flooded, "the probe datagram was never captured, so no flood was sent");
      const final = assertAccounted(result);
      assert((final.agent_dropped as number) > 0, "the agent discarded for the stopped reader");
      const seq = floodSequence(result);
      assert(seq.every((s, i) => i === 0 || s > seq[i - 1]), "what was sent is in order");
      assertEquals(result.kinds.at(-1), "END");
      const ended = agent.logs.find((l) => l.msg === "capture ended")!;
      assertEquals(ended.discarded, final.agent_dropped);
      assert((ended.peak_queued as number) <= 8, `queue peaked at ${ended.peak_queued} frames`);
    },
  ),
});

Deno.test({
  name: "api reader: a disconnect mid-stream releases the capture; a shutdown drains to END",
  ignore: !isRoot(),
  fn: withLabAgent("capture:\n  timeout_ms: 20\n", async (lab, t, agent) => {
    // 1. The reader goes away while packets flow: the agent ends the capture on its own.
    const gone = new AbortController();
    const first = await openViaApiReader(t, agent, lab, gone.signal);
    await readStream(first.body!, async (f) => {
      if (f.kind === FrameKind.SOURCE) await sendMarked(lab, 20);
      return f.kind === FrameKind.PACKETS;
    });
    gone.abort(new Error("test: the api went away"));
    await waitFor(() => agent.server.activeCaptures === 0, 5000, "the capture to be released");
    const ended = agent.logs.find((l) => l.msg === "capture ended")!;
    assertEquals(ended.outcome, "aborted");
    assertEquals(ended.reason, "client disconnected");
    // 2. A shutdown while a stream is open: its reader still gets final STATS, STATUS and END.
    const res = await openViaApiReader(t, agent, lab, new AbortController().signal);
    let shutdown: Promise<void> | null = null;
    const result = await readStream(res.body!, async (f) => {
      if (f.kind !== FrameKind.SOURCE) return;
      await sendMarked(lab, 40);
      shutdown = agent.server.shutdown(5000);
    });
    await shutdown;
    assertEquals(markedSequence(result.packets), Array.from({ length: 40 }, (_, i) => i));
    assertEquals(result.kinds.slice(-3), ["STATS", "STATUS", "END"]);
    assertAccounted(result);
  }),
});

Deno.test("an HTTP/1.0 capture request gets no chunks: the capture is released, the socket closed", () =>
  withPki("agent-writer-10-", (t) =>
    withAgent(t, {}, async (agent) => {
      const conn = await Deno.connectTls({
        hostname: "localhost",
        port: agent.port,
        caCerts: [t.pki.caCert],
        cert: t.client.cert,
        key: t.client.key,
      });
      try {
        const body = startBody();
        await conn.write(new TextEncoder().encode(
          "POST /captures HTTP/1.0\r\nhost: localhost\r\ncontent-type: application/json\r\n" +
            `content-length: ${body.length}\r\n\r\n${body}`,
        ));
        // Read to the close (bounded): raw chunk framing must never reach a 1.0 client.
        let got = "";
        const buf = new Uint8Array(64 * 1024);
        for (;;) {
          const n = await conn.read(buf).catch(() => null);
          if (n === null) break;
          got += dec.decode(buf.subarray(0, n));
          assert(got.length < 64 * 1024, "the agent keeps writing to an HTTP/1.0 client");
        }
        const bodyText = got.slice(got.indexOf("\r\n\r\n") + 4);
        assertEquals(bodyText, "", "no body bytes at all");
        await waitFor(() => agent.server.activeCaptures === 0, 5000, "the capture to be released");
        assert(agent.logs.some((l) =>
          l.msg === "capture stream cannot be written to this connection; closing it"
        ));
      } finally {
        try {
          conn.close();
        } catch {
          /* closed by the agent */
        }
      }
    })));
