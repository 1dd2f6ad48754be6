/**
 * Asks agents whether they would take a capture, for the dry run and `instances` listing: GET
 * /health over the same mutual TLS as a capture, every agent at once, each bounded by the agent
 * connect timeout. An agent that does not answer is reported with the reason, never waited for
 * beyond the bound.
 *
 * @module
 */
import { z } from "zod";
import { type AgentEndpoint, type AgentTlsOptions, describeDialError } from "./agent_client.ts";
import { createTlsFetch } from "./tls_fetch.ts";
import { readLimited } from "../lib/read_limited.ts";
import { checkPeerVersion } from "../protocol/hello.ts";
import { PROTOCOL_VERSION } from "../protocol/version.ts";
import type { AgentProbe } from "../protocol/instances.ts";

/** What an agent's /health says, as far as the listing uses it. */
const AgentHealth = z.object({
  draining: z.boolean(),
  version: z.string().max(200),
  protocol_version: z.number().int(),
  min_protocol_version: z.number().int(),
  active_captures: z.number().int().nonnegative(),
});

export type { AgentProbe } from "../protocol/instances.ts";

/** The state an agent's health answer means; pure. */
export function probeOf(origin: string, health: unknown): AgentProbe {
  const parsed = AgentHealth.safeParse(health);
  if (!parsed.success) {
    return {
      status: "unreachable",
      reason: `agent ${origin} answered /health with no agent health`,
    };
  }
  const h = parsed.data;
  const facts = {
    version: h.version,
    protocol_version: h.protocol_version,
    active_captures: h.active_captures,
  };
  const tooOld = checkPeerVersion(h.protocol_version, `agent ${origin}`, "api") ??
    (h.min_protocol_version > PROTOCOL_VERSION
      ? `agent ${origin} needs protocol v${h.min_protocol_version}; upgrade the api`
      : null);
  if (tooOld) return { status: "incompatible", ...facts, reason: tooOld };
  if (h.draining) return { status: "draining", ...facts, reason: "the agent is shutting down" };
  return { status: "up", ...facts };
}

/** Probes one agent; never throws. */
export async function probeAgent(
  ep: AgentEndpoint,
  tls: AgentTlsOptions,
  timeoutMs: number,
): Promise<AgentProbe> {
  const client = createTlsFetch(tls);
  const host = ep.host.includes(":") ? `[${ep.host}]` : ep.host;
  try {
    const res = await client.fetch(`https://${host}:${ep.port}/health`, {
      method: "GET",
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await readLimited(res, 16 * 1024);
    if (res.status !== 200) {
      let why = `HTTP ${res.status}`;
      try {
        const body = JSON.parse(text);
        if (typeof body?.text === "string") why += `: ${body.text.slice(0, 300)}`;
      } catch { /* not JSON */ }
      return { status: "unreachable", reason: `agent ${ep.origin} refused /health (${why})` };
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return probeOf(ep.origin, json);
  } catch (e) {
    return { status: "unreachable", reason: describeDialError(ep, e, timeoutMs).message };
  } finally {
    client.close();
  }
}

/** Probes every agent in parallel; the answers in the order of `endpoints`. */
export function probeAgents(
  endpoints: readonly AgentEndpoint[],
  tls: AgentTlsOptions,
  timeoutMs: number,
): Promise<AgentProbe[]> {
  return Promise.all(endpoints.map((ep) => probeAgent(ep, tls, timeoutMs)));
}
