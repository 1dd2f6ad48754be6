/**
 * Chaos: the Cloud Controller misbehaves behind a fault proxy (lab/fault_proxy.ts), end to end
 * through the real api in CF mode, real agents on two Diego cells and the real `pcap-cf` (run
 * in-process with its own cf login). Each fault kind — slower than timeouts.cloud_controller, 500,
 * malformed JSON, a body over the 16 MiB read limit, a redirect to another server — hits once the
 * root document (the UAA discovery the token check needs, the first request of a capture) and
 * once a later endpoint of the capture's lookup (app list, permissions, ssh_enabled, space, org,
 * process stats). Each time pcap-cf exits 1 with a text naming the Cloud Controller, what it did
 * and what to do; the token never reaches the redirect target; no agent capture is started or
 * left; the audit line says CONNECTION_ERROR; and once the fault is cleared the same api captures
 * both of the app's instances again, marked traffic read back from the file with tshark.
 */
import { writeCfConfig } from "../support/cf_uaa.ts";
import { isRoot } from "../../lab/netns.ts";
import { markerTokens, randomMarker } from "../../lab/traffic.ts";
import { type FaultKind, FaultProxy, Recorder } from "../../lab/fault_proxy.ts";
import { runCf } from "../../cli/cf_main.ts";
import type { RunningApi } from "../support/api_harness.ts";
import { ccApp, sendMarks, withCfLab } from "../support/cf_lab.ts";
import { packets } from "../support/capture_readback.ts";
import { assert, assertEquals, assertMatch } from "../support/assert.ts";
import { record, until } from "./support/chaos.ts";

const ORG = { guid: crypto.randomUUID(), name: "acme" };
const SPACE = { guid: crypto.randomUUID(), name: "dev", orgGuid: ORG.guid };
const DEV = crypto.randomUUID();
const APP = crypto.randomUUID();
/** the user name of DEV's token (tests/support/cf_lab.ts) */
const USER = `user-${DEV.slice(0, 8)}`;
/** marks per instance in the capture after each fault */
const K = 4;

interface Case {
  fault: FaultKind;
  /** which CC request fails (the others pass) */
  path: RegExp;
  where: string;
  /** what pcap-cf must say about it */
  text: RegExp;
}

