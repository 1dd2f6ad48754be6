/** The start timings logged by the api's fan-out and the agent's capture thread (pure). */
import { assert, assertEquals } from "./support/assert.ts";
import { StartTimings } from "../server/fanout_timing.ts";
import { StepClock } from "../agent/engine/open_steps.ts";

Deno.test("fan-out start timings: complete once every source streams or failed", () => {
  const t = new StartTimings(3, 100);
  t.note(0, "tls", 110);
  t.note(0, "response", 140);
  t.note(1, "tls", 120);
  t.note(1, "tls", 190); // only the first time counts
  t.note(1, "response", 150);
  assertEquals(t.complete, false);
  t.note(0, "source", 141);
  t.settle(2); // failed before its handshake
  assertEquals(t.complete, false, "source 1 has not streamed yet");
  t.note(1, "source", 160);
  t.settle(1); // its stream ending later changes nothing
  assertEquals(t.complete, true);
  assertEquals(t.summary(), {
    targets: 3,
    streaming: 2,
    failed: 1,
    tls_ms: [15, 20],
    response_ms: [45, 50],
    source_ms: [51, 60], // median of 41 and 60, rounded
  });
});

Deno.test("fan-out start timings: no step reached leaves it out; zero targets are complete", () => {
  const t = new StartTimings(1, 0);
  t.settle(0);
  assertEquals(t.summary(), { targets: 1, streaming: 0, failed: 1 });
  assertEquals(new StartTimings(0, 0).complete, true);
});

Deno.test("step clock: wall and CPU per step, CPU from the given clock", () => {
  let cpu = 10;
  const clock = new StepClock(() => cpu);
  const until = performance.now() + 5;
  while (performance.now() < until) { /* 5 ms of wall time */ }
  cpu = 12.04;
  clock.mark("a");
  cpu = 12.04;
  clock.mark("b");
  const [wall, used] = clock.steps.a;
  assert(wall >= 5, `wall ${wall}`);
  assertEquals(used, 2);
  assertEquals(clock.steps.b[1], 0, "b starts where a ended");
});
