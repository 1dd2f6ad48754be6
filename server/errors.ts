/**
 * The api's errors: every failure the api reports is an `ApiError`, a StatusError whose stable
 * `type` is the StatusType of the STATUS message (WebSocket) or the `{type, text}` body (HTTP)
 * it becomes. protocol/status_errors.ts holds the one mapping to either; the Hono app maps
 * errors once, in its `onError`, with {@link errorResponse}.
 */
import type { StatusType } from "../protocol/messages.ts";
import {
  errorResponseBody,
  httpStatusOf,
  StatusError,
  type TypedError,
} from "../protocol/status_errors.ts";

/** Status-message types the api raises as errors (DESIGN §3); the others are not failures. */
export type ApiErrorKind = Exclude<StatusType, "CONGESTED" | "CAPTURE_STOPPED">;

export interface LimitInfo {
  name: string;
  value: number;
}

/**
 * A failure that maps 1:1 onto a StatusMessage `{type, text: message, limit}`. Every api module
 * throws it (or AuthError, its subclass). The message is user-facing and must never carry a
 * token.
 */
export class ApiError extends StatusError {
  /** the same as `type`, narrowed to the api's failure types */
  readonly kind: ApiErrorKind;
  declare readonly limit?: LimitInfo;

  constructor(kind: ApiErrorKind, message: string, limit?: LimitInfo, httpStatus?: number) {
    super(kind, message, { limit, httpStatus });
    this.kind = kind;
    this.name = "ApiError";
  }
}

/** LIMIT_REACHED naming the limit and its value. */
export function limitReached(name: string, value: number, text: string): ApiError {
  return new ApiError("LIMIT_REACHED", text, { name, value });
}

/** An ApiError as it is; anything else is an internal START_CAPTURE_FAILED. */
export function asApiError(e: unknown): ApiError {
  return e instanceof ApiError
    ? e
    : new ApiError("START_CAPTURE_FAILED", `internal error: ${(e as Error)?.message ?? e}`);
}

/** The HTTP answer `{type, text, limit?}` for an error, with the status its type maps to. */
export function errorResponse(err: TypedError): Response {
  return Response.json(errorResponseBody(err), { status: httpStatusOf(err) });
}
