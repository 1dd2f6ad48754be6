/**
 * What a client's start request becomes once its resolver has answered (pure): the targets to
 * capture with each one's filter (the user's, minus the agent's own traffic), the effective
 * limits, and the request each agent is sent. Platform-neutral: it sees resolved targets only.
 */
import type { AgentStartRequest } from "../protocol/messages.ts";
import { PROTOCOL_VERSION } from "../protocol/version.ts";
import type { ApiConfig } from "./config.ts";
import { type EffectiveBounds, effectiveBounds } from "./limits.ts";
import { ApiError } from "./errors.ts";
import type {
  AgentTarget,
  Resolution,
  SkippedTarget,
  StartRequestBase,
} from "./target_resolver.ts";
import { composeFilters, exclusionFilter, type FilterChecker } from "./filter_compose.ts";

export interface TargetPlan {
  targets: AgentTarget[];
  skipped: SkippedTarget[];
}

/**
 * Composes each target's filter from a user filter validateUserFilter returned (one compile for
 * all targets); throws START_CAPTURE_FAILED if no target is left.
 */
export async function planTargets(
  resolution: Resolution,
  userFilter: string,
  check?: FilterChecker,
): Promise<TargetPlan> {
  if (resolution.targets.length === 0) {
    throw new ApiError(
      "START_CAPTURE_FAILED",
      "no selected instance can be captured: " +
        resolution.skipped.map((s) => `${s.origin} ${s.reason}`).join("; "),
    );
  }
  const exclusions = resolution.targets.map((t) =>
    exclusionFilter({ host: t.address, port: t.port })
  );
  const filters = await composeFilters(userFilter, exclusions, { check });
  return {
    targets: resolution.targets.map((t, i) => ({ ...t, filter: filters[i] })),
    skipped: resolution.skipped,
  };
}

/** The client's duration and byte limits clamped to the api's maxima. */
export function captureBounds(req: StartRequestBase, config: ApiConfig): EffectiveBounds {
  return effectiveBounds(
    { durationMs: req.limits.duration_ms, bytes: req.limits.max_bytes },
    { maxDurationMs: config.limits.maxDurationMs, maxBytes: config.limits.maxBytes },
  );
}

/** The start request one agent is sent. */
export function agentRequest(
  req: Pick<StartRequestBase, "interface" | "snaplen">,
  target: AgentTarget,
  bounds: EffectiveBounds,
  requester: string,
): AgentStartRequest {
  return {
    protocol_version: PROTOCOL_VERSION,
    interface: req.interface,
    snaplen: req.snaplen,
    filter: target.filter,
    ...(target.container ? { target: target.container } : {}),
    promiscuous: false,
    // Safety net only: the api stops agents itself, a little before this.
    ...(bounds.durationMs > 0 ? { duration_ms: bounds.durationMs + 5000 } : {}),
    requester,
  };
}
