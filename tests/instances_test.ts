/**
 * `pcap bosh instances` and `capture --dry-run` end to end: the real client (child process)
 * against the lab's api, agents in namespaces, UAA and Director sims. The api's listing route is
 * also asked directly for its HTTP answers (no token, bad body, wrong method).
 */
import { isRoot } from "../lab/netns.ts";
import { type LabVm, Landscape } from "../lab/landscape.ts";
import { assert, assertEquals, assertMatch, assertStringIncludes } from "./support/assert.ts";
import { type Client, exitCode, killClient, runCli, startClient } from "./support/bosh_client.ts";
import { VERSION } from "../version.ts";
import { PROTOCOL_VERSION } from "../protocol/version.ts";
import { InstancesAnswer } from "../protocol/instances.ts";

const root = isRoot();

/** The table's line for `vm`, or undefined. */
function lineOf(table: string, vm: LabVm): string | undefined {
  return table.split("\n").find((l) => l.startsWith(`${vm.group}/${vm.index} (${vm.id}) eth0 `));
}

Deno.test({
  name: "pcap bosh instances on the lab" + (root ? "" : " (ignored: needs root)"),
  ignore: !root,
  async fn(t) {
    const lab = await Landscape.start({
      groups: { "diego-cell": 2, router: 1 },
      api: true,
      log: () => {},
    });
    const dir = await Deno.makeTempDir({ prefix: "pcap-instances-test-" });
    const clients: Client[] = [];
    try {
      const writeConfig = async (token: string) => {
        const config = `${dir}/bosh-config-${crypto.randomUUID().slice(0, 8)}.yml`;
        await Deno.writeTextFile(
          config,
          `environments:\n- url: ${lab.director.url}\n  alias: lab\n` +
            `  access_token: ${token}\n  access_token_type: bearer\n` +
            `  ca_cert: |-\n${lab.pki.caCert.trim().replace(/^/gm, "    ")}\n`,
        );
        return config;
      };
      const adminConfig = await writeConfig(await lab.mintToken());
      const envFor = (config: string) => ({
        HOME: dir,
        BOSH_CONFIG: config,
        BOSH_ENVIRONMENT: "lab",
        PCAP_API: lab.apiUrl!,
      });
      const env = envFor(adminConfig);
      const ca = ["--ca-cert", lab.pki.caPath];
      const instances = (args: string[], e = env) =>
        runCli(["bosh", "instances", ...ca, ...args], e);
      const router = lab.vm("router");
      const cells = [0, 1].map((i) => lab.vm("diego-cell", i));

      await t.step("all agents up: one line per VM with address and agent version", async () => {
        const r = await instances(["-d", "cf", "-g", "diego-cell", "-g", "router"]);
        assertEquals(r.code, 0, r.stderr);
        assertMatch(r.stdout, /^SOURCE +ADDRESS +AGENT\n/);
        for (const vm of [...cells, router]) {
          const line = lineOf(r.stdout, vm);
          assert(line, `no line for ${vm.group}/${vm.index}:\n${r.stdout}`);
          assertStringIncludes(line, `${vm.ip}:${vm.agentPort}`);
          assertStringIncludes(line, `up (pcap ${VERSION})`);
        }
        assertStringIncludes(r.stdout, "3 sources, 3 agents up");
        // positional instances narrow the selection like a capture's
        const one = await instances(["-d", "cf", `router/${router.index}`]);
        assertEquals(one.code, 0, one.stderr);
        assert(lineOf(one.stdout, router) && !lineOf(one.stdout, cells[0]), one.stdout);
      });

      await t.step(
        "capture --dry-run prints the same table, captures nothing, exits 0",
        async () => {
          const r = await runCli(
            ["bosh", "capture", ...ca, "-d", "cf", "-g", "diego-cell", "--dry-run"],
            env,
          );
          assertEquals(r.code, 0, r.stderr);
          for (const vm of cells) assertStringIncludes(lineOf(r.stdout, vm) ?? "", "up (pcap");
          assert(!r.stderr.includes("capturing on"), r.stderr);
        },
      );

      await t.step(
        "a capture prints the selected targets first (stderr), then captures",
        async () => {
          const file = `${dir}/router.pcapng`;
          const c = startClient([...ca, "-d", "cf", "-g", "router", "-o", file], env);
          clients.push(c);
          await c.waitFor(/capturing on router/, 1);
          c.child.kill("SIGINT");
          assertEquals(await exitCode(c), 0, c.stderr());
          const err = c.stderr();
          const listed = err.indexOf("selected targets:");
          assert(listed >= 0 && listed < err.indexOf("capturing on"), err);
          const line = lineOf(err.slice(listed), router);
          assert(line, err);
          // the preview does not probe the agents (the capture reports a down one itself)
          assert(!line.includes("up (pcap"), line);
          assertStringIncludes(err.slice(listed), "1 source\n");
          // -q: no list
          const q = startClient([...ca, "-q", "-d", "cf", "-g", "router", "-o", `${file}.q`], env);
          clients.push(q);
          await waitForFile(`${file}.q`);
          q.child.kill("SIGINT");
          assertEquals(await exitCode(q), 0, q.stderr());
          assert(!q.stderr().includes("selected targets"), q.stderr());
        },
      );

      await t.step(
        "an agent down: its line says unreachable and why; the others are up",
        async () => {
          await lab.killAgent(cells[1]);
          try {
            const r = await instances(["-d", "cf", "-g", "diego-cell"]);
            assertEquals(r.code, 0, r.stderr);
            assertStringIncludes(lineOf(r.stdout, cells[0]) ?? "", "up (pcap");
            const down = lineOf(r.stdout, cells[1]) ?? "";
            assertMatch(down, /unreachable: agent diego-cell\/1 .* at [\d.]+:\d+ /);
            assertStringIncludes(r.stdout, "2 sources, 1 agent up");
          } finally {
            await lab.restartAgent(cells[1]);
          }
        },
      );

      await t.step(
        "refusals: no scope, unknown deployment and group, bad filter (exit 1)",
        async () => {
          const denied = await instances(
            ["-d", "cf", "-g", "router"],
            envFor(await writeConfig(await lab.mintToken({ scopes: ["openid"] }))),
          );
          assertEquals(denied.code, 1, denied.stderr);
          assertMatch(denied.stderr, /^pcap-bosh: PERMISSION_DENIED: .*scope/);
          assertEquals(denied.stdout, "");
          const nope = await instances(["-d", "nope", "-g", "router"]);
          assertEquals(nope.code, 1);
          assertMatch(nope.stderr, /^pcap-bosh: INVALID_REQUEST: deployment 'nope' not found/);
          const group = await instances(["-d", "cf", "-g", "no-such-group"]);
          assertEquals(group.code, 1);
          assertStringIncludes(group.stderr, "no-such-group");
          const filter = await instances(["-d", "cf", "-g", "router", "-f", "port 99999"]);
          assertEquals(filter.code, 1);
          assertMatch(filter.stderr, /^pcap-bosh: filter "port 99999" is not valid/);
          const usage = await instances(["-g", "router"]);
          assertEquals(usage.code, 2);
          assertStringIncludes(usage.stderr, "pcap-bosh instances: missing -d/--deployment");
          assertStringIncludes(usage.stderr, "(see pcap-bosh instances --help)");
        },
      );

      await t.step("the route itself: answer shape, no token, bad body, GET", async () => {
        const url = `${lab.apiUrl}/v1/instances/bosh`;
        const token = await lab.mintToken();
        const body = JSON.stringify({
          type: "start",
          protocol_version: PROTOCOL_VERSION,
          bosh: { deployment: "cf", groups: ["router"], instances: [] },
          interface: "eth0",
          snaplen: 65535,
          filter: "",
          limits: {},
        });
        const post = (b: string, headers: Record<string, string>) =>
          lab.fetchLab(url, { method: "POST", body: b, headers });
        const ok = await post(body, { authorization: `Bearer ${token}` });
        assertEquals(ok.status, 200);
        const answer = InstancesAnswer.parse(await ok.json());
        assertEquals(answer.resolver, "bosh");
        assertEquals(answer.facts.deployment, "cf");
        assertEquals(answer.targets.map((x) => [x.address, x.agent.status]), [[router.ip, "up"]]);
        assertEquals(answer.targets[0].instance?.id, router.id);
        // ?probe=false (a capture's preview): the same targets, agents not asked
        const unprobed = await lab.fetchLab(`${url}?probe=false`, {
          method: "POST",
          body,
          headers: { authorization: `Bearer ${token}` },
        });
        assertEquals(unprobed.status, 200);
        const quick = InstancesAnswer.parse(await unprobed.json());
        assertEquals(quick.targets.map((x) => [x.address, x.agent]), [[router.ip, {
          status: "unprobed",
        }]]);
        const oddProbe = await lab.fetchLab(`${url}?probe=maybe`, {
          method: "POST",
          body,
          headers: { authorization: `Bearer ${token}` },
        });
        assertEquals(oddProbe.status, 400);
        const odd = await oddProbe.json();
        assertEquals(odd.type, "INVALID_REQUEST");
        assertStringIncludes(odd.text, "?probe= takes true or false");
        const noToken = await post(body, {});
        assertEquals(noToken.status, 401);
        assertEquals((await noToken.json()).type, "UNAUTHENTICATED");
        const bad = await post('{"type":"start"}', { authorization: `Bearer ${token}` });
        assertEquals(bad.status, 400);
        assertMatch((await bad.json()).text, /invalid start request/);
        const huge = await post("x".repeat(1 << 20), { authorization: `Bearer ${token}` });
        assertEquals(huge.status, 413);
        await huge.body?.cancel();
        const get = await lab.fetchLab(url);
        assertEquals(get.status, 405);
        assertStringIncludes((await get.json()).text, "POST the capture's start request");
      });
    } finally {
      for (const c of clients) await killClient(c);
      await lab.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

async function waitForFile(path: string): Promise<void> {
  const until = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await Deno.stat(path)).size > 0) return;
    } catch { /* not yet */ }
    if (Date.now() > until) throw new Error(`${path} did not appear`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
