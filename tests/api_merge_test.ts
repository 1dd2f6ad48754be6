/**
 * Back-pressure towards the client: the frame tracker and hysteresis of server/merge.ts against
 * a scripted socket, batch truncation, and end to end a client that stops reading while agents
 * capture at full rate (CONGESTED with counts, cleared later, api_dropped in STATS, bounded
 * memory).
 */
import { assert, assertEquals } from "./support/assert.ts";
import {
  API_SOURCE,
  batchBytes,
  ClientMerger,
  FlightTracker,
  truncateBatch,
} from "../server/merge.ts";
import {
  decodeJson,
  decodeSingleFrame,
  encodeRecords,
  FrameKind,
  validatePackets,
} from "../protocol/frame_codec.ts";
import { type RunningApi, startApi, startLab } from "./support/api_harness.ts";
import { PROTOCOL_VERSION } from "../protocol/version.ts";

function batch(n: number, size = 100): Uint8Array {
  const recs = encodeRecords(
    Array.from({ length: n }, (_, i) => ({ tsNs: BigInt(i), data: new Uint8Array(size) })),
  );
  const out = new Uint8Array(4 + recs.length);
  new DataView(out.buffer).setUint32(0, n, true);
  out.set(recs, 4);
  return out;
}

type StatusLike = { type: string; counts?: Record<string, number> } & Record<string, unknown>;

class FakeSocket {
  sent: Uint8Array[] = [];
  bufferedAmount = 0;
  readyState = 1;
  /** set by the merger; a test calls it where the real socket would (a write completed) */
  onWritten: (() => void) | null = null;
  send(d: Uint8Array) {
    this.sent.push(d);
    this.bufferedAmount += d.byteLength;
  }
  /** the peer read `n` bytes */
  drain(n: number) {
    this.bufferedAmount = Math.max(0, this.bufferedAmount - n);
  }
  statuses() {
    return this.sent.map((m) => decodeSingleFrame(m)).filter((f) => f.kind === FrameKind.STATUS)
      .map((f) => ({ source: f.source, ...(decodeJson(f) as StatusLike) }));
  }
}

Deno.test("FlightTracker counts frames still unsent", () => {
  const t = new FlightTracker();
  for (const s of [10, 20, 30]) t.push(s);
  assertEquals(t.update(60), 3);
  assertEquals(t.update(55), 3); // the first is partly unsent
  assertEquals(t.update(50), 2); // the first is sent
  assertEquals(t.update(30), 1);
  assertEquals(t.update(0), 0);
  t.push(5);
  assertEquals(t.update(5), 1);
});

Deno.test("ClientMerger: hysteresis in frames, discards only packets, counts per source", () => {
  const sock = new FakeSocket();
  const merger = new ClientMerger(sock, { size: 10, upperLimit: 4, lowerLimit: 2 });
  try {
    merger.addSource(0, "router/0 (a)");
    merger.addSource(1, "router/1 (b)");
    for (let i = 0; i < 3; i++) assert(merger.packets(0, batch(5), 5));
    assert(!merger.congested);
    assert(merger.packets(1, batch(5), 5)); // 4th unsent frame reaches upper_limit after send
    assert(merger.congested);
    assert(!merger.packets(0, batch(7), 7));
    assert(!merger.packets(1, batch(3), 3));
    merger.stats(0, {
      received: 1,
      dropped: 0,
      if_dropped: 0,
      engine_dropped: 0,
      agent_dropped: 0,
      api_dropped: 0,
      packets: 1,
      bytes: 1,
      final: false,
    });
    // while congested the STATS is held (only the latest per source is kept) ...
    assert(decodeSingleFrame(sock.sent.at(-1)!).kind !== FrameKind.STATS);
    // the peer reads: above lower_limit still congested, at it cleared
    sock.drain(sock.sent[0].byteLength + sock.sent[1].byteLength);
    assert(!merger.packets(0, batch(1), 1));
    sock.drain(sock.bufferedAmount);
    assert(merger.packets(0, batch(1), 1));
    // ... and sent when the congestion clears, with the discards counted up to then
    const stats = sock.sent.map((m) => decodeSingleFrame(m)).filter((f) =>
      f.kind === FrameKind.STATS
    );
    assertEquals(stats.length, 1);
    assertEquals((decodeJson(stats[0]) as { api_dropped: number }).api_dropped, 8);
    const st = sock.statuses();
    assertEquals(st.map((s) => s.type), ["CONGESTED", "CONGESTED"]);
    assertEquals(st[0].source, API_SOURCE);
    assertEquals((st[0].counts as Record<string, number>).buffered_frames, 4);
    assertEquals(st[1].counts, { cleared: 1, api_dropped: 11 });
    assertEquals(merger.dropped(0), 8);
    assertEquals(merger.dropped(1), 3);
  } finally {
    merger.close();
  }
});

