/**
 * The seam between a client capture and the platform it captures on. A TargetResolver owns one
 * client route: its start request schema, the token check, the authorization against its
 * platform (BOSH Director, Cloud Controller) and the resolution to agent targets. The client
 * session (client_session.ts) and the capture stream (capture_stream.ts) know nothing else about
 * the platform, so adding one is one more resolver in the api's resolver list (app.ts). The
 * session composes each target's filter (the user's, minus the agent's own connection), so a
 * resolver returns addresses and names only.
 *
 * @example A platform on its own route
 * ```ts ignore
 * class CfResolver implements TargetResolver<CfStartRequest> {
 *   readonly name = "cf";
 *   readonly path = "/v1/capture/cf";
 *   readonly startRequest = CfStartRequest; // a Schema<T> of a StartRequestBase
 *   authenticate(token: string) { return this.verifier.authenticate(token); }
 *   authorize(user: VerifiedToken) { return this.verifier.authorize(user); }
 *   async resolve(req: CfStartRequest, { token }: ResolveContext): Promise<Resolution> {
 *     const instances = await this.cc.appInstances(req.cf.app, token); // CC authorizes
 *     return {
 *       targets: instances.map((i) => ({
 *         address: i.cellIp, port: this.agentPort, origin: `${req.cf.app}/${i.index}`,
 *         container: { container: i.guid },
 *       })),
 *       skipped: [],
 *     };
 *   }
 *   facts(req: CfStartRequest) { return { app: req.cf.app }; }
 * }
 * ```
 *
 * @module
 */
import type {
  CaptureLimits,
  CaptureTarget,
  Schema,
  SourceDescriptor,
} from "../protocol/messages.ts";
import type { VerifiedToken } from "./token_verifier.ts";

/** What every start request carries, whatever its platform adds (e.g. `bosh`). */
export interface StartRequestBase {
  type: "start";
  protocol_version: number;
  interface: string;
  snaplen: number;
  filter: string;
  limits: CaptureLimits;
}

/** One agent a resolver found, and how its source is named for the client. */
export interface ResolvedTarget {
  /** the agent's address (IP) and port */
  address: string;
  port: number;
  /** source name in STATUS texts and pcapng interfaces, e.g. `router/0 (uuid)` */
  origin: string;
  /** CF: the container to capture in; absent for a BOSH VM */
  container?: CaptureTarget;
  /** what the SOURCE frame tells the client about the source */
  instance?: SourceDescriptor["instance"];
}

/** A resolved target with the filter its agent applies (the user's, minus its own connection). */
export interface AgentTarget extends ResolvedTarget {
  filter: string;
}

/** A target that cannot be captured, reported as INSTANCE_UNAVAILABLE; the others go on. */
export interface SkippedTarget {
  origin: string;
  reason: string;
}

/** What a resolver found for one start request. */
export interface Resolution {
  targets: ResolvedTarget[];
  skipped: SkippedTarget[];
  /** facts learned while resolving (e.g. the org and space names); they override `facts()` */
  facts?: ResolverFacts;
}

/** Resolver-specific audit and log fields known from the request (deployment, org/space/app). */
export type ResolverFacts = Record<string, string | undefined>;

/** What the session knows when it asks for the targets. */
export interface ResolveContext {
  /** the bearer token, for platforms that authorize with the user's own token */
  token: string;
  user: VerifiedToken;
}

/**
 * Authenticates + authorizes + resolves. Errors are ApiErrors (UNAUTHENTICATED,
 * PERMISSION_DENIED, INVALID_REQUEST, LIMIT_REACHED, START_CAPTURE_FAILED, CONNECTION_ERROR).
 */
// deno-lint-ignore no-explicit-any
export interface TargetResolver<R extends StartRequestBase = any> {
  /** metrics `resolver` label, audit `resolver` field, /health `resolvers` entry */
  readonly name: string;
  /** the client WebSocket route, e.g. "/v1/capture/bosh" */
  readonly path: string;
  /** the start request schema, validated at the edge */
  readonly startRequest: Schema<R>;
  /**
   * Authentication only, at the WebSocket upgrade: verifies the bearer token and returns the
   * identity that limits and audit are keyed on. Throws UNAUTHENTICATED (or CONNECTION_ERROR).
   */
  authenticate(token: string): Promise<VerifiedToken>;
  /**
   * Authorization of an authenticated user (e.g. the token's scopes), once the start request
   * arrived; throws PERMISSION_DENIED. Absent: the platform authorizes in `resolve` alone.
   */
  authorize?(user: VerifiedToken): Promise<void>;
  /** authorizes the capture (with the user's own token) and lists its targets */
  resolve(request: R, ctx: ResolveContext): Promise<Resolution>;
  /** audit and log fields known from the request alone (also for refused requests) */
  facts(request: R): ResolverFacts;
}
