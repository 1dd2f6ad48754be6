/**
 * Filters through the real api (issue 12, defect 1): a pathological filter is refused at once
 * while the api keeps serving /health and another user's running capture; a host name is refused
 * without a lookup; a capture over N agents costs two compiles (validation, composition), not
 * 1 + 2N.
 */
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import {
  connect,
  countTokens,
  ROUTERS,
  sourceOf,
  statusesOf,
  withApiLab,
} from "./support/api_harness.ts";
import { FilterCompiler } from "../server/filter_compiler.ts";
import type { FilterChecker } from "../server/filter_compose.ts";
import { MAX_FILTER_BYTES } from "../server/filter_compose.ts";

/** `port 1 or 2 or … or 431`: 431 port terms (libpcap: ~10 s a compile), within the byte bound. */
const PATHOLOGICAL = Array.from({ length: 431 }, (_, i) => i ? `${i + 1}` : "port 1").join(" or ");

Deno.test("api: filters are bounded, compiled off the event loop, twice per capture", async (t) => {
  assert(new TextEncoder().encode(PATHOLOGICAL).length <= MAX_FILTER_BYTES);
  const compiler = new FilterCompiler();
  let compiles = 0;
  const counted: FilterChecker = (f, l, s) => {
    compiles++;
    return compiler.check(f, l, s);
  };
  try {
    await withApiLab({ groups: { router: 2 } }, async (lab, startApi) => {
      const api = await startApi({}, { checkFilter: counted });
      const [r0, r1] = [lab.vm("router", 0), lab.vm("router", 1)];
      const alice = await lab.mintToken({ userName: "alice" });
      const mallory = await lab.mintToken({ userName: "mallory" });
      const client = Deno.createHttpClient({ caCerts: [lab.pki.caCert] });
      const health = async () => {
        const res = await fetch(`${api.url.replace(/^ws/, "http")}/health`, { client });
        return { status: res.status, body: await res.json() };
      };
      try {
        await t.step("two agents: one compile to validate, one for the composition", async () => {
          const c = connect(lab, api.url, alice);
          c.start({ bosh: ROUTERS, filter: "udp port 5561" });
          await c.waitFor("two sources", (r) => r.sources.length === 2);
          assertEquals(compiles, 2);
          c.send({ type: "stop" });
          assertEquals((await c.closed).code, 1000);
        });

        await t.step("pathological filter: refused at once, the api keeps serving", async () => {
          const a = connect(lab, api.url, alice);
          a.start({ bosh: ROUTERS, filter: "udp port 5562" });
          await a.waitFor("alice's two sources", (r) => r.sources.length === 2);
          const before = compiles;
          const m = connect(lab, api.url, mallory);
          m.start({ bosh: ROUTERS, filter: PATHOLOGICAL });
          // While mallory's request is being handled: /health answers and alice's capture
          // carries new packets from both agents.
          const [h, sent] = await Promise.all([
            health(),
            lab.traffic.udp({ from: r0, to: r1, port: 5562, count: 20, rate: 400 }),
          ]);
          assertEquals(h.status, 200);
          assertEquals(h.body.healthy, true);
          const closed = await m.closed;
          assertEquals(closed.code, 1008);
          const refusal = statusesOf(m.got, "INVALID_REQUEST");
          assertEquals(refusal.length, 1, JSON.stringify(m.got.statuses));
          assertMatch(refusal[0].text as string, /too complex.*431 primitives.*simplify/);
          assertEquals(m.got.sources.length, 0);
          assertEquals(compiles, before, "refused by the bound: never compiled");
          await a.waitFor("alice's packets from both agents", (r) =>
            [r0, r1].every((vm) => {
              const got = countTokens(r.tokens.get(sourceOf(r, vm)) ?? []);
              return sent.every((tok) => got.get(tok) === 1);
            }));
          assertEquals(statusesOf(a.got, "INSTANCE_UNAVAILABLE").length, 0);
          a.send({ type: "stop" });
          assertEquals((await a.closed).code, 1000);
          assertEquals(a.got.kinds.at(-1), "END");
        });

        await t.step("host names are refused before any compile (no DNS lookup)", async () => {
          for (const filter of ["host example.com", "udp and src db.internal", "net corp"]) {
            const before = compiles;
            const c = connect(lab, api.url, alice);
            c.start({ bosh: ROUTERS, filter });
            assertEquals((await c.closed).code, 1008, filter);
            const st = statusesOf(c.got, "INVALID_REQUEST");
            assertEquals(st.length, 1, filter);
            assertMatch(st[0].text as string, /use an IP address/, filter);
            assertEquals(compiles, before, `${filter}: never compiled`);
          }
          assertEquals((await health()).status, 200);
        });

        await t.step("within the bound but past the compile deadline: too complex", async () => {
          // A short deadline stands in for a filter the bound lets through that libpcap would
          // still take long over: 64 portranges compile for ~0.3 s on an idle core.
          const slow = new FilterCompiler({ timeoutMs: 100 });
          const api2 = await startApi({}, { checkFilter: slow.check });
          try {
            const a = connect(lab, api.url, alice);
            a.start({ bosh: ROUTERS, filter: "udp port 5563" });
            await a.waitFor("alice's two sources", (r) => r.sources.length === 2);
            const heavy = Array.from({ length: 64 }, (_, i) => `portrange ${i + 1}-${i + 9}`)
              .join(" or ");
            const m = connect(lab, api2.url, mallory);
            m.start({ bosh: ROUTERS, filter: heavy });
            const [h, sent] = await Promise.all([
              health(),
              lab.traffic.udp({ from: r0, to: r1, port: 5563, count: 20, rate: 400 }),
            ]);
            assertEquals(h.status, 200);
            assertEquals((await m.closed).code, 1008);
            const st = statusesOf(m.got, "INVALID_REQUEST");
            assertEquals(st.length, 1, JSON.stringify(m.got.statuses));
            assertMatch(st[0].text as string, /^filter too complex: .*100 ms; simplify it/);
            assertEquals(slow.timeouts, 1);
            await a.waitFor("alice's packets", (r) => {
              const got = countTokens(r.tokens.get(sourceOf(r, r0)) ?? []);
              return sent.every((tok) => got.get(tok) === 1);
            });
            a.send({ type: "stop" });
            assertEquals((await a.closed).code, 1000);
          } finally {
            await api2.close();
            slow.close();
          }
        });
      } finally {
        client.close();
      }
    });
  } finally {
    compiler.close();
  }
});