Deno.test("ClientMerger: held-back streams are released by the write that drains the client", async () => {
  const sock = new FakeSocket();
  const merger = new ClientMerger(sock, { size: 10, upperLimit: 4, lowerLimit: 2 });
  try {
    for (let i = 0; i < 4; i++) assert(merger.packets(0, batch(5), 5));
    assert(merger.congested && merger.holdsBack);
    let released = false;
    const waiting = merger.released().then(() => released = true);
    const turns = async () => {
      for (let i = 0; i < 5; i++) await Promise.resolve();
    };
    // the client drains, but no write has completed yet: still held (only the timer would look)
    sock.drain(sock.bufferedAmount);
    await turns();
    assert(!released);
    // a completed write: released at once, within these microtask turns, before any timer
    sock.onWritten!();
    await turns();
    assert(released, "released by the write's completion");
    assert(!merger.congested);
    await waiting;
  } finally {
    merger.close();
  }
});

Deno.test("ClientMerger: bytes bound congests before the frame count", () => {
  const sock = new FakeSocket();
  const merger = new ClientMerger(sock, {
    size: 100,
    upperLimit: 90,
    lowerLimit: 50,
    maxBufferedBytes: 10_000,
  });
  try {
    assert(merger.packets(0, batch(80, 100), 80)); // ~10 KB in one frame
    assert(merger.congested);
    assert(!merger.packets(0, batch(1), 1));
    merger.control(new Uint8Array([FrameKind.PING, 0, 0, 0, 0, 0, 0, 0])); // control still flows
    assertEquals(decodeSingleFrame(sock.sent.at(-1)!).kind, FrameKind.PING);
  } finally {
    merger.close();
  }
});

Deno.test("truncateBatch keeps the first packets; batchBytes counts captured bytes", () => {
  const b = batch(5, 10);
  const t = truncateBatch(b, 2);
  assertEquals(validatePackets(t).count, 2);
  assertEquals(batchBytes(t, 2), 20);
  assertEquals(batchBytes(b, 5), 50);
});

// ---------- end to end: a client that stops reading ----------

const enc = new TextEncoder();

function maskedText(text: string): Uint8Array {
  const payload = enc.encode(text);
  const n = payload.length;
  const head = n < 126 ? [0x81, 0x80 | n] : [0x81, 0x80 | 126, n >> 8, n & 0xff];
  const mask = crypto.getRandomValues(new Uint8Array(4));
  const out = new Uint8Array(head.length + 4 + n);
  out.set(head);
  out.set(mask, head.length);
  for (let i = 0; i < n; i++) out[head.length + 4 + i] = payload[i] ^ mask[i % 4];
  return out;
}

/** A WebSocket client over a raw TCP socket, so the test decides when bytes are read. */
class RawWs {
  #buf = new Uint8Array(0);
  messages: Uint8Array[] = [];
  closeCode: number | null = null;
  private constructor(readonly conn: Deno.TcpConn) {}

  static async open(port: number, token: string): Promise<RawWs> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(enc.encode(
      `GET /v1/capture/bosh HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: ${btoa("0123456789abcdef")}\r\n` +
        `Sec-WebSocket-Version: 13\r\nAuthorization: Bearer ${token}\r\n\r\n`,
    ));
    const ws = new RawWs(conn);
    while (true) {
      await ws.#fill();
      const text = new TextDecoder("latin1").decode(ws.#buf);
      const end = text.indexOf("\r\n\r\n");
      if (end >= 0) {
        if (!text.startsWith("HTTP/1.1 101")) throw new Error(`no upgrade: ${text.slice(0, 80)}`);
        ws.#buf = ws.#buf.slice(end + 4);
        return ws;
      }
    }
  }

