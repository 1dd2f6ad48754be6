// `pcap-cf instances` and the api's /v1/instances/cf through the real CF resolver: CC simulator on
// TLS, lab UAA tokens, real agents on two Diego cells. A space developer lists an app's running
// instances with their cells' agents (one of them down), a crashed instance is listed as
// skipped; an auditor is refused, an unknown app named.
import { writeCfConfig } from "./support/cf_uaa.ts";
import { isRoot } from "../lab/netns.ts";
import { ccApp, withCfLab } from "./support/cf_lab.ts";
import { assert, assertEquals, assertMatch, assertStringIncludes } from "./support/assert.ts";
import { fetchInstances, InstancesError } from "../cli/instances_client.ts";
import { runCf } from "../cli/cf_main.ts";
import { PROTOCOL_VERSION } from "../protocol/version.ts";
import type { CfStartRequest } from "../protocol/cf_messages.ts";

const ORG = { guid: crypto.randomUUID(), name: "acme" };
const SPACE = { guid: crypto.randomUUID(), name: "dev", orgGuid: ORG.guid };
const U = { dev: crypto.randomUUID(), auditor: crypto.randomUUID() };

function request(cf: Partial<CfStartRequest["cf"]>): CfStartRequest {
  return {
    type: "start",
    protocol_version: PROTOCOL_VERSION,
    cf: { process: "web", indexes: [], space_guid: SPACE.guid, ...cf },
    interface: "eth0",
    snaplen: 65535,
    filter: "",
    limits: {},
  };
}

Deno.test({
  name: "instances via the api's CF resolver: agents up and down, skipped, refused, unknown app",
  ignore: !isRoot(),
  fn: () =>
    withCfLab({
      orgs: [ORG],
      spaces: [SPACE],
      roles: [
        { userId: U.dev, type: "space_developer", target: SPACE.guid },
        { userId: U.auditor, type: "space_auditor", target: SPACE.guid },
      ],
    }, async ({ lab, cells, cc, token, startApi, addContainer }) => {
      const APP = crypto.randomUUID();
      const c0 = await addContainer(0, APP, SPACE);
      const c1 = await addContainer(1, APP, SPACE);
      const [v0, v1] = [cells[0].vm, cells[1].vm];
      cc.apps.push(ccApp({ guid: APP, name: "web", spaceGuid: SPACE.guid }, [
        { container: c0, vm: v0 },
        { container: c1, vm: v1 },
        { container: c1, vm: v1, state: "CRASHED" },
      ]));
      const api = await startApi();
      const apiUrl = api.url.replace(/^ws/, "http");
      const devToken = await token(U.dev);
      const ask = async (t: string, cf: Partial<CfStartRequest["cf"]>) =>
        await fetchInstances({
          apiUrl,
          platform: "cf",
          authorization: `Bearer ${t}`,
          caCert: lab.pki.caCert,
          request: request(cf),
        });

      // every running instance on its cell's agent; the crashed one skipped with why
      const all = await ask(devToken, { app: "web" });
      assertEquals(all.resolver, "cf");
      assertEquals(all.facts.app, "web");
      assertEquals(all.facts.space, "dev");
      assertEquals(
        all.targets.map((x) => [x.instance?.index, x.address, x.agent.status]),
        [[0, v0.ip, "up"], [1, v1.ip, "up"]],
      );
      assertEquals(all.skipped.length, 1, JSON.stringify(all.skipped));
      assertMatch(all.skipped[0].reason, /CRASHED/);
      const one = await ask(devToken, { app: "web", indexes: [1] });
      assertEquals(one.targets.map((x) => x.instance?.index), [1]);

      // the pcap-cf command prints the table (cf login in a CF_HOME)
      const home = await Deno.makeTempDir({ prefix: "pcap-cf-instances-" });
      try {
        await writeCfConfig(home, {
          Target: cc.url,
          AuthorizationEndpoint: lab.uaa.url,
          AccessToken: `bearer ${devToken}`,
          RefreshToken: "",
          SpaceFields: { GUID: SPACE.guid, Name: SPACE.name },
          OrganizationFields: { GUID: ORG.guid, Name: ORG.name },
        });
        const cli = async (args: string[], app = "web") => {
          let out = "", err = "";
          const code = await runCf([
            "instances",
            app,
            "-u",
            apiUrl,
            "--ca-cert",
            lab.pki.caPath,
            ...args,
          ], {
            env: { CF_HOME: home },
            writeErr: (s) => (err += s),
            writeOut: (s) => (out += s),
            stderrIsTty: false,
            stdoutIsTty: false,
            signals: [],
          });
          return { code, out, err };
        };
        // an agent down: its instance is listed as unreachable, the other one up
        await lab.killAgent(v1);
        try {
          const r = await cli([]);
          assertEquals(r.code, 0, r.err);
          const line = (i: number) =>
            r.out.split("\n").find((l) => l.startsWith(`web/${i} (`)) ?? "";
          assertStringIncludes(line(0), `${v0.ip}:`);
          assertStringIncludes(line(0), "up (pcap");
          assertMatch(line(1), /unreachable: agent web\/1 .* at [\d.]+:\d+ /);
          assertStringIncludes(r.out, "2 sources, 1 agent up, 1 skipped");
        } finally {
          await lab.restartAgent(v1);
        }
        const narrowed = await cli(["--index", "1"]);
        assertEquals(narrowed.code, 0, narrowed.err);
        assert(!narrowed.out.includes("web/0 ("), narrowed.out);
        assertStringIncludes(narrowed.out, "1 source, 1 agent up");
        const nope = await cli([], "nope");
        assertEquals([nope.code, nope.out], [1, ""]);
        assertMatch(nope.err, /^pcap-cf: INVALID_REQUEST: .*nope/);
      } finally {
        await Deno.remove(home, { recursive: true });
      }

      // refused like a capture: an auditor may not capture, so may not list either
      const denied = await ask(await token(U.auditor), { app: "web" }).then(
        () => undefined,
        (e) => e,
      );
      assert(denied instanceof InstancesError, String(denied));
      assertEquals(denied.type, "PERMISSION_DENIED");
      // an unknown app is named
      const missing = await ask(devToken, { app: "nope" }).then(() => undefined, (e) => e);
      assert(missing instanceof InstancesError, String(missing));
      assertEquals(missing.type, "INVALID_REQUEST");
      assertStringIncludes(missing.message, "nope");
      await api.close();
    }),
});
