/** lib/config_schema.ts: one duration/size message for agent and api, bounds enforced. */
import { assert, assertEquals, assertStringIncludes } from "./support/assert.ts";
import { byteSize, durationMs, positiveDurationMs } from "../lib/config_schema.ts";

Deno.test("config schema: durations in seconds or units, one message, 7-day bound", () => {
  assertEquals(durationMs.parse("1h30m"), 5_400_000);
  assertEquals(durationMs.parse(2.5), 2500);
  assertEquals(durationMs.parse(0), 0);
  const bad = durationMs.safeParse("soon");
  assert(!bad.success);
  assertStringIncludes(bad.error.issues[0].message, 'invalid duration "soon": not a duration');
  const long = durationMs.safeParse("169h");
  assert(!long.success);
  assertStringIncludes(long.error.issues[0].message, "longer than 7 days");
  const zero = positiveDurationMs.safeParse("0s");
  assert(!zero.success);
  assertEquals(zero.error.issues[0].message, "must be > 0");
});

Deno.test("config schema: byte sizes", () => {
  assertEquals(byteSize.parse("512MiB"), 512 * 2 ** 20);
  const bad = byteSize.safeParse("lots");
  assert(!bad.success);
  assertStringIncludes(bad.error.issues[0].message, 'invalid size "lots"');
});
