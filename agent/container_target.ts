/**
 * The network namespace a start request's `target` names (DESIGN §2, CF): none for a BOSH VM
 * capture; for a CF container, the `/proc/<pid>/ns/net` that container_lookup.ts finds and
 * verifies. The capture worker enters it on its own thread; the agent process stays home.
 */
import type { CaptureTarget } from "../protocol/messages.ts";
import type { CfAgentConfig } from "./cf_agent_config.ts";
import { ContainerLookupError, type FoundContainer, lookupContainer } from "./container_lookup.ts";

export async function containerNetns(
  target: CaptureTarget,
  cf: CfAgentConfig,
  opts: { retryDelayMs?: number } = {},
): Promise<FoundContainer> {
  if (!cf.enabled) {
    throw new ContainerLookupError(
      "this agent does not capture in CF containers (cf.enabled is false); it is not a Diego " +
        "cell agent",
    );
  }
  if ("container" in target) {
    throw new ContainerLookupError(
      "a container target needs app_guid with instance_guid (or with ip); the instance guid " +
        "alone cannot be checked against the app",
    );
  }
  return await lookupContainer(target, {
    containerStore: cf.container_store,
    runcRoot: cf.runc_root,
    retryDelayMs: opts.retryDelayMs,
  });
}
