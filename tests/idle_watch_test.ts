/** lib/idle_watch.ts: silence is reported once; touches, holding and stop() hold it off. */
import { IdleWatch } from "../lib/idle_watch.ts";
import { assertEquals } from "./support/assert.ts";

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await pause(5);
  }
}

Deno.test("IdleWatch: silence is reported once", async () => {
  let n = 0;
  const w = new IdleWatch(20, () => n++);
  await until(() => n > 0, "the idle report");
  await pause(100);
  assertEquals(n, 1, "reported once");
  w.stop();
});

Deno.test("IdleWatch: while held nothing is reported; after, silence is", async () => {
  let n = 0, held = true;
  const w = new IdleWatch(20, () => n++, () => held);
  await pause(150); // several intervals, each one held
  assertEquals(n, 0, "held: not idle");
  held = false;
  await until(() => n > 0, "the idle report once released");
  w.stop();
});

Deno.test("IdleWatch: a touch counts as heard, stop() and a zero timeout never report", async () => {
  let n = 0;
  const w = new IdleWatch(60_000, () => n++);
  w.touch();
  w.stop();
  const never = new IdleWatch(0, () => n++);
  never.touch();
  const stopped = new IdleWatch(10, () => n++);
  stopped.stop();
  await pause(100);
  assertEquals(n, 0);
});
