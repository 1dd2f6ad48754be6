/**
 * Errors that become STATUS messages. Every error a peer reports to another carries a stable
 * `type` (a StatusType); this module is the one mapping from such an error to the STATUS
 * message (WebSocket, agent stream) and to the HTTP answer `{type, text}` (agent API).
 *
 * @example An agent refusal as HTTP, and the same error as a STATUS
 * ```ts
 * import { errorResponseBody, httpStatusOf, StatusError, statusOf } from "./status_errors.ts";
 *
 * const err = new StatusError("LIMIT_REACHED", "too many captures", {
 *   limit: { name: "concurrent_captures", value: 4 },
 * });
 * console.log(httpStatusOf(err), errorResponseBody(err)); // 429 { type, text, limit }
 * console.log(statusOf(err, "router/0").type); // LIMIT_REACHED
 * ```
 *
 * @module
 */
import { status, type StatusLimit, type StatusMessage, type StatusType } from "./messages.ts";

/** What any error needs to be reported to a peer. */
export interface TypedError {
  /** the stable discriminant, the STATUS type it maps to */
  readonly type: StatusType;
  /** user-facing text; never a token or key */
  readonly message: string;
  /** which limit was hit (LIMIT_REACHED) */
  readonly limit?: StatusLimit;
  /** an HTTP status other than the type's default (e.g. 404 for an unknown route) */
  readonly httpStatus?: number;
}

/** The HTTP status each type answers with by default. */
const HTTP_STATUS: Record<StatusType, number> = {
  INVALID_REQUEST: 400,
  UNAUTHENTICATED: 401,
  PERMISSION_DENIED: 403,
  LIMIT_REACHED: 429,
  START_CAPTURE_FAILED: 400,
  INSTANCE_UNAVAILABLE: 503,
  CONNECTION_ERROR: 502,
  CONGESTED: 503,
  CAPTURE_STOPPED: 409,
};

/** Options of a StatusError beyond its type and text. */
export interface StatusErrorOptions {
  /** which limit was hit (LIMIT_REACHED) */
  limit?: StatusLimit;
  /** an HTTP status other than the type's default */
  httpStatus?: number;
  /** the underlying error, for logs */
  cause?: unknown;
}

/** The base error of every side: a type, a user-facing text, and optionally a limit. */
export class StatusError extends Error implements TypedError {
  /** which limit was hit (LIMIT_REACHED) */
  readonly limit?: StatusLimit;
  /** an HTTP status other than the type's default */
  readonly httpStatus?: number;
  /**
   * An error reported as `type`.
   * @param type the StatusType this error is reported as
   * @param message what went wrong and what to do, for the user
   */
  constructor(readonly type: StatusType, message: string, opts: StatusErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "StatusError";
    if (opts.limit) this.limit = opts.limit;
    if (opts.httpStatus !== undefined) this.httpStatus = opts.httpStatus;
  }
}

/** The STATUS message that reports `err` on behalf of `origin`. */
export function statusOf(err: TypedError, origin: string): StatusMessage {
  return status(err.type, origin, err.message, err.limit ? { limit: err.limit } : {});
}

/** The HTTP status that answers `err`. */
export function httpStatusOf(err: TypedError): number {
  return err.httpStatus ?? HTTP_STATUS[err.type];
}

/** The JSON body of an HTTP error answer: `{type, text, limit?}` (docs/protocol.md). */
export function errorResponseBody(
  err: TypedError,
): { type: StatusType; text: string; limit?: StatusLimit } {
  return { type: err.type, text: err.message, ...(err.limit ? { limit: err.limit } : {}) };
}
