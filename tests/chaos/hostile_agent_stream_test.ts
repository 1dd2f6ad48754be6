/**
 * Hostile input: a fake agent with lying lengths and counts (tests/chaos/support/lying_agent.ts)
 * feeds the in-process api ~300 seeded cases (≥ 10,000 in the long form). Each capture of the liar
 * must end with a clear INSTANCE_UNAVAILABLE for its source (or, after an END, cleanly: nothing
 * after END is read), no internal error, and the api keeps
 * serving: every 50 cases, and at the end, a capture through a real agent streams its packets.
 */
import { isRoot } from "../../lab/netns.ts";
import { DEFAULT_AGENT_PORT } from "../../lab/lab_agents.ts";
import { assert, assertEquals } from "../support/assert.ts";
import { connect, countTokens, sourceOf, statusesOf, withApiLab } from "../support/api_harness.ts";
import { type Lie, LIES, lyingFrames, startLyingAgent } from "./support/lying_agent.ts";
import { cases, Prng, record } from "./support/chaos.ts";

const root = isRoot();
const N = cases(300, 10_000);

Deno.test({
  name: `hostile: a fake agent lying about lengths and counts (${N} cases)` +
    (root ? "" : " (ignored: needs root)"),
  ignore: !root,
  async fn() {
    await withApiLab({ groups: { router: 2 } }, async (lab, startApi) => {
      let token = await lab.mintToken();
      const [r0, r1] = [lab.vm("router", 0), lab.vm("router", 1)];
      const rnd = crypto.getRandomValues(new Uint8Array(3));
      const addr = `127.${1 + rnd[0] % 250}.${rnd[1]}.${2 + rnd[2] % 250}`;
      const cert = await lab.pki.issue("liar", { server: true, ips: [addr] });
      const liarId = crypto.randomUUID();
      lab.director.deployments.push(
        { name: "liar", instances: [{ job: "liar", index: 0, id: liarId, ips: [addr] }] },
        { name: "real", instances: [{ job: "router", index: 0, id: r0.id, ips: [r0.ip] }] },
      );
      const liar = await startLyingAgent(cert, addr, DEFAULT_AGENT_PORT);
      const api = await startApi({}, { agentIdleTimeoutMs: 3000 });
      const prng = new Prng();
      const tally = new Map<Lie, number>();
      const texts = new Set<string>();
      const stillServes = async (port: number) => {
        const c = connect(lab, api.url, token);
        c.start({ bosh: { deployment: "real", groups: ["router"] }, filter: `udp port ${port}` });
        await c.waitFor("real source", (r) => r.sources.length === 1, 30_000);
        const sent = await lab.traffic.udp({ from: r1, to: r0, port, count: 5 });
        await c.waitFor("real packets", (r) => {
          const got = countTokens(r.tokens.get(sourceOf(r, r0)) ?? []);
          return sent.every((tk) => got.get(tk) === 1);
        }, 30_000);
        c.send({ type: "stop" });
        assertEquals((await c.closed).code, 1000);
      };
      try {
        for (let i = 0; i < N; i++) {
          if (i % 200 === 199) token = await lab.mintToken(); // the long form outlasts a token
          const lie = LIES[i % LIES.length];
          liar.next = lyingFrames(lie, prng);
          const c = connect(lab, api.url, token);
          c.start({ bosh: { deployment: "liar", groups: ["liar"] } });
          const closed = await c.closed;
          const un = statusesOf(c.got, "INSTANCE_UNAVAILABLE");
          const what = `case ${i} (${lie}): close ${closed.code} ${JSON.stringify(c.got.statuses)}`;
          tally.set(lie, (tally.get(lie) ?? 0) + 1);
          if (lie === "end-then-more") {
            // END ends the source; the api reads no further, so what follows cannot matter
            assertEquals([closed.code, un.length], [1000, 0], what);
            continue;
          }
          assertEquals(un.length, 1, what);
          const text = String(un[0].text);
          assert(/liar/.test(`${un[0].origin} ${text}`), what);
          assert(text.length > 10 && !/internal|undefined|\[object/i.test(text), what);
          texts.add(text.replace(/[0-9a-f-]{36}/g, "ID").replace(/\d+/g, "N").slice(0, 140));
          if (i % 50 === 49) await stillServes(5800 + (i % 100));
        }
        await stillServes(5799);
        const health = await lab.fetchLab(`${api.server.url}/health`);
        assertEquals(health.status, 200);
        assertEquals(api.server.metrics.activeCaptures.get({ resolver: "bosh" }), 0);
        record("fake agent lying", {
          inputs: N,
          crashes: 0,
          lies: LIES.length,
          distinctErrors: texts.size,
          starts: liar.starts,
        });
        console.log([...texts].sort().join("\n"));
      } finally {
        await liar.stop();
      }
    });
  },
});
