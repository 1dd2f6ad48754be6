/**
 * The capture WebSocket's upgrade (app.ts): the bearer token is taken from the Authorization
 * header only and verified before any socket exists, and the caps on waiting sockets (those of
 * verified users that have no capture yet) are checked per user and in total. A refused upgrade
 * is an HTTP error `{type, text}`; its audit line is aggregated, as it names no verified identity.
 */
import type { Logger } from "../lib/log.ts";
import type { AuditLog } from "./audit.ts";
import type { ApiMetrics } from "./metrics.ts";
import type { ApiConfig } from "./config.ts";
import { ApiError, asApiError, errorResponse, limitReached } from "./errors.ts";
import { type ClientPeer, writeCaptureAudit } from "./capture_audit.ts";
import type { SessionAuth } from "./client_session.ts";
import type { TargetResolver } from "./target_resolver.ts";

const TOKEN_PARAMS = /^(access_token|token|bearer|authorization|auth)$/i;

/** The bearer token from the Authorization header, or why there is none usable. */
export function bearerToken(
  header: string | undefined,
  url: URL,
): { value: string } | { problem: string } {
  for (const [k, v] of url.searchParams) {
    if (TOKEN_PARAMS.test(k) || /^eyJ[\w-]+\.[\w-]+\./.test(v)) {
      return {
        problem: "a token in the URL is refused (URLs end up in proxy logs); send it in the " +
          "Authorization: Bearer header and log in again, as it may have leaked",
      };
    }
  }
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header ?? "");
  if (!m) {
    return {
      problem: header
        ? "the Authorization header is not 'Bearer <token>'"
        : "no token: send your UAA access token in the Authorization: Bearer header " +
          "(log in with 'bosh log-in')",
    };
  }
  return { value: m[1] };
}

/** What the upgrade check reports to. */
export interface UpgradeDeps {
  metrics: ApiMetrics;
  audit: AuditLog;
  log: Logger;
}

/**
 * Authentication at the upgrade: the verified token and identity for the session, or the HTTP
 * answer of the refusal (401 with `WWW-Authenticate: Bearer`, 502 when the UAA is unreachable).
 */
export async function authenticateUpgrade(
  req: Request,
  resolver: TargetResolver,
  deps: UpgradeDeps,
  peer: ClientPeer,
): Promise<SessionAuth | Response> {
  const credential = bearerToken(req.headers.get("authorization") ?? undefined, new URL(req.url));
  let err: ApiError;
  if ("value" in credential) {
    try {
      return { token: credential.value, user: await resolver.authenticate(credential.value) };
    } catch (e) {
      err = asApiError(e);
    }
  } else err = new ApiError("UNAUTHENTICATED", credential.problem);
  if (err.kind === "UNAUTHENTICATED" || err.kind === "PERMISSION_DENIED") {
    deps.metrics.authFailures.inc({ type: err.kind });
  }
  deps.metrics.captures.inc({ resolver: resolver.name, outcome: err.kind });
  // Without a verified identity a refusal costs the sender nothing: aggregated audit lines.
  writeCaptureAudit(deps.audit, {
    user: null,
    request: null,
    targets: [],
    resolver: resolver.name,
    facts: {},
    filter: "",
    start: new Date(),
    packets: 0,
    bytes: 0,
    outcome: err.kind,
    detail: err.message,
    peer,
  });
  deps.log.debug("upgrade refused", { remote: peer.remote, type: err.kind });
  const res = errorResponse(err);
  if (err.kind === "UNAUTHENTICATED") {
    res.headers.set("www-authenticate", 'Bearer realm="pcap", error="invalid_token"');
  }
  return res;
}

/** A session as the waiting-sockets caps see it. */
export interface WaitingSession {
  /** open, and no capture slot yet */
  readonly waiting: boolean;
  readonly userKey: string;
}

/**
 * The refusal of a verified user's new socket when a waiting-sockets cap is full, or null
 * (pure). Per user first: a user at their own limit should learn that, not blame others.
 */
export function waitingRefusal(
  sessions: Iterable<WaitingSession>,
  userKey: string,
  limits: Pick<ApiConfig["limits"], "maxWaitingSessions" | "perUserWaitingSessions">,
): ApiError | null {
  const { maxWaitingSessions: max, perUserWaitingSessions: perUser } = limits;
  const waiting = [...sessions].filter((s) => s.waiting);
  const mine = waiting.filter((s) => s.userKey === userKey).length;
  if (mine >= perUser) {
    return limitReached(
      "per_user_waiting_sessions",
      perUser,
      `you already hold ${mine} connection(s) that have not started a capture (the per-user ` +
        `limit is ${perUser}); close them or send their start request, then retry`,
    );
  }
  if (waiting.length >= max) {
    return limitReached(
      "max_waiting_sessions",
      max,
      `the api already holds ${max} connections that have not started a capture; ` +
        "retry in a moment",
    );
  }
  return null;
}
