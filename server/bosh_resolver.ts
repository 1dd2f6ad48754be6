/**
 * The BOSH Director behind the TargetResolver seam: the token is verified against the UAA the
 * Director names, the deployment's instances are listed with the user's own token (so the
 * Director's authorization applies), and the selection becomes agent targets on the configured
 * agent port.
 */
import { BoshStartRequest } from "../protocol/messages.ts";
import type { Instance } from "./director_client.ts";
import type { VerifiedToken } from "./token_verifier.ts";
import { selectTargets } from "./target_selection.ts";
import type {
  Resolution,
  ResolveContext,
  ResolverFacts,
  TargetResolver,
} from "./target_resolver.ts";

export interface BoshResolverOptions {
  verifier: {
    authenticate(token: string): Promise<VerifiedToken>;
    authorize(user: VerifiedToken): Promise<void>;
  };
  director: { instances(deployment: string, token: string): Promise<Instance[]> };
  /** the port every BOSH agent listens on */
  agentPort: number;
  maxTargets: number;
}

export class BoshResolver implements TargetResolver<BoshStartRequest> {
  readonly name = "bosh";
  readonly path = "/v1/capture/bosh";
  readonly startRequest = BoshStartRequest;

  constructor(private readonly opts: BoshResolverOptions) {}

  authenticate(token: string): Promise<VerifiedToken> {
    return this.opts.verifier.authenticate(token);
  }

  authorize(user: VerifiedToken): Promise<void> {
    return this.opts.verifier.authorize(user);
  }

  async resolve(req: BoshStartRequest, ctx: ResolveContext): Promise<Resolution> {
    const { deployment } = req.bosh;
    const instances = await this.opts.director.instances(deployment, ctx.token);
    const selection = selectTargets(
      instances,
      { groups: req.bosh.groups, instances: req.bosh.instances },
      this.opts.maxTargets,
    );
    return {
      targets: selection.targets.map((t) => ({
        address: t.ip,
        port: this.opts.agentPort,
        origin: t.origin,
        instance: {
          deployment,
          group: t.group,
          ...(t.index === null ? {} : { index: t.index }),
          id: t.id,
        },
      })),
      skipped: selection.skipped.map((s) => ({ origin: s.origin, reason: s.reason })),
    };
  }

  facts(req: BoshStartRequest): ResolverFacts {
    return { deployment: req.bosh.deployment };
  }
}
