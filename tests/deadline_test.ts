/** lib/deadline.ts: value when in time, TIMED_OUT when not, rejections passed on, no timer left. */
import { assertEquals, assertRejects } from "./support/assert.ts";
import { deadline, settledWithin, TIMED_OUT } from "../lib/deadline.ts";

Deno.test("deadline: the value when the work settles first", async () => {
  assertEquals(await deadline(Promise.resolve(42), 60_000), 42);
  // A long deadline that was not reached leaves no timer: the test sanitizer would fail.
});

Deno.test("deadline: TIMED_OUT when the work never settles", async () => {
  const never = new Promise<number>(() => {});
  assertEquals(await deadline(never, 1), TIMED_OUT);
  assertEquals(await settledWithin(never, 1), false);
});

Deno.test("deadline: a rejection is passed on; settledWithin counts it as settled", async () => {
  await assertRejects(() => deadline(Promise.reject(new Error("boom")), 60_000), Error, "boom");
  assertEquals(await settledWithin(Promise.reject(new Error("boom")), 60_000), true);
});
