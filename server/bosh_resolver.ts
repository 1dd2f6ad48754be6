/**
 * The BOSH Director behind the TargetResolver seam: the token is verified against the UAA the
 * Director names, the deployment's instances are listed with the user's own token (so the
 * Director's authorization applies), and the selection becomes agent targets on the
 * configured agent port.
 */
import type { ApiConfig } from "./config.ts";
import type { Instance } from "./director_client.ts";
import type { VerifiedToken } from "./token_verifier.ts";
import type { FilterChecker } from "./filter_compose.ts";
import { planTargets } from "./capture_plan.ts";
import type { Resolution, StartRequest, TargetResolver } from "./target_resolver.ts";

type BoshStart = Extract<StartRequest, { resolver: "bosh" }>;

export interface BoshResolverDeps {
  config: ApiConfig;
  verifier: { verify(token: string): Promise<VerifiedToken> };
  director: { instances(deployment: string, token: string): Promise<Instance[]> };
  checkFilter?: FilterChecker;
}

export class BoshResolver implements TargetResolver<BoshStart> {
  readonly name = "bosh" as const;

  constructor(private readonly deps: BoshResolverDeps) {}

  authenticate(token: string): Promise<VerifiedToken> {
    return this.deps.verifier.verify(token);
  }

  async resolve(
    start: BoshStart,
    _user: VerifiedToken,
    token: string,
    userFilter: string,
  ): Promise<Resolution> {
    const req = start.request;
    const { config, checkFilter } = this.deps;
    const instances = await this.deps.director.instances(req.bosh.deployment, token);
    const plan = planTargets(instances, req, userFilter, config, checkFilter);
    const port = config.bosh.agentPort;
    return {
      targets: plan.targets.map((t) => ({
        address: t.ip,
        port,
        origin: t.origin,
        filter: plan.filters.get(t.id)!,
        instance: {
          deployment: req.bosh.deployment,
          group: t.group,
          ...(t.index === null ? {} : { index: t.index }),
          id: t.id,
        },
      })),
      skipped: plan.skipped.map((s) => ({ origin: s.origin, reason: s.reason })),
      audit: { deployment: req.bosh.deployment },
    };
  }
}