const ROOT = /^\/$/;
const CASES: Case[] = [
  { fault: "slow", path: ROOT, where: "root", text: /did not answer within \d+ ms/ },
  { fault: "status500", path: ROOT, where: "root", text: /answered 500 for the root/ },
  {
    fault: "malformed",
    path: ROOT,
    where: "root",
    text: /answered \/ with a body that is not JSON/,
  },
  { fault: "huge", path: ROOT, where: "root", text: /body too large.*exceeds/ },
  { fault: "redirect", path: ROOT, where: "root", text: /answered with a redirect/ },
  { fault: "slow", path: /\/stats$/, where: "stats", text: /did not answer within \d+ ms/ },
  {
    fault: "status500",
    path: /\/permissions$/,
    where: "permissions",
    text: /answered 500 for app/,
  },
  {
    fault: "malformed",
    path: /\/ssh_enabled$/,
    where: "ssh_enabled",
    text: /answered \/v3\/apps\/[0-9a-f-]+\/ssh_enabled with a body that is not JSON/,
  },
  { fault: "huge", path: /^\/v3\/spaces\//, where: "space", text: /body too large.*exceeds/ },
  {
    fault: "redirect",
    path: /^\/v3\/organizations\//,
    where: "org",
    text: /answered with a redirect/,
  },
  { fault: "redirect", path: /^\/v3\/apps$/, where: "app list", text: /answered with a redirect/ },
];

Deno.test({
  name: "chaos: Cloud Controller faults through the api in CF mode give clear errors; the api " +
    "keeps serving" + (isRoot() ? "" : " (ignored: needs root)"),
  ignore: !isRoot(),
  fn: (t) =>
    withCfLab({
      orgs: [ORG],
      spaces: [SPACE],
      roles: [{ userId: DEV, type: "space_developer", target: SPACE.guid }],
    }, async ({ lab, cells, cc, token, startApi, addContainer }) => {
      const netns = lab.topology.netns;
      const c0 = await addContainer(0, APP, SPACE);
      const c1 = await addContainer(1, APP, SPACE);
      const [v0, v1] = [cells[0].vm, cells[1].vm];
      cc.apps.push(ccApp({ guid: APP, name: "web", spaceGuid: SPACE.guid }, [
        { container: c0, vm: v0 },
        { container: c1, vm: v1 },
      ]));
      const tls = await lab.pki.issue("fault-proxy", { server: true, ips: ["127.0.0.1"] });
      const recorder = await Recorder.start(tls);
      const proxy = await FaultProxy.start({ target: cc.url, targetCa: lab.pki.caCert, tls });
      proxy.slowMs = 8_000;
      proxy.redirectTo = recorder.url;
      const devToken = await token(DEV);
      const home = `${lab.dir}/cc-faults-home`;
      await writeCfConfig(home, {
        Target: proxy.url,
        AuthorizationEndpoint: lab.uaa.url,
        AccessToken: `bearer ${devToken}`,
        RefreshToken: "",
        OrganizationFields: { GUID: ORG.guid, Name: ORG.name },
        SpaceFields: { GUID: SPACE.guid, Name: SPACE.name },
      });
      /** `pcap-cf capture web …` against `api`; resolves with its exit code and stderr. */
      const pcapCf = (api: RunningApi, file: string, extra: string[] = []) => {
        let stderr = "";
        const done = runCf([
          "capture",
          "web",
          "-o",
          file,
          "-u",
          api.server.url,
          "--ca-cert",
          lab.pki.caPath,
          "-f",
          "udp port 7777",
          ...extra,
        ], {
          env: { CF_HOME: home },
          writeErr: (s) => (stderr += s),
          stderrIsTty: false,
          stdoutIsTty: false,
          signals: [],
        }).then((code) => ({ code, stderr }));
        return { done, stderr: () => stderr };
      };
      const active = async (vm: typeof v0) =>
        (await (await lab.fetchAgent(vm, "/health")).json()).active_captures as number;
      const noAgentCapture = () =>
        until("no agent capture left", async () => (await active(v0)) + (await active(v1)) === 0);

      /** After a fault: the same api captures both instances, K marks each, read back by tshark. */
      const capturesAgain = async (api: RunningApi, what: string) => {
        const file = `${lab.dir}/cc-after-${what.replace(/\W+/g, "-")}.pcapng`;
        const run = pcapCf(api, file, ["--max-packets", String(2 * K)]);
        let ended = false;
        run.done.then(() => ended = true);
        // SOURCE frames come once the agents' handles are open: nothing sent after is missed
        await until(
          `${what}: pcap-cf capturing on both instances`,
          () => ended || (run.stderr().match(/capturing on /g) ?? []).length >= 2,
          60_000,
        );
        assert(!ended, `${what}: pcap-cf ended before capturing:\n${run.stderr()}`);
        const mk = [markerTokens(randomMarker(), K), markerTokens(randomMarker(), K)];
        await sendMarks(netns, v0.netns, c0.ip, mk[0]);
        await sendMarks(netns, v1.netns, c1.ip, mk[1]);
        let timer: ReturnType<typeof setTimeout> | undefined;
        const timeout = new Promise<{ code: number; stderr: string }>((resolve) => {
          timer = setTimeout(() => resolve({ code: -1, stderr: run.stderr() }), 60_000);
        });
        const r = await Promise.race([run.done, timeout]).finally(() => clearTimeout(timer));
        assertEquals(r.code, 0, `${what}: pcap-cf after the fault:\n${r.stderr}`);
        const pkts = await packets(file);
        for (const [i, c] of [[0, c0], [1, c1]] as const) {
          const got = pkts.filter((p) => p.iface.includes(c.handle)).flatMap((p) => p.tokens);
          assertEquals(got.sort(), [...mk[i]].sort(), `${what}: marks of instance ${i}`);
        }
        assertEquals(pkts.length, 2 * K, `${what}: only the marks`);
        await noAgentCapture();
        const line = await until(
          `${what}: the capture's audit line`,
          () => api.audit.find((a) => a.outcome !== "CONNECTION_ERROR"),
        );
        assertEquals([line.user, line.outcome, line.packets], [USER, "CAPTURE_STOPPED", 2 * K]);
      };

      const seen: Record<string, string> = {};
      try {
        for (const c of CASES) {
          const name = `${c.fault} on ${c.where}`;
          await t.step(name, async () => {
            const api = await startApi({
              cf: { api_url: proxy.url },
              timeouts: { cloud_controller: "2s" },
            });
            try {
              const hitsBefore = proxy.seen.filter((s) => c.path.test(s.path)).length;
              proxy.match = c.path;
              proxy.fault = c.fault;
              const file = `${lab.dir}/cc-${c.fault}-${c.where.replace(/\W+/g, "-")}.pcapng`;
              const r = await pcapCf(api, file).done;
              proxy.fault = "pass";
              assertEquals(r.code, 1, `${name}: pcap-cf must fail:\n${r.stderr}`);
              assert(
                proxy.seen.filter((s) => c.path.test(s.path)).length > hitsBefore,
                `${name}: the faulty endpoint was never asked: ${JSON.stringify(proxy.seen)}`,
              );
              assertMatch(r.stderr, /the Cloud Controller at https:\/\/127\.0\.0\.1:\d+/);
              assertMatch(r.stderr, c.text);
              assertMatch(r.stderr, /check|retry|raise|set cf\.api_url/);
              assert(!r.stderr.includes(devToken), `${name}: the token leaked into the output`);
              seen[name] = r.stderr.trim().split("\n").at(-1)!.slice(0, 200);
              assertEquals(
                recorder.seen.filter((s) => s.authorization),
                [],
                `${name}: the redirect target received an Authorization header`,
              );
              // the refusal is audited: before a verified identity (root, at the token check)
              // aggregated as unauthenticated, after it with the user
              const line = await until(
                `${name}: the refusal's audit line`,
                () => api.audit.find((a) => a.outcome === "CONNECTION_ERROR"),
              );
              assertMatch(String(line.detail), /Cloud Controller/);
              assertEquals(
                api.audit.filter((a) => a.outcome === "CONNECTION_ERROR").length,
                1,
                `${name}: one audit line for the refusal: ${JSON.stringify(api.audit)}`,
              );
              assertEquals(line.user, c.where === "root" ? "(unauthenticated)" : USER);
              const left = await Deno.stat(file).then(() => true, () => false);
              assert(!left, `${name}: pcap-cf left an output file after the refusal`);
              await noAgentCapture();
              const health = await lab.fetchLab(`${api.server.url}/health`);
              assertEquals(health.status, 200, await health.text());
              await capturesAgain(api, name);
            } finally {
              proxy.fault = "pass";
              await api.close();
            }
          });
        }
        assertEquals(recorder.seen.filter((r) => r.authorization).length, 0);
        record("cloud controller faults", {
          faults: CASES.length,
          crashes: 0,
          redirectTargetRequests: recorder.seen.length,
          redirectTargetAuthorization: 0,
          texts: seen,
        });
      } finally {
        await proxy.stop();
        await recorder.stop();
      }
    }),
});
