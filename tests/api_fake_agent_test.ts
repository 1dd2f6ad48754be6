/**
 * Agent failures a real agent cannot produce on demand, from a fake agent (tests/support/
 * api_harness.ts) next to a real one in the same capture: a malformed stream, an invalid or
 * too-old HELLO, an agent that goes silent, a stream cut before END. Each must end only the fake's
 * source with INSTANCE_UNAVAILABLE while the real agent's source keeps streaming, and the api
 * keeps serving the next capture.
 */
import { assert, assertEquals, assertMatch } from "./support/assert.ts";
import {
  connect,
  countTokens,
  type FakeAgentMode,
  sourceOf,
  startFakeAgent,
  statusesOf,
  withApiLab,
} from "./support/api_harness.ts";
import { DEFAULT_AGENT_PORT } from "../lab/lab_agents.ts";

/** small, so that the silent agent is given up quickly; real agents send STATS every second */
const AGENT_IDLE_MS = 2500;

const CASES: Array<[FakeAgentMode, RegExp]> = [
  ["malformed", /sent a malformed stream/],
  ["bad-hello", /sent an invalid HELLO/],
  ["old-hello", /speaks protocol v0 but this api needs at least v1; upgrade agent/],
  ["silent", new RegExp(`sent nothing for ${AGENT_IDLE_MS} ms`)],
  ["cut", /closed its stream before the end of the capture/],
];

Deno.test("api: a misbehaving agent fails only its own source", async (t) => {
  await withApiLab({ groups: { router: 2 } }, async (lab, startApi) => {
    const token = await lab.mintToken();
    const [r0, r1] = [lab.vm("router", 0), lab.vm("router", 1)];
    // The api dials every agent on the same port, so the fake takes that port on a loopback
    // address of its own (all of 127/8 is loopback), with a certificate for that address.
    const rnd = crypto.getRandomValues(new Uint8Array(3));
    const addr = `127.${1 + rnd[0] % 250}.${rnd[1]}.${2 + rnd[2] % 250}`;
    const cert = await lab.pki.issue("fake-agent", { server: true, ips: [addr] });
    const fakeId = crypto.randomUUID();
    lab.director.deployments.push({
      name: "mixed",
      instances: [
        { job: "router", index: 0, id: r0.id, ips: [r0.ip] },
        { job: "fake", index: 0, id: fakeId, ips: [addr] },
      ],
    });
    const a = await startApi({}, { agentIdleTimeoutMs: AGENT_IDLE_MS });
    const client = Deno.createHttpClient({ caCerts: [lab.pki.caCert] });
    try {
      for (const [i, [mode, why]] of CASES.entries()) {
        await t.step(`${mode}: INSTANCE_UNAVAILABLE for the fake only`, async () => {
          const fake = await startFakeAgent(cert, {
            mode,
            hostname: addr,
            port: DEFAULT_AGENT_PORT,
          });
          const port = 5610 + i;
          const c = connect(lab, a.url, token);
          try {
            c.start({
              bosh: { deployment: "mixed", groups: ["router", "fake"] },
              filter: `udp port ${port}`,
            });
            await c.waitFor(
              "fake unavailable, real source streaming",
              (r) =>
                statusesOf(r, "INSTANCE_UNAVAILABLE").length > 0 &&
                r.sources.some((x) => (x.instance as { id: string })?.id === r0.id),
            );
            const realSrc = sourceOf(c.got, r0);
            const un = statusesOf(c.got, "INSTANCE_UNAVAILABLE");
            assertEquals(un.length, 1, JSON.stringify(c.got.statuses));
            assert(un[0].source !== realSrc, "the real agent's source was reported unavailable");
            assertMatch(un[0].text as string, why);
            assertMatch(`${un[0].origin} ${un[0].text}`, new RegExp(`fake/0|${fakeId}`));
            assertEquals(fake.starts, 1);
            // the real source still streams every packet, after the fake failed
            const sent = await lab.traffic.udp({ from: r1, to: r0, port, count: 10, rate: 200 });
            await c.waitFor("real packets", (r) => {
              const got = countTokens(r.tokens.get(realSrc) ?? []);
              return sent.every((tk) => got.get(tk) === 1);
            });
            c.send({ type: "stop" });
            assertEquals((await c.closed).code, 1000, JSON.stringify(c.got.statuses));
            assertEquals(statusesOf(c.got, "INSTANCE_UNAVAILABLE").length, 1);
            assertEquals(c.got.stats.filter((s) => s.source === realSrc && s.final).length, 1);
            assertEquals(
              statusesOf(c.got, "CAPTURE_STOPPED").filter((s) => s.source === realSrc)
                .length,
              1,
            );
            // the api keeps serving
            const h = await fetch(`${a.url.replace(/^ws/, "http")}/health`, { client });
            assertEquals(h.status, 200);
            await h.body?.cancel();
          } finally {
            c.close();
            await c.closed;
            await fake.stop();
          }
        });
      }
    } finally {
      client.close();
      lab.director.deployments = lab.director.deployments.filter((d) => d.name !== "mixed");
    }
  });
});
