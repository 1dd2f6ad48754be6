// The frame buffer pool of the agent and the client (lib/frame_pool.ts): reuse, its bound, foreign buffers, and
// trim() handing back only what went unused for a whole interval.
import { assert, assertEquals } from "./support/assert.ts";
import { FramePool } from "../lib/frame_pool.ts";

Deno.test("frame pool: a returned buffer is taken again; a too large request gets none", () => {
  const pool = new FramePool(1024, 4);
  const a = pool.take(1000)!;
  assertEquals(a.byteLength, 1024);
  pool.give(a);
  assertEquals(pool.take(10), a);
  assertEquals(pool.take(1025), undefined);
  assertEquals(pool.counts, { taken: 2, fresh: 1 });
});

Deno.test("frame pool: keeps at most `keep` idle buffers, never another size or a duplicate", () => {
  const pool = new FramePool(1024, 2);
  const bufs = [pool.take(1)!, pool.take(1)!, pool.take(1)!];
  for (const b of bufs) pool.give(b);
  assertEquals(pool.idle, 2);
  pool.give(new ArrayBuffer(512));
  pool.give(new SharedArrayBuffer(1024));
  pool.give(bufs[0]);
  assertEquals(pool.idle, 2);
});

Deno.test("frame pool: trim() lets go of what no take() needed, keeps what a burst used", () => {
  const pool = new FramePool(1024, 16);
  // A burst of 8 in flight, all back: 8 idle, none trimmed yet (they were all in use).
  const burst = Array.from({ length: 8 }, () => pool.take(1)!);
  for (const b of burst) pool.give(b);
  assertEquals(pool.trim(), 0);
  assertEquals(pool.idle, 8);
  // Next interval only 3 in flight at once: 5 stayed idle throughout and go.
  for (let round = 0; round < 10; round++) {
    const used = [pool.take(1)!, pool.take(1)!, pool.take(1)!];
    for (const b of used) pool.give(b);
  }
  assertEquals(pool.trim(), 5);
  assertEquals(pool.idle, 3);
  // The ones kept are the ones in use (taken again without allocating).
  const before = pool.counts.fresh;
  const again = [pool.take(1)!, pool.take(1)!, pool.take(1)!];
  assertEquals(pool.counts.fresh, before);
  assert(again.every((b) => burst.includes(b)));
  for (const b of again) pool.give(b);
  // A stream that stopped: everything goes after one idle interval.
  assertEquals(pool.trim(), 0);
  assertEquals(pool.trim(), 3);
  assertEquals(pool.idle, 0);
});
