/**
 * Chaos: the Director and the UAA misbehave behind a fault proxy (lab/fault_proxy.ts) — slower
 * than the api's timeout, 500, malformed JSON, a body far over the api's read limit, a redirect to
 * another server. Each time the user gets a clear error naming the upstream, the bearer token never
 * reaches the redirect target, and the api keeps serving: once the fault is gone the same api
 * captures again. The Cloud Controller's faults, end to end through the api in CF mode and
 * pcap-cf, are in cc_faults_test.ts.
 */
import { isRoot } from "../../lab/netns.ts";
import { type FaultKind, FaultProxy, Recorder } from "../../lab/fault_proxy.ts";
import { assert, assertEquals, assertMatch } from "../support/assert.ts";
import {
  connect,
  ROUTERS,
  type RunningApi,
  startApi,
  statusesOf,
  withApiLab,
} from "../support/api_harness.ts";
import { LONG, record, until } from "./support/chaos.ts";
import { rawUpgrade } from "../support/raw_upgrade.ts";

const root = isRoot();

interface Case {
  upstream: "director" | "uaa";
  fault: FaultKind;
  /** status type and text the user must see */
  type: RegExp;
  text: RegExp;
}

const CASES: Case[] = [
  { upstream: "director", fault: "slow", type: /CONNECTION_ERROR/, text: /did not answer within/ },
  { upstream: "director", fault: "status500", type: /CONNECTION_ERROR/, text: /500/ },
  { upstream: "director", fault: "malformed", type: /CONNECTION_ERROR/, text: /not JSON/ },
  {
    upstream: "director",
    fault: "huge",
    type: /CONNECTION_ERROR/,
    text: /body too large.*exceeds/,
  },
  // answered, so not "cannot reach … check the network" (fixed in server/director_client.ts)
  {
    upstream: "director",
    fault: "redirect",
    type: /CONNECTION_ERROR/,
    text: /answered with a redirect/,
  },
  { upstream: "uaa", fault: "slow", type: /CONNECTION_ERROR/, text: /token keys.*no answer/ },
  { upstream: "uaa", fault: "status500", type: /CONNECTION_ERROR/, text: /token keys.*500/ },
  { upstream: "uaa", fault: "malformed", type: /CONNECTION_ERROR/, text: /token keys/ },
  { upstream: "uaa", fault: "huge", type: /CONNECTION_ERROR/, text: /token keys.*exceeds/ },
  { upstream: "uaa", fault: "redirect", type: /CONNECTION_ERROR/, text: /token keys.*redirect/i },
];

Deno.test({
  name: "chaos: Director and UAA faults give clear errors; the api keeps serving" +
    (root ? "" : " (ignored: needs root)"),
  ignore: !root,
  async fn(t) {
    await withApiLab({ groups: { router: 1 } }, async (lab) => {
      const tls = await lab.pki.issue("fault-proxy", { server: true, ips: ["127.0.0.1"] });
      const recorder = await Recorder.start(tls);
      const uaa = await FaultProxy.start({
        target: lab.uaa.url,
        targetCa: lab.pki.caCert,
        tls,
      });
      const director = await FaultProxy.start({
        target: lab.director.url,
        targetCa: lab.pki.caCert,
        tls,
        // the api must fetch keys from the UAA the Director names: name the UAA's proxy
        rewrite: (_path, body) => body.replaceAll(lab.uaa.url, uaa.url),
      });
      // issued by the UAA the api is told about (the proxy), so that `iss` matches it
      const token = await lab.mintToken({ extra: { iss: `${uaa.url}/oauth/token` } });
      const serves = (api: RunningApi, what: string) =>
        until(
          `api serves again after ${what}`,
          async () => {
            const ok = connect(lab, api.url, token);
            ok.start({ bosh: ROUTERS });
            try {
              await ok.waitFor("source", (r) => r.sources.length === 1, 10_000);
            } catch {
              ok.close();
              await ok.closed;
              return false;
            }
            ok.send({ type: "stop" });
            return (await ok.closed).code === 1000;
          },
          60_000,
          1_000,
        );
      // a failed key fetch is replayed for the verifier's refetch interval (30 s): those apis are
      // checked together at the end
      const replaying: Array<{ api: RunningApi; what: string }> = [];
      const seen: Record<string, string> = {};
      try {
        for (const c of CASES) {
          await t.step(`${c.upstream} ${c.fault}`, async () => {
            const api = await startApi(lab, {
              bosh: { director_url: director.url },
              timeouts: { director: "1s", uaa: "1s" },
            });
            const proxy = c.upstream === "director" ? director : uaa;
            let keep = false;
            try {
              proxy.match = c.upstream === "director" ? /^\/deployments\// : /token_keys/;
              proxy.slowMs = 4_000;
              proxy.redirectTo = recorder.url;
              proxy.fault = c.fault;
              let st: Record<string, unknown>;
              if (c.upstream === "uaa") {
                // the token is verified at the upgrade: an unusable UAA is a 502 there, no socket
                const answer = await rawUpgrade(
                  `${api.url}/v1/capture/bosh`,
                  { authorization: `Bearer ${token}` },
                  lab.pki.caCert,
                );
                assertEquals(answer.status, 502, answer.body);
                st = JSON.parse(answer.body);
                assert(c.type.test(String(st.type)), `no ${c.type} answer: ${answer.body}`);
              } else {
                const ws = connect(lab, api.url, token);
                ws.start({ bosh: ROUTERS });
                const closed = await ws.closed;
                assertEquals(closed.code, 1008, JSON.stringify(ws.got.statuses));
                const found = ws.got.statuses.find((s) => c.type.test(String(s.type)));
                assert(found, `no ${c.type} status: ${JSON.stringify(ws.got.statuses)}`);
                st = found;
                assertEquals(statusesOf(ws.got, "CAPTURE_STOPPED").length, 0);
              }
              assertMatch(String(st.text), c.text);
              assertMatch(String(st.text), c.upstream === "director" ? /Director/ : /UAA|token/);
              seen[`${c.upstream} ${c.fault}`] = String(st.text).slice(0, 160);
              assert(!String(st.text).includes(token), "the token leaked into a status text");
              assert(
                recorder.seen.every((r) => !r.authorization),
                `the redirect target received an Authorization header: ${
                  JSON.stringify(recorder.seen)
                }`,
              );
              proxy.fault = "pass";
              const health = await lab.fetchLab(`${api.server.url}/health`);
              assertEquals(health.status, 200, await health.text());
              if (c.upstream === "uaa") {
                replaying.push({ api, what: `uaa ${c.fault}` });
                keep = true;
              } else {
                await serves(api, `director ${c.fault}`);
              }
            } finally {
              proxy.fault = "pass";
              if (!keep) await api.close();
            }
          });
        }
        // the replay lasts the refetch interval (30 s): waiting it out is for the long form
        await t.step({
          name: "after the UAA faults: each of those apis serves again",
          ignore: !LONG,
          fn: async () => {
            try {
              await Promise.all(replaying.map((r) => serves(r.api, r.what)));
            } finally {
              await Promise.all(replaying.map((r) => r.api.close()));
            }
          },
        });
        if (!LONG) await Promise.all(replaying.map((r) => r.api.close()));
        assertEquals(recorder.seen.filter((r) => r.authorization).length, 0);
        record("director and uaa faults", {
          faults: CASES.length,
          crashes: 0,
          redirectTargetRequests: recorder.seen.length,
          redirectTargetAuthorization: 0,
          texts: seen,
        });
      } finally {
        await director.stop();
        await uaa.stop();
        await recorder.stop();
      }
    });
  },
});
