/**
 * `pcap-cf instances` when the api refuses a token the cf login still thought valid (revoked, or
 * clocks apart): the token is refreshed once at the lab UAA (real HTTPS, real refresh grant),
 * written back, and the listing asked again with it; refused again, the refusal is reported and
 * not retried. The api is a loopback server answering the listing route's documented shapes.
 */
import { runCf } from "../cli/cf_main.ts";
import { PROTOCOL_VERSION } from "../protocol/version.ts";
import type { InstancesAnswer } from "../protocol/instances.ts";
import type { UaaSim } from "../lab/uaa_sim.ts";
import { devCfHome } from "./support/cf_uaa.ts";
import { assert, assertEquals, assertStringIncludes } from "./support/assert.ts";

const SPACE_GUID = "6b4f2c1e-3a5d-4e8f-9b0a-1c2d3e4f5a6b";
const INSTANCE_GUID = "5c7d9e1f-2a3b-4c5d-6e7f-8091a2b3c4d5";

const ANSWER: InstancesAnswer = {
  resolver: "cf",
  facts: { app: "my-app", process: "web" },
  targets: [{
    origin: "my-app/0",
    address: "198.18.0.20",
    port: 9494,
    instance: { group: "my-app", index: 0, id: INSTANCE_GUID },
    agent: { status: "up", version: "test", protocol_version: PROTOCOL_VERSION },
  }],
  skipped: [],
};

Deno.test("pcap-cf instances: a refused token is refreshed once, written back, and the listing asked again", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cf_instances_retry" });
  let uaa: UaaSim | undefined;
  let auths: (string | null)[] = [];
  let refusals = 1;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    if (req.method !== "POST" || new URL(req.url).pathname !== "/v1/instances/cf") {
      return new Response(null, { status: 404 });
    }
    auths.push(req.headers.get("authorization"));
    if (auths.length <= refusals) {
      return Response.json({ type: "UNAUTHENTICATED", text: "the token was revoked" }, {
        status: 401,
      });
    }
    return Response.json(ANSWER);
  });
  try {
    const home = await devCfHome(dir, { GUID: SPACE_GUID, Name: "s1" });
    uaa = home.uaa;
    const { tokens, configPath } = home;
    const instances = async () => {
      let stderr = "";
      let stdout = "";
      const code = await runCf([
        "instances",
        "my-app",
        "-u",
        `http://127.0.0.1:${server.addr.port}`,
        "--ca-cert",
        `${dir}/ca.pem`,
      ], {
        env: { CF_HOME: dir },
        writeErr: (s) => (stderr += s),
        writeOut: (s) => (stdout += s),
        stderrIsTty: false,
        stdoutIsTty: false,
        signals: [],
      });
      return { code, stderr, stdout };
    };

    const first = await instances();
    assertEquals(first.code, 0, first.stderr);
    assertEquals(auths.length, 2, "one retry");
    assertEquals(auths[0], `bearer ${tokens.access_token}`);
    const stored = JSON.parse(await Deno.readTextFile(configPath)).AccessToken;
    assert(stored !== `bearer ${tokens.access_token}`, "the refreshed token is written back");
    assertEquals(auths[1], stored);
    assertStringIncludes(first.stderr, "refreshing it and retrying");
    assertStringIncludes(first.stdout, `my-app/0 (${INSTANCE_GUID}) eth0`);
    assertStringIncludes(first.stdout, "1 source, 1 agent up");

    // refused again after the refresh: reported once, not retried forever
    auths = [];
    refusals = 2;
    const again = await instances();
    assertEquals(again.code, 1);
    assertEquals(auths.length, 2, "exactly one retry");
    assertStringIncludes(again.stderr, "pcap-cf: UNAUTHENTICATED: the token was revoked");
    assertEquals(again.stdout, "");
  } finally {
    await server.shutdown();
    await uaa?.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
