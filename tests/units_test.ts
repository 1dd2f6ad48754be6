import { parseByteSize, parseDuration } from "../lib/units.ts";
import { assertEquals } from "./support/assert.ts";

Deno.test("durations: seconds, Go-style units, and refusals", () => {
  assertEquals(parseDuration(90), 90_000);
  assertEquals(parseDuration(1.5), 1500);
  assertEquals(parseDuration(0), 0);
  assertEquals(parseDuration("90"), 90_000);
  assertEquals(parseDuration("1h"), 3_600_000);
  assertEquals(parseDuration("1h30m"), 5_400_000);
  assertEquals(parseDuration("1h2m3s"), 3_723_000);
  assertEquals(parseDuration("1500ms"), 1500);
  assertEquals(parseDuration("0.5s"), 500);
  assertEquals(parseDuration("1.5m"), 90_000);
  for (const bad of ["", "soon", "1d", "-5", -1, "-1s", "5 m", "10 s", NaN, Infinity]) {
    assertEquals(parseDuration(bad), null, `should refuse ${bad}`);
  }
});

Deno.test("byte sizes: decimal and binary units, case-insensitive, and refusals", () => {
  assertEquals(parseByteSize(123), 123);
  assertEquals(parseByteSize("1000"), 1000);
  assertEquals(parseByteSize("2k"), 2000);
  assertEquals(parseByteSize("10MB"), 10_000_000);
  assertEquals(parseByteSize("10mb"), 10_000_000);
  assertEquals(parseByteSize("1GB"), 1e9);
  assertEquals(parseByteSize("2 KiB"), 2048);
  assertEquals(parseByteSize("1.5 KiB"), 1536);
  assertEquals(parseByteSize("1GiB"), 1_073_741_824);
  for (const bad of ["12 parsecs", "", "MB", "-1", -1, 1.5, "1e9"]) {
    assertEquals(parseByteSize(bad), null, `should refuse ${bad}`);
  }
});
