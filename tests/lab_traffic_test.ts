import { isRoot } from "../lab/netns.ts";
import { Topology } from "../lab/topology.ts";
import { markerTokens, readMarkers, tokensIn, Traffic } from "../lab/traffic.ts";
import { assert, assertEquals, assertRejects } from "./support/assert.ts";

const root = isRoot();
const NEEDS_ROOT = root ? "" : " (ignored: needs root for network namespaces)";
const quiet = () => {};

Deno.test("markerTokens and tokensIn agree on the payload format", () => {
  const sent = markerTokens("m1", 3, 9);
  assertEquals(sent, ["m1:000009", "m1:000010", "m1:000011"]);
  const payload = new TextEncoder().encode("xx m1:000009;....m1:000010;m1:000011;...m1:12;");
  assertEquals(tokensIn(payload), sent);
});

Deno.test("traffic rejects bad markers, ports and sizes before starting anything", async () => {
  const t = new Traffic(null as never); // never reaches netns: validation comes first
  const ep = { ip: "127.0.0.1", netns: null };
  await assertRejects(() => t.udp({ from: ep, to: ep, port: 5000, count: 1, marker: "a b" }));
  await assertRejects(() => t.udp({ from: ep, to: ep, port: 0, count: 1 }));
  await assertRejects(() => t.udp({ from: ep, to: ep, port: 5000, count: 1, size: 9000 }));
  await assertRejects(() => t.udp({ from: ep, to: ep, port: 5000, count: 0 }));
});

async function withTopo(fn: (topo: Topology, dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "pcap-traffic-test-" });
  const topo = await Topology.create({
    vms: [
      { deployment: "cf", group: "a", index: 0 },
      { deployment: "cf", group: "b", index: 0 },
    ],
    log: quiet,
  });
  try {
    await fn(topo, dir);
  } finally {
    await topo.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "udp: every marked datagram sent from VM a appears in a capture on VM b's eth0" +
    NEEDS_ROOT,
  ignore: !root,
  fn: () =>
    withTopo(async (topo, dir) => {
      const [a, b] = topo.vms;
      const traffic = new Traffic(topo.netns);
      const cap = await traffic.tcpdump({
        on: b,
        filter: "udp dst port 5000",
        count: 50,
        file: `${dir}/b.pcap`,
      });
      const sent = await traffic.udp({
        from: a,
        to: b,
        port: 5000,
        count: 50,
        rate: 500,
        size: 200,
      });
      assertEquals(sent.length, 50);
      await cap.done(10_000);
      assertEquals(await readMarkers(`${dir}/b.pcap`), sent);
    }),
});

Deno.test({
  name: "tcp: marked segments from the host reach a VM over the host link" + NEEDS_ROOT,
  ignore: !root,
  fn: () =>
    withTopo(async (topo, dir) => {
      const b = topo.vms[1];
      const traffic = new Traffic(topo.netns);
      // Count the segments that carry data (PSH): one per paced send with TCP_NODELAY.
      const cap = await traffic.tcpdump({
        on: b,
        filter: "tcp dst port 5001 and tcp[13] & 8 != 0",
        count: 10,
        file: `${dir}/tcp.pcap`,
      });
      const sent = await traffic.tcp({
        from: { ip: topo.hostIp, netns: null },
        to: b,
        port: 5001,
        count: 10,
        rate: 200,
        marker: "tcp-1",
      });
      await cap.done(10_000);
      assertEquals(await readMarkers(`${dir}/tcp.pcap`), sent);
    }),
});

Deno.test({
  name: "steady traffic runs until stopped and the sink receives it" + NEEDS_ROOT,
  ignore: !root,
  fn: () =>
    withTopo(async (topo, dir) => {
      const [a, b] = topo.vms;
      const traffic = new Traffic(topo.netns);
      const steady = await traffic.steady({ from: a, to: b, port: 6000, rate: 200 });
      let stopped = false;
      try {
        // Wait for traffic with a capture rather than a sleep.
        const cap = await traffic.tcpdump({
          on: b,
          filter: "udp dst port 6000",
          count: 20,
          file: `${dir}/steady.pcap`,
        });
        await cap.done(10_000);
        const markers = await readMarkers(`${dir}/steady.pcap`);
        assertEquals(markers.length, 20);
        assert(markers.every((m) => m.startsWith(steady.marker + ":")));
        const { sent, received } = await steady.stop();
        stopped = true;
        assert(sent >= 20, `sent ${sent}`);
        assertEquals(received, sent);
      } finally {
        if (!stopped) await steady.stop();
      }
    }),
});

Deno.test({
  name: "a sender to an address nobody answers on still completes (ICMP is fine)" + NEEDS_ROOT,
  ignore: !root,
  fn: () =>
    withTopo(async (topo) => {
      const [a, b] = topo.vms;
      const sent = await new Traffic(topo.netns).udp({
        from: a,
        to: b,
        port: 5999,
        count: 5,
        rate: 0,
      });
      assertEquals(sent.length, 5);
    }),
});
