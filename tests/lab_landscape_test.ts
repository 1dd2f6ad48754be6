import { isRoot, run } from "../lab/netns.ts";
import { Landscape, vmSpecs, withLandscape } from "../lab/landscape.ts";
import { agentConfig, mergeConfig } from "../lab/lab_agents.ts";
import { readMarkers } from "../lab/traffic.ts";
import { decodePayloadUnverified } from "../lab/token_mint.ts";
import { assert, assertEquals, assertMatch, assertRejects } from "./support/assert.ts";

const root = isRoot();
const WHY = !root ? " (ignored: needs root for network namespaces)" : "";
const quiet = () => {};

async function labNamespaces(runId: string): Promise<string[]> {
  const r = await run("ip", ["netns", "list"]);
  return r.stdout.split("\n").map((l) => l.trim().split(/\s+/)[0]).filter((n) =>
    n?.startsWith(runId)
  );
}

function pidAlive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(Deno.readTextFileSync(`/proc/${pid}/stat`));
  } catch {
    return false;
  }
}

/** pids of processes whose command line names the run dir (agents, api). */
function runDirPids(dir: string): number[] {
  return [...Deno.readDirSync("/proc")].flatMap((e) => {
    if (!/^\d+$/.test(e.name)) return [];
    try {
      return Deno.readTextFileSync(`/proc/${e.name}/cmdline`).includes(dir) ? [Number(e.name)] : [];
    } catch {
      return [];
    }
  });
}

async function assertNothingLeft(lab: Landscape, pids: number[]): Promise<void> {
  assertEquals(await labNamespaces(lab.runId), [], "namespaces left behind");
  for (const pid of pids) assert(!pidAlive(pid), `process ${pid} left behind`);
  const dirGone = await Deno.stat(lab.dir).then(() => false, () => true);
  assert(dirGone, `run dir ${lab.dir} left behind`);
}

Deno.test("vmSpecs expands group counts in order", () => {
  assertEquals(vmSpecs({ groups: { "diego-cell": 2, router: 1 } }), [
    { deployment: "cf", group: "diego-cell", index: 0 },
    { deployment: "cf", group: "diego-cell", index: 1 },
    { deployment: "cf", group: "router", index: 0 },
  ]);
  assertMatch(
    (() => {
      try {
        vmSpecs({ groups: { x: -1 } });
        return "";
      } catch (e) {
        return (e as Error).message;
      }
    })(),
    /not a non-negative integer/,
  );
});

Deno.test("agentConfig follows agent/config.ts keys; overrides merge and null removes", () => {
  const vm = {
    deployment: "cf",
    group: "router",
    index: 0,
    id: "u-1",
    ip: "198.18.3.10",
    netns: "ns",
    port: 9494,
  };
  const cfg = agentConfig(vm, { certPath: "c.pem", keyPath: "k.pem", caPath: "ca.pem" }, {
    log_level: null,
    listen: { tls: { allowed_names: ["pcap-api"] } },
  });
  assertEquals(cfg, {
    id: "router/u-1",
    listen: {
      address: "198.18.3.10",
      port: 9494,
      tls: {
        certificate: "c.pem",
        private_key: "k.pem",
        client_cas: "ca.pem",
        allowed_names: ["pcap-api"],
      },
    },
  });
  assertEquals(mergeConfig({ a: [1, 2] }, { a: [3] }), { a: [3] });
});

