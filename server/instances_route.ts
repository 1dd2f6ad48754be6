/**
 * `POST /v1/instances/<resolver>`: what a capture with the same start request would capture,
 * without capturing (the clients' `instances` command and `capture --dry-run`). The body is the
 * start request the client would send on the resolver's capture route; it is checked, the token
 * authenticated and the targets resolved exactly as for a capture (so the platform authorizes
 * with the user's own token), then every agent is asked for its health in parallel, each within
 * timeouts.agent_connect (not with `?probe=false`, which a capture's preview uses). The answer lists each target with its agent's state and the
 * instances that would be skipped. Nothing is started, and no capture slot is taken.
 *
 * @module
 */
import type { Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { Logger } from "../lib/log.ts";
import { checkPeerVersion } from "../protocol/hello.ts";
import { MAX_CONTROL_MESSAGE_BYTES } from "../protocol/messages.ts";
import type { AgentTlsOptions } from "./agent_client.ts";
import { probeAgents } from "./agent_probe.ts";
import {
  type AgentProbe,
  type InstancesAnswer,
  instancesRoutePath,
  PROBE_PARAM,
} from "../protocol/instances.ts";
import { readClientMessage } from "./client_message.ts";
import { ApiError } from "./errors.ts";
import { type FilterChecker, validateUserFilter } from "./filter_compose.ts";
import type { TargetResolver } from "./target_resolver.ts";

/** The listing route of a resolver, e.g. `/v1/instances/bosh`. */
export function instancesPath(resolver: Pick<TargetResolver, "name">): string {
  return instancesRoutePath(resolver.name);
}

/** What the route needs from the api. */
export interface InstancesDeps {
  agentTls: AgentTlsOptions;
  /** bound of each agent probe (timeouts.agent_connect) */
  probeTimeoutMs: number;
  checkFilter?: FilterChecker;
  log: Logger;
  /** the bearer token of a request, or why there is none (the capture route's rules) */
  bearer(c: Context): { value: string } | { problem: string };
}

/** Resolves and probes; throws ApiError like a capture's start would. */
export async function listInstances(
  resolver: TargetResolver,
  token: string,
  body: string,
  deps: Omit<InstancesDeps, "bearer">,
  probe = true,
): Promise<InstancesAnswer> {
  const msg = readClientMessage(body, true, resolver.startRequest);
  if (msg.kind !== "start") {
    throw new ApiError(
      "INVALID_REQUEST",
      msg.kind === "invalid" ? msg.problem : "send the capture's start request",
    );
  }
  const req = msg.request;
  const tooOld = checkPeerVersion(req.protocol_version, "client", "api");
  if (tooOld) throw new ApiError("INVALID_REQUEST", tooOld);
  const user = await resolver.authenticate(token);
  await resolver.authorize?.(user);
  await validateUserFilter(req.filter, { check: deps.checkFilter });
  const resolution = await resolver.resolve(req, { token, user });
  const probes: AgentProbe[] = probe
    ? await probeAgents(
      resolution.targets.map((t) => ({ origin: t.origin, host: t.address, port: t.port })),
      deps.agentTls,
      deps.probeTimeoutMs,
    )
    : resolution.targets.map(() => ({ status: "unprobed" }));
  const facts = { ...resolver.facts(req), ...resolution.facts };
  deps.log.info("instances listed", {
    ...facts,
    resolver: resolver.name,
    user: user.user,
    user_key: user.key,
    targets: resolution.targets.length,
    agents_up: probes.filter((p) => p.status === "up").length,
    skipped: resolution.skipped.length,
  });
  return {
    resolver: resolver.name,
    targets: resolution.targets.map((t, i) => ({
      origin: t.origin,
      address: t.address,
      port: t.port,
      ...(t.instance ? { instance: t.instance } : {}),
      agent: probes[i],
    })),
    skipped: resolution.skipped,
    facts,
  };
}

/** Adds the listing route of `resolver` to the api's app. */
export function instancesRoute(app: Hono, resolver: TargetResolver, deps: InstancesDeps): void {
  const tooLarge = () => {
    throw new ApiError(
      "INVALID_REQUEST",
      `the request body exceeds the ${MAX_CONTROL_MESSAGE_BYTES}-byte limit of a start request`,
      undefined,
      413,
    );
  };
  app.post(
    instancesPath(resolver),
    bodyLimit({ maxSize: MAX_CONTROL_MESSAGE_BYTES, onError: tooLarge }),
    async (c) => {
      const token = deps.bearer(c);
      if ("problem" in token) throw new ApiError("UNAUTHENTICATED", token.problem);
      const answer = await listInstances(
        resolver,
        token.value,
        await c.req.text(),
        deps,
        probeWanted(c.req.query(PROBE_PARAM)),
      );
      return c.json(answer);
    },
  );
  app.get(instancesPath(resolver), () => {
    throw new ApiError(
      "INVALID_REQUEST",
      `POST the capture's start request to ${instancesPath(resolver)} (JSON)`,
      undefined,
      405,
    );
  });
}

/** `?probe=`: absent or `true` probes the agents, `false` does not; anything else is refused. */
export function probeWanted(value: string | undefined): boolean {
  if (value === undefined || value === "true") return true;
  if (value === "false") return false;
  throw new ApiError(
    "INVALID_REQUEST",
    `?${PROBE_PARAM}= takes true or false, not ${JSON.stringify(value.slice(0, 40))}`,
  );
}
