/**
 * What a client's start request becomes once the Director has answered (pure): the instances
 * to capture with each one's filter (the user's, minus the agent's own traffic), the effective
 * limits, and the request each agent is sent.
 */
import type { AgentStartRequest, BoshStartRequest } from "../protocol/messages.ts";
import { PROTOCOL_VERSION } from "../protocol/version.ts";
import type { ApiConfig } from "./config.ts";
import type { Instance } from "./director_client.ts";
import { ApiError, type EffectiveBounds, effectiveBounds } from "./limits.ts";
import { type Selection, selectTargets } from "./target_selection.ts";
import type { AgentTarget } from "./target_resolver.ts";
import { composeFilter, exclusionFilter, type FilterChecker } from "./filter_compose.ts";

export interface TargetPlan extends Selection {
  /** target id → the filter its agent applies */
  filters: Map<string, string>;
}

/** Selects the targets and composes their filters; throws START_CAPTURE_FAILED if none is left. */
export function planTargets(
  instances: Instance[],
  req: BoshStartRequest,
  userFilter: string,
  config: ApiConfig,
  check?: FilterChecker,
): TargetPlan {
  const selection = selectTargets(
    instances,
    { groups: req.bosh.groups, instances: req.bosh.instances },
    config.limits.maxTargets,
  );
  if (selection.targets.length === 0) {
    throw new ApiError(
      "START_CAPTURE_FAILED",
      "no selected instance can be captured: " +
        selection.skipped.map((s) => `${s.origin} ${s.reason}`).join("; "),
    );
  }
  const port = config.bosh.agentPort;
  const filters = new Map(selection.targets.map((t) => [
    t.id,
    composeFilter(userFilter, exclusionFilter({ host: t.ip, port }), { check }),
  ]));
  return { ...selection, filters };
}

/** The client's duration and byte limits clamped to the api's maxima. */
export function captureBounds(req: BoshStartRequest, config: ApiConfig): EffectiveBounds {
  return effectiveBounds(
    { durationMs: req.limits.duration_ms, bytes: req.limits.max_bytes },
    { maxDurationMs: config.limits.maxDurationMs, maxBytes: config.limits.maxBytes },
  );
}

/** The start request one agent is sent. */
export function agentRequest(
  req: Pick<BoshStartRequest, "interface" | "snaplen">,
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
