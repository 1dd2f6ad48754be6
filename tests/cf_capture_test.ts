// End to end through the real api and its CF resolver: CC simulator on TLS, lab UAA tokens, real
// agents on two Diego cell VMs capturing inside app containers. A space developer captures two of
// an app's three instances with marked traffic sent into every container, another app's
// container and the cells' own eth0; each instance's marks arrive once on its own source and
// nothing else does. Other roles and a disabled SSH are refused through the api with the texts
// docs/cf.md names; a crashed instance is reported while the others are captured.
import { isRoot } from "../lab/netns.ts";
import { markerTokens, randomMarker } from "../lab/traffic.ts";
import { connect, countTokens, statusesOf } from "./support/api_harness.ts";
import { ccApp, cfStart, refusal, sendMarks, withCfLab } from "./support/cf_lab.ts";
import { assert, assertEquals, assertStringIncludes } from "./support/assert.ts";

const ORG = { guid: crypto.randomUUID(), name: "acme" };
const SPACE = { guid: crypto.randomUUID(), name: "dev", orgGuid: ORG.guid };
const LOCKED = { guid: crypto.randomUUID(), name: "locked", orgGuid: ORG.guid, allowSsh: false };
const U = {
  dev: crypto.randomUUID(),
  auditor: crypto.randomUUID(),
  supporter: crypto.randomUUID(),
  manager: crypto.randomUUID(),
  orgManager: crypto.randomUUID(),
  nobody: crypto.randomUUID(),
};
const N = 20;

const send = sendMarks;

