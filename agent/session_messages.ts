/**
 * The JSON messages of an agent capture stream (pure): HELLO, SOURCE, STATS from the engine's
 * counters, and the STATUS texts for congestion and the agent's maximum duration.
 */
import {
  type Hello,
  type SourceDescriptor,
  type SourceStats,
  status,
  type StatusMessage,
} from "../protocol/messages.ts";
import { makeHello } from "../protocol/hello.ts";
import type { BufferLimits, Transition } from "./backpressure.ts";
import type { EngineLike } from "./engine_like.ts";

/** The agent's HELLO, first frame of each capture stream. */
export function agentHello(origin: string): Hello {
  return makeHello("agent", origin);
}

export function sourceDescriptor(
  origin: string,
  iface: string,
  engine: Pick<EngineLike, "linkType" | "snaplen">,
): SourceDescriptor {
  return { origin, interface: iface, link_type: engine.linkType, snaplen: engine.snaplen };
}

/** STATS: the kernel's and engine's counters, the agent's discards and what was sent. */
export function sourceStats(
  s: ReturnType<EngineLike["stats"]>,
  agentDropped: number,
  sent: { packets: number; bytes: number },
  final: boolean,
): SourceStats {
  return {
    received: s.received,
    dropped: s.dropped,
    if_dropped: s.ifDropped,
    engine_dropped: s.engineDropped,
    agent_dropped: agentDropped,
    api_dropped: 0,
    packets: sent.packets,
    bytes: sent.bytes,
    final,
  };
}

/** CONGESTED when the reader falls behind, and again when the queue has drained. */
export function congestionStatus(
  t: Transition,
  origin: string,
  limits: BufferLimits,
  discardedTotal: number,
): StatusMessage {
  if (t.kind === "congested") {
    return status(
      "CONGESTED",
      origin,
      `reader too slow: ${t.queued} packet batches queued (buffer.upper_limit ` +
        `${limits.upperLimit}); discarding packets until the queue drains to ` +
        `${limits.lowerLimit}`,
      { counts: { queued: t.queued, discarded_total: discardedTotal } },
    );
  }
  const c = t.counts;
  return status(
    "CONGESTED",
    origin,
    `congestion cleared: ${c.packets} packets (${c.batches} batches) were discarded`,
    {
      counts: {
        discarded_packets: c.packets,
        discarded_batches: c.batches,
        discarded_bytes: c.bytes,
        discarded_total: discardedTotal,
        cleared: 1,
      },
    },
  );
}

export function maxDurationStatus(origin: string, seconds: number): StatusMessage {
  return status(
    "LIMIT_REACHED",
    origin,
    `capture reached this agent's maximum duration of ${seconds} s (limits.max_duration); stopping`,
    { limit: { name: "max_duration", value: seconds } },
  );
}
