/**
 * The Cloud Controller behind the TargetResolver seam (DESIGN §2, CF): the token is verified
 * against the UAA the CC's root names, with the BOSH resolver's JWKS and claims rules plus
 * `aud` ∋ `cloud_controller`; the app, its permissions, SSH and process stats are asked with
 * the user's own token (cf_lookup.ts); each RUNNING instance becomes an agent target on its
 * cell, naming the container the agent must enter.
 */
import { TokenVerifier, type VerifiedToken } from "./token_verifier.ts";
import type { CcClient } from "./cc_client.ts";
import { lookupCfTargets } from "./cf_lookup.ts";
import { requireTargets } from "./cf_selection.ts";
import { CfStartRequest } from "../protocol/cf_messages.ts";
import type {
  Resolution,
  ResolveContext,
  ResolverFacts,
  TargetResolver,
} from "./target_resolver.ts";

export interface CfResolverDeps {
  cc: CcClient;
  verifier: {
    authenticate(token: string): Promise<VerifiedToken>;
    authorize(user: VerifiedToken): Promise<void>;
  };
  /** cf.agent_port */
  agentPort: number;
  /** cf.require_ssh_enabled */
  requireSshEnabled: boolean;
  /** limits.max_targets */
  maxTargets: number;
}

/** Scopes that let the CC answer reads; the CC decides the rest with the user's own token. */
export const CF_ACCEPTED_SCOPES = [
  "cloud_controller.read",
  "cloud_controller.admin",
  "cloud_controller.admin_read_only",
  "cloud_controller.global_auditor",
];

/** The token verifier of the CF resolver: keys from the UAA the CC names, CC's audience. */
export function cfTokenVerifier(
  cc: CcClient,
  opts: { timeoutMs: number; now?: () => number },
): TokenVerifier {
  return new TokenVerifier({
    source: { uaaUrl: () => cc.uaaUrl(), info: () => Promise.resolve({ uuid: "" }) },
    requiredScope: "cloud_controller.read",
    acceptedScopes: CF_ACCEPTED_SCOPES,
    audience: "cloud_controller",
    timeoutMs: opts.timeoutMs,
    fetch: cc.uaaFetch,
    now: opts.now,
  });
}

export class CfResolver implements TargetResolver<CfStartRequest> {
  readonly name = "cf";
  readonly path = "/v1/capture/cf";
  readonly startRequest = CfStartRequest;

  constructor(private readonly deps: CfResolverDeps) {}

  authenticate(token: string): Promise<VerifiedToken> {
    return this.deps.verifier.authenticate(token);
  }

  authorize(user: VerifiedToken): Promise<void> {
    return this.deps.verifier.authorize(user);
  }

  async resolve(request: CfStartRequest, ctx: ResolveContext): Promise<Resolution> {
    const { cc, agentPort: port } = this.deps;
    const req = request.cf;
    const found = await lookupCfTargets(cc, req, ctx.token, ctx.user.user, {
      requireSshEnabled: this.deps.requireSshEnabled,
      maxTargets: this.deps.maxTargets,
    });
    requireTargets(found.selection, found.app.name);
    return {
      targets: found.selection.targets.map((t) => ({
        address: t.host,
        port,
        origin: t.origin,
        container: t.container,
        instance: { group: found.app.name, index: t.index, id: t.id },
      })),
      skipped: found.selection.skipped.map((s) => ({ origin: s.origin, reason: s.reason })),
      facts: {
        org: found.org.name,
        space: found.space.name,
        app: found.app.name,
        app_guid: found.app.guid,
        process: found.process,
        indexes: indexes(request),
      },
    };
  }

  /** What the request itself says; the resolved names replace these once the CC answered. */
  facts(request: CfStartRequest): ResolverFacts {
    const c = request.cf;
    return {
      org: c.org,
      space: c.space ?? c.space_guid,
      app: c.app ?? c.app_guid,
      process: c.process,
      indexes: indexes(request),
    };
  }
}

function indexes(request: CfStartRequest): string {
  return request.cf.indexes.length ? request.cf.indexes.join(",") : "all";
}
