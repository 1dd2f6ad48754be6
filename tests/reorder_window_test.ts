import { assert, assertEquals, assertThrows } from "./support/assert.ts";
import { ReorderWindow } from "../cli/reorder_window.ts";
import { indexedBytes } from "../cli/capture_writer.ts";
import { type HeldPacket, packetsOf, pushPacket } from "./support/capture_sinks.ts";
import { DecodeError, encodeRecords } from "../protocol/frame_codec.ts";

const MS = 1_000_000n;
const T0 = 1_700_000_000_000_000_000n;

function pkt(source: number, tsMs: number, tag = 0): HeldPacket {
  return {
    source,
    tsNs: T0 + BigInt(tsMs) * MS,
    caplen: 1,
    origlen: 1,
    data: new Uint8Array([tag]),
  };
}

function collect(opts = {}) {
  const out: HeldPacket[] = [];
  const w = new ReorderWindow(
    (source, b, from, to) => out.push(...packetsOf(source, indexedBytes(b, from, to))),
    opts,
  );
  return { w, out };
}

/** Deterministic PRNG so a failure can be replayed. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
}

Deno.test("reorder: interleaved sources with skewed batches come out in timestamp order", () => {
  const { w, out } = collect({ windowMs: 500 });
  const rand = rng(42);
  // 4 sources, each in order internally, delivered in batches whose arrival lags by up to 300 ms
  const batches: { arriveMs: number; pkts: HeldPacket[] }[] = [];
  for (let s = 0; s < 4; s++) {
    let t = 0;
    while (t < 5000) {
      const pkts: HeldPacket[] = [];
      for (let i = 0; i < 5; i++) {
        t += Math.floor(rand() * 20);
        pkts.push(pkt(s, t));
      }
      batches.push({ arriveMs: t + Math.floor(rand() * 300), pkts });
    }
  }
  batches.sort((a, b) => a.arriveMs - b.arriveMs);
  let total = 0;
  let newest = 0n;
  let newestAt = 0;
  let clock = 0n;
  const advance = (nowMs: number) => {
    const c = newest + BigInt(nowMs - newestAt) * MS;
    if (c > clock) clock = c;
  };
  for (const b of batches) {
    advance(b.arriveMs); // time passed before this batch came
    for (const p of b.pkts) {
      pushPacket(w, p, b.arriveMs);
      if (p.tsNs > newest) [newest, newestAt] = [p.tsNs, b.arriveMs];
    }
    total += b.pkts.length;
    // nothing within the window of the capture clock has been released yet
    advance(b.arriveMs);
    if (out.length > 0) assert(out[out.length - 1].tsNs <= clock - 500n * MS, "released early");
  }
  assert(out.length > 0 && out.length < total, "some released before the end, some still held");
  w.flush();
  assertEquals(out.length, total);
  assertEquals(w.size, 0);
  assertEquals(w.late, 0);
  for (let i = 1; i < out.length; i++) assert(out[i - 1].tsNs <= out[i].tsNs, `order at ${i}`);
  assertEquals(new Set(out.map((p) => p.source)).size, 4);
});

Deno.test("reorder: packets are held for the window, then released in order", () => {
  const { w, out } = collect({ windowMs: 500 });
  pushPacket(w, pkt(0, 1000, 1), 0);
  pushPacket(w, pkt(1, 900, 2), 0);
  assertEquals(out.length, 0);
  pushPacket(w, pkt(0, 1450, 3), 0); // newest 1450: watermark 950 releases 900 only
  assertEquals(out.map((p) => p.data[0]), [2]);
  pushPacket(w, pkt(1, 1600, 4), 0); // watermark 1100 releases 1000
  assertEquals(out.map((p) => p.data[0]), [2, 1]);
  w.flush();
  assertEquals(out.map((p) => p.data[0]), [2, 1, 3, 4]);
});

Deno.test("reorder: equal timestamps keep arrival order", () => {
  const { w, out } = collect();
  for (let i = 0; i < 10; i++) pushPacket(w, pkt(i % 3, 5, i), 0);
  w.flush();
  assertEquals(out.map((p) => p.data[0]), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
});

Deno.test("reorder: tick releases held packets when the capture goes quiet", () => {
  const { w, out } = collect({ windowMs: 500 });
  pushPacket(w, pkt(0, 100), 10_000);
  pushPacket(w, pkt(1, 200), 10_000);
  w.tick(10_200);
  assertEquals(out.length, 0);
  w.tick(10_350); // clock 200 + 350 = 550 ms, watermark 50: nothing yet
  assertEquals(out.length, 0);
  w.tick(10_650); // clock 850, watermark 350: both released
  assertEquals(out.length, 2);
});

Deno.test("reorder: count and byte bounds cap memory", () => {
  const { w, out } = collect({ windowMs: 60_000, maxPackets: 3 });
  for (let i = 10; i > 0; i--) pushPacket(w, pkt(0, i * 10), 0);
  assertEquals(w.size, 3);
  assertEquals(out.length, 7);
  const b = collect({ windowMs: 60_000, maxBytes: 100 });
  for (let i = 0; i < 5; i++) {
    pushPacket(b.w, { ...pkt(0, i), caplen: 40, data: new Uint8Array(40) }, 0);
  }
  assert(b.w.heldBytes <= 100);
  assertEquals(b.w.size, 2);
});

Deno.test("reorder: a packet older than what was released is emitted at once and counted late", () => {
  const { w, out } = collect({ windowMs: 100 });
  pushPacket(w, pkt(0, 1000), 0);
  pushPacket(w, pkt(0, 2000), 0); // releases 1000
  assertEquals(out.length, 1);
  pushPacket(w, pkt(1, 500, 9), 0);
  assertEquals(w.late, 1);
  assertEquals(out[1].data[0], 9);
});

Deno.test("reorder: pushRecords parses wire records without copying", () => {
  const { w, out } = collect({ windowMs: 1 });
  const rec = new Uint8Array(2 * 16 + 3 + 2);
  const v = new DataView(rec.buffer);
  v.setBigUint64(0, T0 + 5n, true);
  v.setUint32(8, 3, true);
  v.setUint32(12, 60, true);
  rec.set([7, 8, 9], 16);
  v.setBigUint64(19, T0 + 2n, true);
  v.setUint32(27, 2, true);
  v.setUint32(31, 2, true);
  rec.set([1, 2], 35);
  assertEquals(w.pushRecords(4, rec, 0).packets, 2);
  w.flush();
  assertEquals(out.map((p) => [p.source, p.tsNs - T0, p.caplen, p.origlen, Array.from(p.data)]), [
    [4, 2n, 2, 2, [1, 2]],
    [4, 5n, 3, 60, [7, 8, 9]],
  ]);
  assert(out[0].data.buffer === rec.buffer);
  assertThrows(() => w.pushRecords(0, rec.subarray(0, 18), 0), DecodeError, "past the end");
});

Deno.test("reorder: batches whose timestamps go back are split into runs; order and bounds hold", () => {
  const rand = rng(7);
  const pushed: HeldPacket[] = [];
  const batches: { source: number; recs: Uint8Array }[] = [];
  for (let k = 0; k < 60; k++) {
    const source = k % 3;
    const pkts = Array.from({ length: 1 + Math.floor(rand() * 12) }, () => ({
      tsNs: T0 + BigInt(Math.floor(rand() * 50)) * MS,
      data: new Uint8Array([pushed.length & 0xff, 0, 0].slice(0, 1 + Math.floor(rand() * 3))),
    }));
    batches.push({ source, recs: encodeRecords(pkts) });
    for (const p of pkts) {
      pushed.push({
        source,
        tsNs: p.tsNs,
        caplen: p.data.length,
        origlen: p.data.length,
        data: p.data,
      });
    }
  }
  // a window wider than every timestamp: the result is the arrival-stable sort by timestamp
  const wide = collect({ windowMs: 60_000 });
  for (const b of batches) wide.w.pushRecords(b.source, b.recs, 0);
  assertEquals(wide.w.size, pushed.length);
  wide.w.flush();
  const sorted = pushed.map((p, i) => ({ p, i })).sort((a, b) =>
    a.p.tsNs < b.p.tsNs ? -1 : a.p.tsNs > b.p.tsNs ? 1 : a.i - b.i
  ).map(({ p }) => [p.source, p.tsNs, Array.from(p.data)]);
  assertEquals(wide.out.map((p) => [p.source, p.tsNs, Array.from(p.data)]), sorted);
  // tight bounds: every packet comes out once, held counts stay bounded, order holds but for late
  const tight = collect({ windowMs: 10, maxPackets: 5, maxBytes: 8 });
  let prev = 0n;
  let late = 0;
  for (const [k, b] of batches.entries()) {
    const before = tight.out.length;
    tight.w.pushRecords(b.source, b.recs, k);
    assert(tight.w.size <= 5 && tight.w.heldBytes <= 8, `bounds after batch ${k}`);
    for (const p of tight.out.slice(before)) {
      if (p.tsNs < prev) late++;
      else prev = p.tsNs;
    }
  }
  tight.w.flush();
  assertEquals(tight.out.length, pushed.length);
  assert(late <= tight.w.late, "only packets counted late leave the order");
});

/** One ~8 MiB message (a frame header, then records) of `n` 1400-byte packets from `t0Ms`. */
function bigMessage(t0Ms: number, n: number, msPerPacket: number) {
  const recs = encodeRecords(Array.from({ length: n }, (_, i) => ({
    tsNs: T0 + BigInt(Math.round((t0Ms + i * msPerPacket) * 1000)) * 1000n,
    data: new Uint8Array(1400).fill(i & 0xff),
  })));
  const message = new Uint8Array(8 + recs.length);
  message.set(recs, 8);
  return message;
}