Deno.test({
  name: "landscape: agents in VM namespaces answer /health over mTLS; director knows them" + WHY,
  ignore: WHY !== "",
  async fn() {
    let pids: number[] = [];
    const lab = await Landscape.start({
      deployment: "cf",
      groups: { "diego-cell": 2, router: 1 },
      agents: true,
      log: quiet,
    });
    try {
      pids = runDirPids(lab.dir);
      assertEquals(pids.length, 3, "one agent process per VM");
      for (const vm of lab.vms) {
        assertMatch(vm.agentUrl, /^https:\/\/198\.18\.\d+\.\d+:9494$/);
        assertEquals(vm.netns, `${lab.runId}-cf-${vm.group}-${vm.index}`);
        const res = await lab.fetchAgent(vm, "/health");
        const body = await res.json();
        assertEquals([res.status, body.healthy, body.id], [200, true, `${vm.group}/${vm.id}`]);
      }
      // The agent's certificate is checked by IP SAN; a client from another CA is refused.
      const rogue = await lab.certs.rogue();
      const bad = Deno.createHttpClient({
        caCerts: [lab.pki.caCert],
        cert: rogue.client.cert,
        key: rogue.client.key,
      });
      try {
        await assertRejects(() => fetch(`${lab.vms[0].agentUrl}/health`, { client: bad }));
      } finally {
        bad.close();
      }
      // The Director lists these VMs for a real RS256 token from the UAA sim.
      const token = await lab.mintToken({ scopes: ["bosh.admin"] });
      assertEquals(decodePayloadUnverified(token).iss, lab.uaa.issuer);
      // The simulators speak HTTPS with the lab CA, like a real Director and UAA.
      assert(lab.director.url.startsWith("https://"), lab.director.url);
      assert(lab.uaa.url.startsWith("https://"), lab.uaa.url);
      const res = await lab.fetchLab(`${lab.director.url}/deployments/cf/instances`, {
        headers: { authorization: `bearer ${token}` },
      });
      const instances = await res.json() as Array<{ id: string; job: string; ips: string[] }>;
      assertEquals(
        instances.map((i) => [i.job, i.id, i.ips]),
        lab.vms.map((vm) => [vm.group, vm.id, [vm.ip]]),
      );
      // Crash one agent: its /health fails; a restart brings it back.
      const cell = lab.vm("diego-cell", 1);
      await lab.killAgent(cell);
      await assertRejects(() => lab.fetchAgent(cell, "/health"));
      await lab.restartAgent(cell);
      assertEquals((await lab.fetchAgent(cell, "/health")).status, 200);
      assertMatch(lab.logs(lab.agentLogName(cell)), /agent_main\.ts|main\.ts agent/);
      pids = [...pids, ...runDirPids(lab.dir)];
    } catch (e) {
      lab.dumpLogs();
      throw e;
    } finally {
      await lab.stop();
    }
    await assertNothingLeft(lab, pids);
  },
});

Deno.test({
  name: "landscape: traffic between VMs is captured on eth0 like on a real VM" +
    (root ? "" : " (ignored: needs root)"),
  ignore: !root,
  async fn() {
    await withLandscape({ groups: { router: 2 }, agents: false, log: quiet }, async (lab) => {
      const [a, b] = lab.vms;
      const file = `${lab.dir}/b.pcap`;
      const cap = await lab.traffic.tcpdump({ on: b, filter: "udp port 7000", count: 5, file });
      const sent = await lab.traffic.udp({ from: a, to: b, port: 7000, count: 5, rate: 100 });
      await cap.done(10_000);
      assertEquals(await readMarkers(file), sent);
    });
  },
});

Deno.test({
  name: "landscape: an agent that cannot start fails start() with its log, leaving nothing" + WHY,
  ignore: WHY !== "",
  async fn() {
    let runId = "";
    const err = await assertRejects(() =>
      Landscape.start({
        groups: { router: 1 },
        agentConfig: { no_such_key: 1 },
        readyTimeoutMs: 20_000,
        log: (l) => runId ||= /lab (pc[0-9a-z]{4})/.exec(l)?.[1] ?? "",
      })
    );
    assertMatch(err.message, /agent router\/0 .*exited with code 1/);
    assertMatch(err.message, /no_such_key/); // the log tail explains why
    assert(runId, "the lab logged its run id");
    assertEquals(await labNamespaces(runId), []);
  },
});

Deno.test("landscape in loopback mode: agents on 127.0.0.1 with distinct ports", async () => {
  const lines: string[] = [];
  await withLandscape(
    { groups: { router: 2 }, loopback: true, log: (l) => lines.push(l) },
    async (lab) => {
      assertEquals(lab.vms.map((v) => [v.ip, v.device, v.netns]), [
        ["127.0.0.1", "lo", null],
        ["127.0.0.1", "lo", null],
      ]);
      assertEquals(new Set(lab.vms.map((v) => v.agentPort)).size, 2);
      for (const vm of lab.vms) assertEquals((await lab.fetchAgent(vm, "/health")).status, 200);
      assertMatch(lines.join("\n"), /captures on lo/);
    },
  );
});

Deno.test({
  name: "landscape: startApi runs the api on a generated api.yml and waits for /health" +
    (!root ? " (ignored: needs root)" : ""),
  ignore: !root,
  async fn() {
    let pids: number[] = [];
    const lab = await Landscape.start({ groups: { router: 1 }, agents: false, log: quiet });
    try {
      const url = await lab.startApi({ limits: { max_targets: 7 } });
      assertEquals(url, lab.apiUrl);
      assertMatch(url, /^https:\/\/127\.0\.0\.1:\d+$/);
      assertMatch(await Deno.readTextFile(`${lab.dir}/api.yml`), /max_targets: 7/);
      const client = Deno.createHttpClient({ caCerts: [lab.pki.caCert] });
      try {
        const res = await fetch(`${url}/health`, { client });
        assertEquals([res.status, (await res.json()).healthy], [200, true]);
      } finally {
        client.close();
      }
      pids = runDirPids(lab.dir);
      assertEquals(pids.length, 1, "one api process");
    } catch (e) {
      lab.dumpLogs();
      throw e;
    } finally {
      await lab.stop();
    }
    await assertNothingLeft(lab, pids);
  },
});
