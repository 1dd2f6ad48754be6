/**
 * Limits and back-pressure: the concurrency limit answers 429 LIMIT_REACHED, the duration limit
 * ends the stream with STATUS LIMIT_REACHED and a clean stop, and a slow reader makes the agent
 * discard packets with CONGESTED counts while its queue stays bounded. Plus the pure hysteresis.
 */
import { assert, assertEquals, assertStringIncludes, assertThrows } from "./support/assert.ts";
import {
  agentYaml,
  type Lab,
  postJson,
  readStream,
  startBody,
  statuses,
  type TestPki,
  waitFor,
  withAgent,
  withPki,
  withVmLab,
} from "./support/agent_harness.ts";
import { Backpressure } from "../agent/backpressure.ts";
import { FrameKind } from "../protocol/frame_codec.ts";
import { isRoot } from "../lab/netns.ts";

Deno.test("Backpressure: discards from upper_limit until the queue drains to lower_limit", () => {
  const bp = new Backpressure({ size: 10, upperLimit: 8, lowerLimit: 3 });
  assertEquals(bp.offer(7, 5, 500), { accept: true, transition: undefined });
  const first = bp.offer(8, 5, 500);
  assertEquals(first.accept, false);
  assertEquals(first.transition, { kind: "congested", queued: 8 });
  // Still above lower_limit: keep discarding, no new transition.
  assertEquals(bp.offer(5, 2, 200), { accept: false, transition: undefined });
  assertEquals(bp.observe(4), null);
  assert(bp.congested);
  assertEquals(bp.observe(3), {
    kind: "cleared",
    queued: 3,
    counts: { packets: 7, batches: 2, bytes: 700 },
  });
  assertEquals(bp.offer(3, 1, 100).accept, true);
  assertEquals(bp.total, { packets: 7, batches: 2, bytes: 700 });
  // A second episode counts separately; the total keeps growing.
  assertEquals(bp.offer(9, 4, 40).transition?.kind, "congested");
  assertEquals(bp.current, { packets: 4, batches: 1, bytes: 40 });
  assertEquals(bp.episodes, 2);
  assertEquals(bp.total.packets, 11);
  assertThrows(() => new Backpressure({ size: 5, upperLimit: 6, lowerLimit: 1 }), RangeError);
  assertThrows(() => new Backpressure({ size: 5, upperLimit: 3, lowerLimit: 3 }), RangeError);
});

const withLimitsPki = (fn: (t: TestPki) => Promise<void>) => withPki("agent-limits-", fn);

Deno.test({
  name: "concurrency limit: the capture beyond limits.concurrent_captures gets 429 LIMIT_REACHED",
  ignore: !isRoot(),
  fn: () =>
    withLimitsPki(async (t) => {
      await withAgent(
        t,
        { extra: "limits:\n  concurrent_captures: 1\n" },
        async (agent, client) => {
          const first = await postJson(client, agent.url("/captures"), startBody());
          assertEquals(first.status, 200);
          const id = first.headers.get("x-pcap-capture-id")!;
          const reading = readStream(first.body!);
          const second = await postJson(client, agent.url("/captures"), startBody());
          assertEquals(second.status, 429);
          const body = await second.json();
          assertEquals(body.type, "LIMIT_REACHED");
          assertEquals(body.limit, { name: "concurrent_captures", value: 1 });
          assertStringIncludes(body.text, "limits.concurrent_captures");
          const h = await (await fetch(agent.url("/health"), { client })).json();
          assertEquals(h.active_captures, 1);
          (await postJson(client, agent.url(`/captures/${id}/stop`), "")).body?.cancel();
          assertEquals((await reading).kinds.at(-1), "END");
          // The slot is free again once the first capture has ended.
          await waitFor(() => agent.server.activeCaptures === 0, 3000, "the first capture to end");
          const third = await postJson(client, agent.url("/captures"), startBody());
          assertEquals(third.status, 200);
          await third.body!.cancel();
        },
      );
    }),
});

Deno.test({
  name: "duration: limits.max_duration ends with STATUS LIMIT_REACHED; a shorter ask just stops",
  ignore: !isRoot(),
  fn: () =>
    withLimitsPki(async (t) => {
      await withAgent(t, { extra: "limits:\n  max_duration: 1s\n" }, async (agent, client) => {
        const res = await postJson(client, agent.url("/captures"), startBody());
        const limited = await readStream(res.body!);
        const reached = statuses(limited, "LIMIT_REACHED");
        assertEquals(reached.length, 1);
        assertEquals(reached[0].limit, { name: "max_duration", value: 1 });
        assertStringIncludes(String(reached[0].text), "limits.max_duration");
        assertEquals(limited.kinds.slice(-3), ["STATS", "STATUS", "END"]);
        assertEquals(statuses(limited, "CAPTURE_STOPPED").length, 1);

        const short = await postJson(
          client,
          agent.url("/captures"),
          startBody({ duration_ms: 300 }),
        );
        const asked = await readStream(short.body!);
        assertEquals(statuses(asked, "LIMIT_REACHED").length, 0);
        assertStringIncludes(
          String(statuses(asked, "CAPTURE_STOPPED")[0].text),
          "duration of 0.3 s elapsed",
        );
        assertEquals(asked.kinds.at(-1), "END");
      });
    }),
});

