/**
 * The answer of the api's listing route (`POST /v1/instances/<platform>`, docs/protocol.md
 * "Listing targets"): what a capture with the same start request would capture and whether each
 * agent answers. The api builds it (server/instances_route.ts); the clients validate it here.
 *
 * @module
 */
import { z } from "zod";
import { SourceDescriptor } from "./message_schemas.ts";

/** The listing route of a platform, e.g. `/v1/instances/bosh`. */
export function instancesRoutePath(platform: string): string {
  return `/v1/instances/${platform}`;
}

/** The query parameter that turns the agent probes off (`?probe=false`); `true` is the default. */
export const PROBE_PARAM = "probe";

/**
 * - `up`: answers and takes captures
 * - `draining`: answers but is shutting down (a capture would be refused)
 * - `incompatible`: answers with a protocol this api cannot speak
 * - `unreachable`: no usable answer; `reason` says why
 * - `unprobed`: not asked, because the listing was requested with `?probe=false` (what a capture
 *   asks for before it starts: it reports an agent that is down itself, without waiting twice)
 */
export const AgentState = z.enum(["up", "draining", "incompatible", "unreachable", "unprobed"]);
export type AgentState = z.output<typeof AgentState>;

/** One agent's answer to the api's probe. */
export const AgentProbe = z.object({
  status: AgentState,
  version: z.string().optional(),
  protocol_version: z.number().int().optional(),
  active_captures: z.number().int().nonnegative().optional(),
  /** why it is not `up` */
  reason: z.string().optional(),
});
export type AgentProbe = z.output<typeof AgentProbe>;

/** One target a capture would have. */
export const ListedTarget = z.object({
  origin: z.string(),
  address: z.string(),
  port: z.number().int(),
  instance: SourceDescriptor.shape.instance,
  agent: AgentProbe,
});
export type ListedTarget = z.output<typeof ListedTarget>;

/** The whole answer. */
export const InstancesAnswer = z.object({
  resolver: z.string(),
  targets: z.array(ListedTarget),
  /** selected but not capturable (no address, not running, ...), with why */
  skipped: z.array(z.object({ origin: z.string(), reason: z.string() })),
  /** what the platform told (deployment; org, space, app) */
  facts: z.record(z.string(), z.string().optional()),
});
export type InstancesAnswer = z.output<typeof InstancesAnswer>;