Deno.test("reorder: a few packets held from big messages do not pin the messages (issue 12 defect 7)", () => {
  const MESSAGES = 4, N = 6000; // 4 x 8.4 MB
  const messages = Array.from({ length: MESSAGES }, (_, k) => bigMessage(k * 1000, N, 1000 / N));
  const out: { buffer: ArrayBufferLike; ts: bigint }[] = [];
  const w = new ReorderWindow((source, b, from, to) => {
    for (const p of packetsOf(source, indexedBytes(b, from, to))) {
      out.push({ buffer: p.data.buffer, ts: p.tsNs });
    }
  }, { windowMs: 5 });
  for (const [k, m] of messages.entries()) {
    // a new message releases all but its last ~5 ms (~30 packets, ~42 KB)
    w.pushRecords(k % 2, m.subarray(8), k);
    assert(w.size > 0 && w.size < 60, `held ${w.size} after message ${k}`);
    assert(w.pinnedBytes <= 4 * (w.heldBytes + 16 * w.size) + 64, `pinned ${w.pinnedBytes}`);
    assert(w.pinnedBytes < 256 * 1024, `message ${k}: ${w.pinnedBytes} bytes pinned`);
  }
  w.flush();
  assertEquals(w.pinnedBytes, 0);
  assertEquals(out.length, MESSAGES * N);
  for (let i = 1; i < out.length; i++) assert(out[i - 1].ts <= out[i].ts, `order at ${i}`);
  // the held tail of each message came out of a copy, not out of the message
  const tails = out.filter((_, i) => i % N >= N - 20);
  assert(tails.every((p) => !messages.some((m) => m.buffer === p.buffer)), "held tails copied");

  // held whole, then mostly released by the clock: the tail left is copied out as it shrinks
  const late: ArrayBufferLike[] = [];
  const w2 = new ReorderWindow(
    (s, b, from, to) =>
      late.push(...packetsOf(s, indexedBytes(b, from, to)).map((p) => p.data.buffer)),
    {
      windowMs: 60_000,
    },
  );
  const m = bigMessage(0, N, 1000 / N);
  w2.pushRecords(0, m.subarray(8), 0);
  assertEquals(w2.size, N);
  assert(w2.pinnedBytes >= m.byteLength, "a whole message held pins it, and is counted");
  w2.tick(59_995); // clock 999 ms + 59 995 ms idle: the watermark passes all but ~5 ms
  assert(w2.size > 0 && w2.size < 60, `held ${w2.size}`);
  assert(w2.pinnedBytes < 256 * 1024, `${w2.pinnedBytes} bytes pinned by the tail`);
  w2.flush();
  assertEquals(late.length, N);
  assert(late.at(-1) !== m.buffer, "the tail was copied out of the message");
});