  async #fill(): Promise<boolean> {
    const chunk = new Uint8Array(256 * 1024);
    const n = await this.conn.read(chunk);
    if (n === null) return false;
    const next = new Uint8Array(this.#buf.length + n);
    next.set(this.#buf);
    next.set(chunk.subarray(0, n), this.#buf.length);
    this.#buf = next;
    return true;
  }

  send(text: string): Promise<number> {
    return this.conn.write(maskedText(text));
  }

  /** Reads frames until `until` holds or the peer closes. */
  async read(until: (ws: RawWs) => boolean): Promise<void> {
    while (!until(this) && this.closeCode === null) {
      this.#parse();
      if (until(this) || this.closeCode !== null) break;
      if (!(await this.#fill())) break;
    }
  }

  #parse(): void {
    while (this.#buf.length >= 2) {
      const op = this.#buf[0] & 0x0f;
      let len = this.#buf[1] & 0x7f;
      let off = 2;
      const v = new DataView(this.#buf.buffer, this.#buf.byteOffset);
      if (len === 126) {
        if (this.#buf.length < 4) return;
        len = v.getUint16(2);
        off = 4;
      } else if (len === 127) {
        if (this.#buf.length < 10) return;
        len = Number(v.getBigUint64(2));
        off = 10;
      }
      if (this.#buf.length < off + len) return;
      const payload = this.#buf.slice(off, off + len);
      this.#buf = this.#buf.slice(off + len);
      if (op === 2) this.messages.push(payload);
      if (op === 8) this.closeCode = payload.length >= 2 ? (payload[0] << 8) | payload[1] : 1005;
    }
  }

  statuses() {
    return this.messages.map((m) => decodeSingleFrame(m)).filter((f) => f.kind === FrameKind.STATUS)
      .map((f) => ({ source: f.source, ...(decodeJson(f) as StatusLike) }));
  }
}

Deno.test("slow client: CONGESTED with counts, cleared later, bounded api memory", async () => {
  const lab = await startLab({ groups: { router: 2 } });
  let api: RunningApi | null = null;
  let ws: RawWs | null = null;
  try {
    api = await startApi(lab, {
      listen: { tls: null },
      buffer: { size: 100, upper_limit: 20, lower_limit: 5 },
    });
    const port = api.server.port;
    ws = await RawWs.open(port, await lab.mintToken());
    await ws.send(JSON.stringify({
      type: "start",
      protocol_version: PROTOCOL_VERSION,
      bosh: { deployment: "cf", groups: ["router"] },
      filter: "udp port 5700",
    }));
    await ws.read((w) => w.messages.filter((m) => m[0] === FrameKind.SOURCE).length === 2);
    const rss0 = Deno.memoryUsage().rss;
    // The client reads nothing while ~40 MB of packets are captured by the two agents.
    const [r0, r1] = [lab.vm("router", 0), lab.vm("router", 1)];
    await lab.traffic.udp({ from: r0, to: r1, port: 5700, count: 15_000, rate: 0, size: 1400 });
    const session = [...api.server.sessions][0];
    const highWater = session.bufferedHighWater;
    const rssGrowth = Deno.memoryUsage().rss - rss0;
    await ws.read((w) => w.statuses().filter((s) => s.type === "CONGESTED").length >= 2);
    await ws.send(JSON.stringify({ type: "stop" }));
    await ws.read(() => false);
    assertEquals(ws.closeCode, 1000);
    const congested = ws.statuses().filter((s) => s.type === "CONGESTED");
    assert(congested.length >= 2, JSON.stringify(ws.statuses()));
    const onset = congested[0].counts as Record<string, number>;
    assert(
      onset.buffered_frames >= 20 || onset.buffered_bytes >= 0.2 * 16 * 1024 * 1024,
      JSON.stringify(onset),
    );
    const cleared = congested.filter((s) => (s.counts as Record<string, number>).cleared === 1);
    const dropped = cleared.reduce(
      (n, s) => n + (s.counts as { api_dropped: number }).api_dropped,
      0,
    );
    type Final = { final: boolean; api_dropped: number; agent_dropped: number };
    const finals = ws.messages.map((m) => decodeSingleFrame(m)).filter((f) =>
      f.kind === FrameKind.STATS
    ).map((f) => decodeJson(f) as Final).filter((s) => s.final);
    assertEquals(finals.length, 2);
    assertEquals(finals.reduce((n, s) => n + s.api_dropped, 0), dropped);
    // The api stops reading the agents while congested, so most of the excess is discarded,
    // and counted, by the agents, before TLS.
    const agentDropped = finals.reduce((n, s) => n + s.agent_dropped, 0);
    assert(dropped + agentDropped > 0, "packets were discarded");
    assert(api.server.metrics.congestion.get({ resolver: "bosh" }) >= 1);
    // Held bytes stay near the buffer bound (16 MiB * 20/100 by bytes, or 20 frames).
    assert(highWater < 24 * 1024 * 1024, `api held ${highWater} bytes for the client`);
    assert(rssGrowth < 150 * 1024 * 1024, `api RSS grew by ${rssGrowth} bytes`);
    console.log(
      `slow client: held at most ${(highWater / 1048576).toFixed(1)} MiB, api discarded ` +
        `${dropped}, agents ${agentDropped} packets, RSS growth ${
          (rssGrowth / 1048576).toFixed(1)
        } MiB`,
    );
  } catch (e) {
    lab.dumpLogs(30);
    throw e;
  } finally {
    try {
      ws?.conn.close();
    } catch { /* closed */ }
    await api?.close();
    await lab.stop();
  }
});

Deno.test("slow client that keeps reading: back-pressure reaches the agents, every packet counted", async () => {
  // Small agent queues, so that an agent the api stops reading discards soon.
  const lab = await startLab({
    groups: { router: 2 },
    agentConfig: { buffer: { size: 8, upper_limit: 4, lower_limit: 1 } },
  });
  let api: RunningApi | null = null;
  let ws: RawWs | null = null;
  try {
    api = await startApi(lab, {
      listen: { tls: null },
      buffer: { size: 100, upper_limit: 20, lower_limit: 5 },
    });
    ws = await RawWs.open(api.server.port, await lab.mintToken());
    await ws.send(JSON.stringify({
      type: "start",
      protocol_version: PROTOCOL_VERSION,
      bosh: { deployment: "cf", groups: ["router"] },
      filter: "udp port 5701",
    }));
    await ws.read((w) => w.messages.filter((m) => m[0] === FrameKind.SOURCE).length === 2);
    const [r0, r1] = [lab.vm("router", 0), lab.vm("router", 1)];
    const sent = 30_000;
    // The client reads slowly but steadily (never stalls) while the agents capture at full rate,
    // until an agent says it discards (its own CONGESTED, forwarded under its source).
    const agentCongested = (w: RawWs) =>
      w.statuses().some((x) => x.type === "CONGESTED" && x.source !== API_SOURCE);
    const traffic = lab.traffic.udp({
      from: r0,
      to: r1,
      port: 5701,
      count: sent,
      rate: 0,
      size: 1400,
    });
    for (const deadline = Date.now() + 60_000; !agentCongested(ws) && ws.closeCode === null;) {
      if (Date.now() > deadline) throw new Error("no agent reported CONGESTED within 60 s");
      const n = ws.messages.length;
      await ws.read((w) => w.messages.length > n);
      await new Promise((r) => setTimeout(r, 50));
    }
    await traffic;
    await ws.send(JSON.stringify({ type: "stop" }));
    await ws.read(() => false);
    assertEquals(ws.closeCode, 1000);
    type Final = {
      final: boolean;
      received: number;
      dropped: number;
      if_dropped: number;
      engine_dropped: number;
      agent_dropped: number;
      api_dropped: number;
      packets: number;
    };
    const frames = ws.messages.map((m) => decodeSingleFrame(m));
    const finals = frames.filter((f) => f.kind === FrameKind.STATS).map((f) =>
      decodeJson(f) as Final
    )
      .filter((s) => s.final);
    assertEquals(finals.length, 2);
    let delivered = 0;
    for (const f of frames) {
      if (f.kind === FrameKind.PACKETS) delivered += validatePackets(f.payload).count;
    }
    const sum = (k: keyof Final) => finals.reduce((n, s) => n + (s[k] as number), 0);
    // Exact accounting: every packet the agents sent reached the client or was discarded (and
    // counted) by the api; what the agents discarded is in their STATS.
    assertEquals(delivered + sum("api_dropped"), sum("packets"));
    // The api holds the agents' streams back (their sockets stop being read), so the agents
    // discard: the excess never crosses TLS.
    assert(sum("agent_dropped") > 0, `the agents discarded nothing: ${JSON.stringify(finals)}`);
    console.log(
      `slow reading client: delivered ${delivered}, agents discarded ${sum("agent_dropped")}, ` +
        `api ${sum("api_dropped")}`,
    );
  } catch (e) {
    lab.dumpLogs(30);
    throw e;
  } finally {
    try {
      ws?.conn.close();
    } catch { /* closed */ }
    await api?.close();
    await lab.stop();
  }
});
