/**
 * The audit line of one client capture (DESIGN §5): built from what the session learned
 * (verified user, request, targets, counts, outcome) and written so that refusals of sessions
 * that never authenticated are aggregated rather than logged one by one.
 */
import type { BoshStartRequest } from "../protocol/messages.ts";
import type { AuditLog, AuditRecord } from "./audit.ts";
import type { AgentTarget } from "./target_resolver.ts";
import type { VerifiedToken } from "./token_verifier.ts";

/** Where the client connected from, as far as the api can tell. */
export interface ClientPeer {
  /** the TCP peer (gorouter, behind a route) */
  remote?: string;
  /** X-Forwarded-For as received: recorded for the audit, never trusted for anything */
  forwardedFor?: string;
}

export interface CaptureFacts {
  user: VerifiedToken | null;
  request: BoshStartRequest | null;
  targets: AgentTarget[];
  /** the resolver that handled the request, and its own audit fields */
  resolver: AuditRecord["resolver"];
  resolverAudit: Record<string, string | undefined>;
  /** the validated user filter ("" before validation) */
  filter: string;
  start: Date;
  packets: number;
  bytes: number;
  outcome: string;
  detail?: string;
  peer: ClientPeer;
}

/** The audit record of a capture ending now (pure apart from the clock). */
export function captureAuditRecord(f: CaptureFacts, end = new Date()): AuditRecord {
  const { user, request: req } = f;
  return {
    user: user?.user ?? "(unauthenticated)",
    userId: user?.userId,
    origin: user?.origin,
    clientId: user?.clientId,
    resolver: f.resolver,
    deployment: f.resolverAudit.deployment ?? req?.bosh.deployment,
    targets: f.targets.map((t) => t.origin),
    interface: req?.interface ?? "",
    filter: f.filter || req?.filter || "",
    snaplen: req?.snaplen ?? 0,
    start: f.start,
    end,
    packets: f.packets,
    bytes: f.bytes,
    outcome: f.outcome,
    detail: f.detail,
    remote: f.peer.remote,
    forwardedFor: f.peer.forwardedFor,
  };
}

export function writeCaptureAudit(audit: AuditLog, f: CaptureFacts): void {
  const record = captureAuditRecord(f);
  // Refusals of sessions that never authenticated cost an attacker nothing: aggregate them.
  if (f.user) audit.write(record);
  else audit.writeUnauthenticated(record);
}
