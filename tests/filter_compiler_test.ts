/**
 * The api's filter compiler (server/filter_compiler.ts) with real libpcap in real Workers: a
 * slow compile leaves the event loop free and ends at its deadline as too complex, its worker
 * terminated and replaced; queued compiles are served; workers are pre-warmed and reused; close
 * answers what is pending. And how the api uses it (validateUserFilter, planTargets): a capture
 * over N targets costs two compiles, the deadline becomes INVALID_REQUEST "filter too complex",
 * and a refused host name is never compiled.
 */
import { FilterCompiler } from "../server/filter_compiler.ts";
import { type FilterChecker, validateUserFilter } from "../server/filter_compose.ts";
import { planTargets } from "../server/capture_plan.ts";
import { ApiError } from "../server/errors.ts";
import { assert, assertEquals, assertMatch } from "./support/assert.ts";

/** Far beyond the rules' bound (they are not applied by the compiler itself): seconds to compile. */
const SLOW = Array.from({ length: 300 }, (_, i) => `port ${i + 1}`).join(" or ");
/** Within the bound, yet ~0.3 s to compile on an idle core. */
const HEAVY = Array.from({ length: 64 }, (_, i) => `portrange ${i + 1}-${i + 9}`).join(" or ");

Deno.test("filter compiler: a slow compile leaves the event loop free and ends at the deadline", async () => {
  const compiler = new FilterCompiler();
  try {
    let ticks = 0;
    let done = false;
    const timer = setInterval(() => ticks += done ? 0 : 1, 10);
    const r = await compiler.check(SLOW).finally(() => {
      done = true;
      clearInterval(timer);
    });
    assert(!r.ok && r.tooComplex, JSON.stringify(r));
    assertMatch(r.error, /did not finish compiling it within 1000 ms/);
    // A compile on the main thread would have kept every timer from firing until it returned.
    assert(ticks > 0, "the event loop ran while the filter compiled");
    assertEquals(compiler.timeouts, 1);
    // The stuck worker was terminated and replaced; the compiler still answers.
    assert(compiler.workersStarted >= 2, `workers started: ${compiler.workersStarted}`);
    assert(compiler.workers <= 2);
    assertEquals(await compiler.check("tcp port 443"), { ok: true });
    const bad = await compiler.check("tcp port");
    assert(!bad.ok && !bad.tooComplex && /syntax error/.test(bad.error), JSON.stringify(bad));
    assertEquals((await compiler.check("ip6", 1, 128)).ok, true);
  } finally {
    compiler.close();
  }
});

Deno.test("filter compiler: a compile queued behind a stuck one gets the replacement worker", async () => {
  const compiler = new FilterCompiler({ maxWorkers: 1, timeoutMs: 300 });
  try {
    const order: string[] = [];
    const slow = compiler.check(SLOW).then((r) => (order.push("slow"), r));
    const fast = compiler.check("udp port 53").then((r) => (order.push("fast"), r));
    const [s, f] = await Promise.all([slow, fast]);
    assert(!s.ok && s.tooComplex);
    assertEquals(f, { ok: true });
    assertEquals(order, ["slow", "fast"], "one worker: the queued compile ran after the deadline");
    assertEquals(compiler.workers, 1);
  } finally {
    compiler.close();
  }
});

Deno.test("filter compiler: pre-warmed and reused; keepIdle 0 keeps no thread", async () => {
  const warm = new FilterCompiler();
  try {
    assertEquals(warm.workers, 1, "one worker loads before the first compile");
    for (const f of ["tcp", "udp", "icmp"]) assertEquals(await warm.check(f), { ok: true });
    assertEquals(warm.workersStarted, 1, "the same worker served every compile");
    assertEquals(warm.workers, 1);
  } finally {
    warm.close();
  }
  const cold = new FilterCompiler({ keepIdle: 0 });
  try {
    assertEquals(cold.workers, 0);
    assertEquals(await cold.check("tcp"), { ok: true });
    assertEquals(cold.workers, 0, "no worker outlives its compile");
  } finally {
    cold.close();
  }
});

Deno.test("filter compiler: close answers pending and later compiles as unavailable", async () => {
  const compiler = new FilterCompiler();
  const pending = compiler.check(SLOW);
  compiler.close();
  const r = await pending;
  assert(!r.ok && r.unavailable, JSON.stringify(r));
  const later = await compiler.check("tcp");
  assert(!later.ok && later.unavailable, JSON.stringify(later));
  assertEquals(compiler.workers, 0);
});

async function refusedWith(p: Promise<unknown>, re: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert(e instanceof ApiError, String(e));
    assertEquals(e.kind, "INVALID_REQUEST");
    assertMatch(e.message, re);
    return;
  }
  throw new Error("expected INVALID_REQUEST");
}

Deno.test("filters at the api: two compiles for N targets, not 1 + 2N", async () => {
  const compiler = new FilterCompiler();
  try {
    const seen: string[] = [];
    const check: FilterChecker = (f, l, s) => (seen.push(f), compiler.check(f, l, s));
    const targets = Array.from({ length: 5 }, (_, i) => ({
      address: `198.18.${i}.2`,
      port: 9494 + i,
      origin: `router/${i}`,
    }));
    const user = await validateUserFilter("  udp   port 53 ", { check });
    const plan = await planTargets({ targets, skipped: [] }, user, check);
    assertEquals(seen.length, 2, seen.join(" | "));
    assertEquals(seen[0], "udp port 53");
    // Every agent still gets its own exclusion.
    plan.targets.forEach((t, i) => {
      assertEquals(
        t.filter,
        `(not (host 198.18.${i}.2 and tcp port ${9494 + i})) and (udp port 53)`,
      );
    });
    // Host names and pathological filters never reach the compiler.
    const before = seen.length;
    await refusedWith(validateUserFilter("host example.com", { check }), /use an IP address/);
    await refusedWith(
      validateUserFilter(
        Array.from({ length: 431 }, (_, i) => i ? `${i + 1}` : "port 1").join(" or "),
        {
          check,
        },
      ),
      /too complex: it has 431 primitives/,
    );
    assertEquals(seen.length, before);
  } finally {
    compiler.close();
  }
});

Deno.test("filters at the api: past the compile deadline is INVALID_REQUEST filter too complex", async () => {
  const compiler = new FilterCompiler({ timeoutMs: 100 });
  try {
    await refusedWith(
      validateUserFilter(HEAVY, { check: compiler.check }),
      /^filter too complex: libpcap did not finish compiling it within 100 ms; simplify it/,
    );
    assertEquals(compiler.timeouts, 1);
  } finally {
    compiler.close();
  }
});
