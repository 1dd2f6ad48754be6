import { isRoot, run } from "../lab/netns.ts";
import { addressPlan, MAX_VMS, Topology, vmNamespaceSuffix } from "../lab/topology.ts";
import { Traffic } from "../lab/traffic.ts";
import { assert, assertEquals, assertMatch, assertRejects } from "./support/assert.ts";

const root = isRoot();
const NEEDS_ROOT = root ? "" : " (ignored: needs root for network namespaces)";
const quiet = () => {};

async function namespacesOf(runId: string): Promise<string[]> {
  const r = await run("ip", ["netns", "list"]);
  return r.stdout.split("\n").map((l) => l.trim().split(/\s+/)[0]).filter((n) =>
    n?.startsWith(runId)
  );
}

async function hostLinksOf(runId: string): Promise<string[]> {
  const r = await run("ip", ["-o", "link", "show"]);
  return r.stdout.split("\n").flatMap((l) => {
    const m = /^\d+:\s+([^:@\s]+)/.exec(l);
    return m && m[1].startsWith(runId) ? [m[1]] : [];
  });
}

async function assertGone(runId: string): Promise<void> {
  assertEquals(await namespacesOf(runId), [], `namespaces of ${runId} left behind`);
  assertEquals(await hostLinksOf(runId), [], `host links of ${runId} left behind`);
}

/** One UDP datagram from `from` to `to` must arrive (python3 receiver inside `to`). */
async function assertUdpReaches(
  topo: Topology,
  from: { ip: string; netns: string | null },
  to: { ip: string; netns: string | null },
  port: number,
) {
  const traffic = new Traffic(topo.netns);
  const sink = await traffic.sink("udp", to, port);
  await traffic.udp({ from, to, port, count: 3, rate: 0 });
  // UDP sink counts on SIGTERM; the datagrams were delivered synchronously over the veths.
  const got = await sink.stop();
  assertEquals(got, 3, `UDP ${from.ip} → ${to.ip}:${port}`);
}

function pidAlive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(Deno.readTextFileSync(`/proc/${pid}/stat`));
  } catch {
    return false;
  }
}

const VMS = [
  { deployment: "cf", group: "diego-cell", index: 0 },
  { deployment: "cf", group: "diego-cell", index: 1 },
  { deployment: "cf", group: "router", index: 0 },
];

Deno.test("vmNamespaceSuffix is readable, safe and unique per VM", () => {
  assertEquals(
    vmNamespaceSuffix({ deployment: "cf", group: "diego-cell", index: 2 }),
    "-cf-diego-cell-2",
  );
  assertEquals(
    vmNamespaceSuffix({ deployment: "My_Dep", group: "r/x", index: 0 }),
    "-my-dep-r-x-0",
  );
});

Deno.test("addressPlan: host .1, VMs from .10, bounded", () => {
  const p = addressPlan(7, 3);
  assertEquals(p, {
    subnet: "198.18.7.0/24",
    hostIp: "198.18.7.1",
    vmIps: ["198.18.7.10", "198.18.7.11", "198.18.7.12"],
  });
  assertEquals(addressPlan(0, MAX_VMS).vmIps.at(-1), "198.18.0.254");
  assertMatch(
    (() => {
      try {
        addressPlan(0, MAX_VMS + 1);
        return "";
      } catch (e) {
        return (e as Error).message;
      }
    })(),
    /at most/,
  );
});

Deno.test("loopback mode: no namespaces, 127.0.0.1 and lo, said in a log line", async () => {
  const lines: string[] = [];
  const topo = await Topology.create({ vms: VMS, loopback: true, log: (l) => lines.push(l) });
  try {
    assert(topo.loopback);
    assertEquals(
      topo.vms.map((v) => [v.ip, v.device, v.netns]),
      VMS.map(() => ["127.0.0.1", "lo", null]),
    );
    assertMatch(
      lines.join("\n"),
      /no network namespaces; every VM is 127\.0\.0\.1 and captures on lo/,
    );
  } finally {
    await topo.stop();
  }
  if (root) await assertGone(topo.runId);
});