Deno.test("reorder: a 1-packet view into a 1 MiB message is copied out at once", () => {
  const w = new ReorderWindow(() => {}, { windowMs: 60_000 });
  for (let i = 0; i < 3; i++) {
    const recs = encodeRecords([{ tsNs: T0 + BigInt(i) * MS, data: new Uint8Array(100) }]);
    const message = new Uint8Array(1 << 20);
    message.set(recs, 0);
    w.pushRecords(0, message.subarray(0, recs.length), 0);
    assert(w.pinnedBytes < 1024, `pinned ${w.pinnedBytes} after ${i + 1}`);
  }
});

/** Packet `id` of a pooled-buffer test: its data is the id, so a scribbled-over one shows. */
function idRecords(ids: number[], tsMs: (id: number) => number, pad = 0): Uint8Array {
  const recs = encodeRecords(ids.map((id) => {
    const data = new Uint8Array(4 + pad);
    new DataView(data.buffer).setUint32(0, id);
    return { tsNs: T0 + BigInt(Math.round(tsMs(id) * 1000)) * 1000n, data };
  }));
  const message = new Uint8Array(16 + recs.length); // a message header before the records
  message.set(recs, 16);
  return message.subarray(16);
}

Deno.test("reorder: a batch's buffer is handed back once nothing of it is held; reusing it loses nothing", () => {
  const rand = rng(7);
  const released: ArrayBufferLike[] = [];
  const out: { source: number; id: number; ts: bigint }[] = [];
  const w = new ReorderWindow((source, b, from, to) => {
    for (const p of packetsOf(source, indexedBytes(b, from, to))) {
      out.push({
        source,
        id: new DataView(p.data.buffer, p.data.byteOffset).getUint32(0),
        ts: p.tsNs,
      });
    }
  }, {
    windowMs: 50,
    maxPackets: 400, // small bounds, so that bounds, the clock and compaction all release
    onRelease: (buffer) => {
      assert(!released.includes(buffer), "a buffer handed back twice");
      released.push(buffer);
      new Uint8Array(buffer).fill(0xff); // the caller reuses it at once
    },
  });
  const pushed: ArrayBufferLike[] = [];
  let id = 0, nowMs = 0;
  const ts = new Map<number, number>();
  for (let k = 0; k < 300; k++) {
    const source = k % 3;
    nowMs += Math.floor(rand() * 8);
    // batch sizes from 1 to 200, timestamps up to 80 ms behind the wall clock, some late
    const n = 1 + Math.floor(rand() * 200);
    const base = nowMs - Math.floor(rand() * 80);
    const ids = Array.from({ length: n }, () => id++);
    for (const [i, x] of ids.entries()) ts.set(x, base + i * 0.01);
    const records = idRecords(ids, (x) => ts.get(x)!, Math.floor(rand() * 100));
    pushed.push(records.buffer);
    w.pushRecords(source, records, nowMs);
    if (k % 50 === 49) w.tick(nowMs + 1000);
  }
  w.flush();
  assertEquals(out.length, id, "every packet written once");
  assertEquals(new Set(out.map((p) => p.id)).size, id, "no packet read from a reused buffer");
  for (const p of out) assertEquals(p.ts, T0 + BigInt(Math.round(ts.get(p.id)! * 1000)) * 1000n);
  assertEquals(released.length, pushed.length, "every buffer handed back by the end");
  assert(w.late > 0, "some batches came late (released at once)");
});

Deno.test("reorder: a buffer is handed back when its held tail is copied out, never on a bad batch", () => {
  const released: ArrayBufferLike[] = [];
  const w = new ReorderWindow(() => {}, { windowMs: 5, onRelease: (b) => released.push(b) });
  const m = bigMessage(0, 6000, 1000 / 6000);
  w.pushRecords(0, m.subarray(8), 0); // all but the last ~5 ms released, the tail copied out
  assert(w.size > 0, "a tail is held");
  assertEquals(released, [m.buffer]);
  assertThrows(() => w.pushRecords(0, m.subarray(8, 30), 0), DecodeError);
  assertEquals(released.length, 1, "a malformed batch is not the window's to hand back");
  const one = idRecords([1], () => 2000);
  w.pushRecords(1, one, 0);
  assertEquals(released.length, 1, "held: not handed back");
  w.flush();
  assertEquals(released, [m.buffer, one.buffer]);
});
