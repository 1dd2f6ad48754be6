/** lib/hysteresis.ts: congested at the upper mark, cleared at the lower, bad limits refused. */
import { assertEquals, assertThrows } from "./support/assert.ts";
import { Hysteresis } from "../lib/hysteresis.ts";

Deno.test("hysteresis: congested at upper, stays until lower, then clears", () => {
  const h = new Hysteresis({ size: 10, upperLimit: 8, lowerLimit: 3 });
  const changes = [0, 7, 8, 9, 8, 5, 4, 3, 2, 7, 8].map((level) => [level, h.observe(level)]);
  assertEquals(changes, [
    [0, null],
    [7, null],
    [8, "congested"],
    [9, null],
    [8, null],
    [5, null],
    [4, null],
    [3, "cleared"],
    [2, null],
    [7, null],
    [8, "congested"],
  ]);
  assertEquals(h.congested, true);
});

Deno.test("hysteresis: limits must satisfy lower < upper <= size", () => {
  for (
    const l of [
      { size: 10, upperLimit: 11, lowerLimit: 3 },
      { size: 10, upperLimit: 5, lowerLimit: 5 },
      { size: 10, upperLimit: 5, lowerLimit: 6 },
    ]
  ) {
    assertThrows(() => new Hysteresis(l), RangeError, "lower < upper <= size");
  }
  assertEquals(new Hysteresis({ size: 5, upperLimit: 5, lowerLimit: 0 }).observe(5), "congested");
});