/** Sends one PCAPPROBE datagram to port 9999 from the peer namespace (it also resolves ARP). */
async function probe(lab: Lab): Promise<void> {
  const script = `require "socket"
UDPSocket.new.send("PCAPPROBE", 0, "198.18.0.1", 9999)`;
  await lab.netns.exec(lab.peer, ["ruby", "-e", script]);
}

const payloadMark = (p: { data: Uint8Array }) => new TextDecoder().decode(p.data.subarray(42, 51));

/**
 * Floods the VM with `count` 1400-byte datagrams to port 9999 from the peer namespace; call it
 * once a probe() was captured, so that ARP is resolved and the capture is live.
 */
async function flood(lab: Lab, count: number): Promise<void> {
  const script = `require "socket"
s = UDPSocket.new
ARGV[0].to_i.times { |i| s.send(format("PCAPFLOOD %06d ", i) + "y" * 1384, 0, "198.18.0.1", 9999); sleep 0.0002 if i % 20 == 0 }`;
  await lab.netns.exec(lab.peer, ["ruby", "-e", script, String(count)]);
}

Deno.test({
  name: "slow reader: CONGESTED with counts, discards bounded by buffer limits, then cleared",
  ignore: !isRoot(),
  fn: () =>
    withVmLab("agent-limits-", async (lab, t) => {
      const yaml = agentYaml(t, {
        extra: "buffer:\n  size: 8\n  upper_limit: 6\n  lower_limit: 2\n" +
          "capture:\n  timeout_ms: 20\n",
      });
      const sent = 12000;
      await withAgent(t, { yaml, netns: `/run/netns/${lab.vm}` }, async (agent, client) => {
        const res = await postJson(
          client,
          agent.url("/captures"),
          startBody({ interface: lab.vmDev, filter: "udp dst port 9999" }),
        );
        assertEquals(res.status, 200);
        const id = res.headers.get("x-pcap-capture-id")!;
        let stopping = false;
        let flooded = false;
        const result = await readStream(res.body!, async (f, r) => {
          if (f.kind === FrameKind.SOURCE) await probe(lab);
          if (!flooded && r.packets.some((p) => payloadMark(p) === "PCAPPROBE")) {
            flooded = true;
            // Do not read while ~16 MB arrive: TCP buffers fill, then the agent's queue, until
            // the agent starts discarding (its CONGESTED status waits in the unread stream).
            await flood(lab, sent);
            await waitFor(
              () => agent.logs.some((l) => l.msg === "client too slow, discarding packets"),
              10_000,
              "the agent to discard packets for the slow reader (CONGESTED)",
            );
          }
          const cleared = statuses(r, "CONGESTED").some((s) =>
            (s.counts as Record<string, number>)?.cleared === 1
          );
          if (cleared && !stopping) {
            stopping = true;
            (await postJson(client, agent.url(`/captures/${id}/stop`), "")).body?.cancel();
          }
        });
        assert(flooded, "the probe datagram was never captured, so no flood was sent");
        const congested = statuses(result, "CONGESTED");
        assert(
          congested.length >= 2,
          `expected CONGESTED and its clearing, got ${congested.length}`,
        );
        assertStringIncludes(String(congested[0].text), "discarding packets");
        const clearedMsg = congested.find((s) => String(s.text).startsWith("congestion cleared"))!;
        const counts = clearedMsg.counts as Record<string, number>;
        assert(counts.discarded_packets > 0, JSON.stringify(counts));
        assert(counts.discarded_batches > 0);
        const final = result.json.filter((j) => j.kind === "STATS").at(-1)!;
        assertEquals(final.final, true);
        const streamed = result.packets.length;
        assertEquals(final.packets, streamed, "STATS packets = packets in the stream");
        assert(
          result.packets.every((p) => ["PCAPPROBE", "PCAPFLOOD"].includes(payloadMark(p))),
          "only the probe and the flood match the filter",
        );
        assert((final.agent_dropped as number) >= counts.discarded_packets);
        // Every packet the kernel saw is accounted for: streamed or dropped somewhere, by count.
        assertEquals(
          streamed + (final.agent_dropped as number) + (final.engine_dropped as number) +
            (final.dropped as number),
          final.received,
        );
        // Not `received === sent + 1`: the veth backlog may drop a few datagrams before libpcap
        // sees them, and no counter reports those.
        assert((final.received as number) <= sent + 1, `kernel received ${final.received}`);
        const ended = agent.logs.find((l) => l.msg === "capture ended")!;
        assert((ended.peak_queued as number) <= 8, `queue peaked at ${ended.peak_queued} frames`);
        assertEquals(ended.discarded, final.agent_dropped);
        assertEquals(result.kinds.at(-1), "END");
      });
    }),
});
