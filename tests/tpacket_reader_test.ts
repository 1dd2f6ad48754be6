/**
 * The TPACKET_V3 reader's pure parts: its small-packet copy (copySmall, DataView words instead
 * of set(subarray())) copies every length up to SMALL_COPY at every alignment exactly and
 * touches nothing around it; its nap rule (napMs) naps only at high block rates.
 */
import { copySmall, napMs, SMALL_COPY } from "../agent/engine/capture_tpacket_reader.ts";
import { assertEquals } from "./support/assert.ts";

Deno.test("copySmall copies exactly n bytes at any alignment, nothing around them", () => {
  const src = new Uint8Array(256).map((_, i) => (i * 37 + 11) & 255);
  const dst = new Uint8Array(256);
  const sv = new DataView(src.buffer), dv = new DataView(dst.buffer);
  for (let n = 0; n <= SMALL_COPY; n++) {
    for (let s = 0; s < 4; s++) {
      for (let d = 0; d < 4; d++) {
        dst.fill(0xee);
        copySmall(sv, 16 + s, dv, 32 + d, n);
        assertEquals(dst.subarray(32 + d, 32 + d + n), src.subarray(16 + s, 16 + s + n));
        assertEquals(dst[31 + d], 0xee, `byte before, n=${n} s=${s} d=${d}`);
        assertEquals(dst[32 + d + n], 0xee, `byte after, n=${n} s=${s} d=${d}`);
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