Deno.test({
  name: "cf capture via the api: 2 of 3 instances, own marks only; roles, SSH, odd instances",
  ignore: !isRoot(),
  fn: () =>
    withCfLab({
      orgs: [ORG],
      spaces: [SPACE, LOCKED],
      roles: [
        { userId: U.dev, type: "space_developer", target: SPACE.guid },
        { userId: U.dev, type: "space_developer", target: LOCKED.guid },
        { userId: U.auditor, type: "space_auditor", target: SPACE.guid },
        { userId: U.supporter, type: "space_supporter", target: SPACE.guid },
        { userId: U.manager, type: "space_manager", target: SPACE.guid },
        { userId: U.orgManager, type: "org_manager", target: ORG.guid },
      ],
    }, async ({ lab, cells, cc, token, startApi, addContainer }) => {
      const netns = lab.topology.netns;
      const APP = crypto.randomUUID();
      const OTHER = crypto.randomUUID();
      const QUIET = crypto.randomUUID();
      const qc0 = await addContainer(1, QUIET, SPACE);
      // Instances 0 and 2 on cell 0, 1 on cell 1; another app's container on cell 0.
      const c0 = await addContainer(0, APP, SPACE);
      const c1 = await addContainer(1, APP, SPACE);
      const c2 = await addContainer(0, APP, SPACE);
      const theirs = await addContainer(0, OTHER, SPACE);
      const FLAKY = crypto.randomUUID();
      const fc0 = await addContainer(1, FLAKY, SPACE);
      const [v0, v1] = [cells[0].vm, cells[1].vm];
      const web = ccApp({ guid: APP, name: "web", spaceGuid: SPACE.guid }, [
        { container: c0, vm: v0 },
        { container: c1, vm: v1 },
        { container: c2, vm: v0 },
      ]);
      const other = ccApp({ guid: OTHER, name: "other", spaceGuid: SPACE.guid }, [
        { container: theirs, vm: v0 },
      ]);
      const quiet = ccApp(
        { guid: QUIET, name: "quiet", spaceGuid: SPACE.guid, sshEnabled: false },
        [{ container: qc0, vm: v1 }],
      );
      const vault = ccApp({ guid: crypto.randomUUID(), name: "vault", spaceGuid: LOCKED.guid }, [
        { container: qc0, vm: v1 },
      ]);
      // Its instance 1 is CRASHED: the api must not ask an agent for it at all.
      const flaky = ccApp({ guid: FLAKY, name: "flaky", spaceGuid: SPACE.guid }, [
        { container: fc0, vm: v1 },
        { container: c1, vm: v1, state: "CRASHED" },
      ]);
      cc.apps.push(web, other, quiet, flaky, vault);
      const api = await startApi();
      const devToken = await token(U.dev);

      // 1. The capture itself.
      const ws = connect(lab, api.url, devToken, "/v1/capture/cf");
      try {
        cfStart(ws, { app_guid: APP, space_guid: SPACE.guid, indexes: [0, 2] });
        await ws.waitFor("two SOURCE frames", (r) => r.sources.length >= 2, 30_000);
        assertEquals(ws.got.sources.length, 2, JSON.stringify(ws.got.sources));
        const srcOf = (guid: string) => {
          const s = ws.got.sources.find((x) => String(x.origin).includes(guid));
          assert(s, `no source names ${guid}: ${JSON.stringify(ws.got.sources)}`);
          return s.source;
        };
        const s0 = srcOf(c0.handle);
        const s2 = srcOf(c2.handle);
        const mk = Object.fromEntries(
          ["c0", "c1", "c2", "theirs", "eth0"].map((k) => [k, markerTokens(randomMarker(), N)]),
        );
        await send(netns, v0.netns, c0.ip, mk.c0);
        await send(netns, v1.netns, c1.ip, mk.c1);
        await send(netns, v0.netns, c2.ip, mk.c2);
        await send(netns, v0.netns, theirs.ip, mk.theirs);
        // The cell's own eth0: from the other cell over the lab bridge; tcpdump on that eth0
        // proves the marks were there to be (wrongly) captured.
        const dump = await lab.traffic.tcpdump({
          on: v0,
          filter: "udp port 7777",
          count: N,
          file: `${lab.dir}/cell0-eth0.pcap`,
        });
        try {
          await send(netns, v1.netns, v0.ip, mk.eth0);
          await dump.done(15_000);
        } finally {
          await dump.stop();
        }
        const all = (r: typeof ws.got) => [...r.tokens.values()].flat();
        await ws.waitFor(
          "every mark of instances 0 and 2",
          (r) => mk.c0.concat(mk.c2).every((t) => all(r).includes(t)),
          30_000,
        );
        ws.send({ type: "stop" });
        await ws.closed;
        for (const [src, marks] of [[s0, mk.c0], [s2, mk.c2]] as const) {
          const counts = countTokens(ws.got.tokens.get(src) ?? []);
          for (const t of marks) assertEquals(counts.get(t), 1, `${t} on source ${src}`);
          assertEquals(counts.size, marks.length, `only own marks on source ${src}`);
        }
        for (const k of ["c1", "theirs", "eth0"]) {
          const leaked = all(ws.got).filter((t) => mk[k].includes(t));
          assertEquals(leaked, [], `no marks of ${k}`);
        }
      } finally {
        ws.close();
      }

      // 2. Who may capture, and SSH as the consent switch.
      const refused = (tok: string, cf: Record<string, unknown>) => refusal(lab, api.url, tok, cf);
      const cases: Array<[string, string, Record<string, unknown>, string, string]> = [
        ["auditor", U.auditor, { app_guid: APP }, "PERMISSION_DENIED", "Space Developer"],
        ["supporter", U.supporter, { app_guid: APP }, "PERMISSION_DENIED", "Space Developer"],
        ["manager", U.manager, { app_guid: APP }, "PERMISSION_DENIED", "Space Developer"],
        ["org manager", U.orgManager, { app_guid: APP }, "PERMISSION_DENIED", "Space Developer"],
        ["no role", U.nobody, { app_guid: APP }, "", "not found, or not visible to you"],
        ["ssh app", U.dev, { app_guid: QUIET }, "PERMISSION_DENIED", "ssh is disabled for app"],
        ["ssh space", U.dev, { app_guid: vault.guid }, "PERMISSION_DENIED", "disabled for space"],
        ["unknown index", U.dev, { app_guid: APP, indexes: [7] }, "INVALID_REQUEST", "7"],
      ];
      for (const [what, user, cf, type, text] of cases) {
        const s = await refused(await token(user), cf);
        if (type) assertEquals(s.type, type, `${what}: ${JSON.stringify(s)}`);
        assertStringIncludes(String(s.text), text, what);
      }
      cc.allowSsh = false;
      const global = await refused(devToken, { app_guid: APP });
      assertEquals(global.type, "PERMISSION_DENIED");
      assertStringIncludes(String(global.text), "disabled globally");
      cc.allowSsh = true;
      cc.statsUnavailable = true;
      const s503 = await refused(devToken, { app_guid: APP });
      assertEquals(s503.type, "CONNECTION_ERROR", JSON.stringify(s503));
      cc.statsUnavailable = false;

      // SSH not required: the app with SSH disabled is captured.
      const lax = await startApi({ cf: { require_ssh_enabled: false } });
      const q = connect(lab, lax.url, devToken, "/v1/capture/cf");
      try {
        cfStart(q, { app_guid: QUIET });
        await q.waitFor("quiet/0 SOURCE", (r) => r.sources.length >= 1, 30_000);
        assertStringIncludes(String(q.got.sources[0].origin), qc0.handle);
        const marks = markerTokens(randomMarker(), N);
        await send(netns, v1.netns, qc0.ip, marks);
        await q.waitFor("quiet/0 marks", (r) => {
          const got = r.tokens.get(q.got.sources[0].source) ?? [];
          return marks.every((t) => got.includes(t));
        });
        q.send({ type: "stop" });
        await q.closed;
      } finally {
        q.close();
      }

      // An old CC (no instance_guid in stats): the container is named by its ip.
      cc.apiVersion = "3.190.0";
      const old = await startApi();
      const o = connect(lab, old.url, devToken, "/v1/capture/cf");
      try {
        cfStart(o, { app_guid: APP, indexes: [1] });
        await o.waitFor("web/1 SOURCE", (r) => r.sources.length >= 1, 30_000);
        assertStringIncludes(String(o.got.sources[0].origin), `web/1 (${c1.ip})`);
        const marks = markerTokens(randomMarker(), N);
        const neighbour = markerTokens(randomMarker(), N);
        await send(netns, v1.netns, c1.ip, marks);
        await send(netns, v1.netns, fc0.ip, neighbour);
        await o.waitFor("web/1 marks", (r) => {
          const got = r.tokens.get(o.got.sources[0].source) ?? [];
          return marks.every((t) => got.includes(t));
        });
        o.send({ type: "stop" });
        await o.closed;
        assertEquals(countTokens(o.got.tokens.get(o.got.sources[0].source)!).size, N);
      } finally {
        o.close();
        cc.apiVersion = "3.195.0";
      }

      // 3. A crashed instance among running ones: reported, the other captured.
      const f = connect(lab, api.url, devToken, "/v1/capture/cf");
      try {
        cfStart(f, { app_guid: flaky.guid });
        await f.waitFor(
          "SOURCE and INSTANCE_UNAVAILABLE",
          (r) => r.sources.length >= 1 && statusesOf(r, "INSTANCE_UNAVAILABLE").length >= 1,
          30_000,
        );
        const un = statusesOf(f.got, "INSTANCE_UNAVAILABLE");
        assertEquals(un.length, 1, JSON.stringify(un));
        assertStringIncludes(JSON.stringify(un[0]), "CRASHED");
        assertEquals(f.got.sources.length, 1);
        assertStringIncludes(String(f.got.sources[0].origin), fc0.handle);
        const marks = markerTokens(randomMarker(), N);
        await send(netns, v1.netns, fc0.ip, marks);
        await f.waitFor("flaky/0 marks", (r) => {
          const got = r.tokens.get(f.got.sources[0].source) ?? [];
          return marks.every((t) => got.includes(t));
        });
        f.send({ type: "stop" });
        await f.closed;
      } finally {
        f.close();
      }
    }),
});