Deno.test({
  name: "topology: VMs with eth0 on a bridge, reachable from each other and from the host" +
    NEEDS_ROOT,
  ignore: !root,
  async fn() {
    const topo = await Topology.create({ vms: VMS, log: quiet });
    try {
      assertEquals(topo.vms.map((v) => v.netns), [
        `${topo.runId}-cf-diego-cell-0`,
        `${topo.runId}-cf-diego-cell-1`,
        `${topo.runId}-cf-router-0`,
      ]);
      for (const vm of topo.vms) {
        const r = await run("ip", ["-n", vm.netns!, "-4", "-o", "addr", "show", "dev", "eth0"]);
        assertMatch(r.stdout, new RegExp(`inet ${vm.ip.replaceAll(".", "\\.")}/24`));
      }
      assertEquals(await hostLinksOf(topo.runId), [`${topo.runId}h`]);
      const [a, b, c] = topo.vms;
      await assertUdpReaches(topo, a, c, 4001);
      await assertUdpReaches(topo, c, b, 4002);
      await assertUdpReaches(topo, { ip: topo.hostIp, netns: null }, b, 4003);
      await assertUdpReaches(topo, a, { ip: topo.hostIp, netns: null }, 4004);
    } finally {
      await topo.stop();
    }
    await assertGone(topo.runId);
    await topo.stop(); // idempotent
  },
});

Deno.test({
  name: "topology: an exception inside the lab still leaves nothing behind" + NEEDS_ROOT,
  ignore: !root,
  async fn() {
    let runId = "";
    let pid = 0;
    await assertRejects(
      async () => {
        await using topo = await Topology.create({ vms: VMS.slice(0, 2), log: quiet });
        runId = topo.runId;
        pid = topo.netns.spawn(topo.vms[0].netns, ["sleep", "300"]).pid;
        throw new Error("boom inside the lab");
      },
      Error,
      "boom inside the lab",
    );
    assert(runId && pid);
    await assertGone(runId);
    assert(!pidAlive(pid), `process ${pid} left behind`);
  },
});

Deno.test({
  name: "topology: SIGTERM and SIGINT tear the lab down before the process exits" + NEEDS_ROOT,
  ignore: !root,
  async fn() {
    const script = `
      import { Topology } from "${new URL("../lab/topology.ts", import.meta.url).href}";
      const topo = await Topology.create({ vms: [{ deployment: "d", group: "g", index: 0 }], log: () => {} });
      topo.netns.spawn(topo.vms[0].netns, ["sleep", "300"]);
      console.log("READY " + topo.runId);
      setInterval(() => {}, 1000);
    `;
    for (const [signal, code] of [["SIGTERM", 143], ["SIGINT", 130]] as const) {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["eval", "--quiet", script],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let out = "";
      while (!/READY (pc[0-9a-z]{4})/.test(out)) {
        const { value, done } = await reader.read();
        if (done) break;
        out += value;
      }
      const runId = /READY (pc[0-9a-z]{4})/.exec(out)?.[1];
      try {
        assert(runId, `child did not start a lab: ${out}`);
        assertEquals((await namespacesOf(runId)).length, 2);
        child.kill(signal);
        const status = await child.status;
        assertEquals(status.code, code);
        await assertGone(runId);
      } finally {
        try {
          child.kill("SIGKILL");
        } catch { /* exited */ }
        await child.status;
        await reader.cancel();
        const err = await new Response(child.stderr).text();
        assertMatch(err, new RegExp(`${signal}: tearing down`));
      }
    }
  },
});

Deno.test({
  name: "topology: without a host link there is no host veth" + NEEDS_ROOT,
  ignore: !root,
  async fn() {
    const topo = await Topology.create({ vms: VMS.slice(0, 1), hostLink: false, log: quiet });
    try {
      assertEquals(topo.hostLink, null);
      assertEquals(await hostLinksOf(topo.runId), []);
      assertEquals((await namespacesOf(topo.runId)).length, 2);
    } finally {
      await topo.stop();
    }
    await assertGone(topo.runId);
  },
});
