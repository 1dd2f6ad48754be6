/**
 * The seam between a client capture and where its targets come from. A TargetResolver
 * authenticates the user, authorizes the capture and resolves the start request to agent
 * targets; the client session and the capture stream never know whether the BOSH Director
 * (bosh_resolver.ts) or the Cloud Controller answered. Adding a platform is one resolver and
 * one entry in the api's resolver list.
 */
import type { BoshStartRequest, CaptureTarget, SourceDescriptor } from "../protocol/messages.ts";
import type { z } from "zod";
import type { CfStartRequest } from "../protocol/cf_messages.ts";
import type { VerifiedToken } from "./token_verifier.ts";

/** A client's start request, tagged by the resolver (route) it arrived on. */
export type StartRequest =
  | { resolver: "bosh"; request: BoshStartRequest }
  | { resolver: "cf"; request: CfStartRequest };

/** Which resolver a start request is for: its route's name and its metrics label. */
export type ResolverName = StartRequest["resolver"];

/** One agent to dial for one source of the capture. */
export interface AgentTarget {
  /** the agent's address (IP) and port */
  address: string;
  port: number;
  /** source name in STATUS texts and pcapng interfaces, e.g. `router/0 (uuid)` */
  origin: string;
  /** the filter that agent applies: the user's, minus the agent's own connection */
  filter: string;
  /** CF: the container to capture in; absent for a BOSH VM */
  container?: z.output<typeof CaptureTarget>;
  /** what the SOURCE frame tells the client about the source */
  instance?: SourceDescriptor["instance"];
}

/** A target that cannot be captured, reported as INSTANCE_UNAVAILABLE; the others go on. */
export interface SkippedTarget {
  origin: string;
  reason: string;
}

/** What a resolver found for one start request. */
export interface Resolution {
  targets: AgentTarget[];
  skipped: SkippedTarget[];
  /** resolver-specific audit fields (e.g. deployment, or org/space/app) */
  audit: Record<string, string | undefined>;
}

/**
 * Authenticates + authorizes + resolves. Errors are ApiErrors (UNAUTHENTICATED,
 * PERMISSION_DENIED, INVALID_REQUEST, LIMIT_REACHED, START_CAPTURE_FAILED, CONNECTION_ERROR).
 */
export interface TargetResolver<R extends StartRequest = StartRequest> {
  /** metrics `resolver` label and audit `resolver` field */
  readonly name: R["resolver"];
  /** verifies the bearer token; the identity limits and audit are keyed on */
  authenticate(token: string): Promise<VerifiedToken>;
  /** authorizes the capture for `user` (with the user's own token) and lists its targets */
  resolve(
    start: R,
    user: VerifiedToken,
    token: string,
    userFilter: string,
  ): Promise<Resolution>;
}
