/**
 * The TPACKET_V3 reader's pure parts: the view spanning the kernel ring and the engine queue
 * (spanning) copies every length at every alignment exactly between two separate buffers,
 * whichever lies lower in memory, and touches nothing around it; its nap rule (napMs) naps only
 * at high block rates.
 */
import { napMs, spanning } from "../agent/engine/capture_tpacket_reader.ts";
import { assert, assertEquals } from "./support/assert.ts";

Deno.test("spanning: one copyWithin copies exactly n bytes between two buffers, nothing around", () => {
  const first = new Uint8Array(4096).map((_, i) => (i * 37 + 11) & 255);
  const second = new Uint8Array(8192);
  for (const [src, dst] of [[first, second], [second, first]]) {
    src.forEach((_, i) => src[i] = (i * 37 + 11) & 255);
    const { u8, a, b } = spanning(src, dst);
    assert(u8.length >= src.length + dst.length, `a view of ${u8.length} bytes covers both`);
    assertEquals(u8[a + 100], src[100]);
    for (const n of [0, 1, 3, 4, 5, 63, 64, 96, 97, 128, 1514, 4000]) {
      for (let s = 0; s < 4; s++) {
        for (let d = 0; d < 4; d++) {
          dst.fill(0xee);
          u8.copyWithin(b + 32 + d, a + s, a + s + n);
          assertEquals(dst.subarray(32 + d, 32 + d + n), src.subarray(s, s + n));
          assertEquals(dst[31 + d], 0xee, `byte before, n=${n} s=${s} d=${d}`);
          assertEquals(dst[32 + d + n], 0xee, `byte after, n=${n} s=${s} d=${d}`);
        }
      }
    }
  }
});

Deno.test("napMs: naps only when full blocks come fast, for a few of their intervals", () => {
  assertEquals(napMs(Infinity), 0);
  assertEquals(napMs(NaN), 0);
  assertEquals(napMs(9), 0); // blocks this far apart: a nap would only add a wake-up
  assertEquals(napMs(8), 0);
  assertEquals(napMs(5), 8); // 64 B at ~300 kpps: capped
  assertEquals(napMs(2.5), 8); // 64 B at ~600 kpps: three blocks per wake-up
  assertEquals(napMs(1.2), 4);
  assertEquals(napMs(0.8), 2);
  assertEquals(napMs(0.05), 1); // at least 1 ms (poll's resolution)
});
