// The reorder window's release by its sources' progress (cli/source_watermarks.ts): a packet
// goes once every announced source has delivered something newer (by settleMs), and only then;
// a quiet or new source leaves the time bound in charge, an ended one holds nothing back.
import { assert, assertEquals } from "./support/assert.ts";
import { ReorderWindow } from "../cli/reorder_window.ts";
import { indexedBytes } from "../cli/capture_writer.ts";
import { SourceWatermarks } from "../cli/source_watermarks.ts";
import { packetsOf } from "./support/capture_sinks.ts";
import { encodeRecords } from "../protocol/frame_codec.ts";

const MS = 1_000_000n;
const T0 = 1_700_000_000_000_000_000n;

/** One batch of `source`: a packet per timestamp (ms after T0), its data the source's number. */
function batch(source: number, ...tsMs: number[]): Uint8Array {
  return encodeRecords(
    tsMs.map((t) => ({ tsNs: T0 + BigInt(t * 1000) * 1000n, data: new Uint8Array([source]) })),
  );
}

function window(sources: number[], opts = {}) {
  const out: { source: number; ms: number; us: number }[] = [];
  const w = new ReorderWindow((source, b, from, to) => {
    for (const p of packetsOf(source, indexedBytes(b, from, to))) {
      out.push({ source, ms: Number((p.tsNs - T0) / MS), us: Number((p.tsNs - T0) / 1000n) });
    }
  }, { windowMs: 60_000, settleMs: 10, ...opts });
  for (const s of sources) w.expectSource(s);
  return { w, out };
}

Deno.test("source watermarks: the floor is the oldest newest, none while a source is silent", () => {
  const m = new SourceWatermarks();
  assertEquals(m.floor(), undefined, "nothing announced");
  m.expect(3);
  m.expect(7);
  m.advance(3, 1, 10);
  assertEquals(m.floor(), undefined, "source 7 delivered nothing");
  m.advance(7, 0, 99);
  assertEquals(m.floor(), 99n);
  m.advance(7, 0, 50); // never back
  assertEquals(m.floor(), 99n);
  m.advance(7, 2, 0);
  assertEquals(m.floor(), (1n << 32n) | 10n);
  m.advance(9, 0, 1); // not announced: ignored
  assertEquals(m.floor(), (1n << 32n) | 10n);
  m.end(3);
  assertEquals(m.floor(), 2n << 32n);
  m.expect(4);
  assertEquals(m.floor(), undefined, "a new source holds everything back again");
  assertEquals(m.size, 2);
});

Deno.test("reorder by sources: one VM's packets go once it delivered settleMs past them", () => {
  const { w, out } = window([0]);
  w.pushRecords(0, batch(0, 100, 105, 112), 0);
  assertEquals(out.map((p) => p.ms), [100], "105 and 112 wait for 10 ms more (window: 60 s)");
  w.pushRecords(0, batch(0, 130), 1);
  assertEquals(out.map((p) => p.ms), [100, 105, 112]);
  assertEquals(w.size, 1);
  w.flush();
  assertEquals(out.length, 4);
  assertEquals(w.late, 0);
});

Deno.test("reorder by sources: by default one VM's packets wait 1 ms, and a step back is still sorted", () => {
  const { w, out } = window([0], { settleMs: undefined }); // undefined: the default
  const us = () => out.map((p) => p.us);
  w.pushRecords(0, batch(0, 100, 100.5, 101.2), 0);
  assertEquals(us(), [100_000], "up to 1 ms before the newest (101.2 ms) goes");
  // the next batch steps back 0.3 ms (packets stamped on another CPU): still put in order
  w.pushRecords(0, batch(0, 100.9, 102.5), 1);
  assertEquals(us(), [100_000, 100_500, 100_900, 101_200]);
  w.flush();
  assertEquals(out.length, 5);
  assertEquals(w.late, 0);
});

Deno.test("reorder by sources: packets wait for the slowest source, then come out in order", () => {
  const { w, out } = window([0, 1]);
  w.pushRecords(0, batch(0, 100, 200, 300), 0);
  w.pushRecords(0, batch(0, 400), 0);
  assertEquals(out.length, 0, "source 1 has delivered nothing: all wait (the window is 60 s)");
  w.pushRecords(1, batch(1, 150, 250), 1);
  assertEquals(out.map((p) => `${p.source}@${p.ms}`), ["0@100", "1@150", "0@200"], "to 240 ms");
  w.pushRecords(1, batch(1, 350, 500), 2);
  assertEquals(out.map((p) => `${p.source}@${p.ms}`), [
    "0@100",
    "1@150",
    "0@200",
    "1@250",
    "0@300",
    "1@350",
  ]);
  w.endSource(0); // its last packet (400) is in: source 1 alone decides now
  w.tick(3);
  assertEquals(out.map((p) => p.ms).slice(6), [400], "500 waits for 10 ms past it");
  w.flush();
  assertEquals(out.map((p) => p.ms).slice(6), [400, 500]);
  assertEquals(w.late, 0);
});

Deno.test("reorder by sources: a quiet source leaves the time bound in charge", () => {
  const { w, out } = window([0, 1], { windowMs: 500 });
  w.pushRecords(0, batch(0, 100, 200), 0);
  w.pushRecords(0, batch(0, 700), 0);
  assertEquals(out.map((p) => p.ms), [100, 200], "what the 500 ms window lets go, no more");
  w.tick(499); // the capture clock: 700 ms + 499 ms idle
  assertEquals(out.length, 2);
  w.tick(500);
  assertEquals(out.map((p) => p.ms), [100, 200, 700]);
});

Deno.test("reorder by sources: busy interleaved sources stay in order, none late", () => {
  let seed = 11;
  const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  const { w, out } = window([0, 1, 2, 3]);
  // each source's stream in order, its batches delivered with up to 300 ms of lag (in order)
  const next = [0, 0, 0, 0];
  let total = 0;
  for (let step = 0; step < 2000; step++) {
    const s = Math.floor(rand() * 4);
    const ts = Array.from({ length: 1 + Math.floor(rand() * 5) }, () => next[s] += rand() * 3);
    w.pushRecords(s, batch(s, ...ts.map((t) => Math.round(t))), step);
    total += ts.length;
  }
  assert(w.size < total / 2, `held ${w.size} of ${total}: released as sources progressed`);
  w.flush();
  assertEquals(out.length, total);
  for (let i = 1; i < out.length; i++) assert(out[i - 1].ms <= out[i].ms, `order at ${i}`);
  assertEquals(w.late, 0);
});
