/**
 * Validation of a `POST /captures` body at the edge: size, JSON, protocol version, the
 * AgentStartRequest schema (interface name by the kernel's rules, snaplen, filter length) and the
 * filter's text rules (complexity bound, no host names: protocol/filter_rules.ts). The filter is
 * compiled only by the capture worker, off the main thread; its errors come back from there
 * (INVALID_REQUEST, see server.ts). Returns a typed request or the HTTP error to answer with.
 */
import {
  AgentStartRequest,
  describeZodError,
  MAX_CONTROL_MESSAGE_BYTES,
  type StatusType,
} from "../protocol/messages.ts";
import { checkPeerVersion } from "../protocol/version.ts";
import {
  checkFilterRules,
  FilterRuleError,
  MAX_AGENT_FILTER_PRIMITIVES,
} from "../protocol/filter_rules.ts";
import { validateContainerRequest } from "./container_lookup.ts";

export type StartRequestResult =
  | { ok: true; request: AgentStartRequest }
  | { ok: false; status: 400; type: StatusType; text: string };

export const MAX_START_BODY_BYTES = MAX_CONTROL_MESSAGE_BYTES;

function invalid(text: string): StartRequestResult {
  return { ok: false, status: 400, type: "INVALID_REQUEST", text };
}

export function parseStartRequest(body: string): StartRequestResult {
  if (body.trim() === "") {
    return invalid("request body is empty; send an AgentStartRequest JSON object");
  }
  let raw: unknown;
  try {
    raw = JSON.parse(body);
  } catch (e) {
    return invalid(`request body is not JSON (${(e as Error).message}); send an AgentStartRequest`);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    return invalid("request body must be a JSON object (AgentStartRequest)");
  }
  // The version check comes first: an old peer gets "upgrade" rather than a field-level error.
  const version = (raw as Record<string, unknown>).protocol_version;
  const tooOld = checkPeerVersion(version, "the requesting client", "agent");
  if (tooOld) return invalid(tooOld);
  const parsed = AgentStartRequest.safeParse(raw);
  if (!parsed.success) return invalid(`invalid start request: ${describeZodError(parsed.error)}`);
  const request = parsed.data;
  if (request.target && !("container" in request.target)) {
    // CF container identifiers end up in paths on the cell: exact forms only, checked here.
    try {
      validateContainerRequest(request.target);
    } catch (e) {
      return invalid(`invalid target: ${(e as Error).message}`);
    }
  }
  try {
    checkFilterRules(request.filter, MAX_AGENT_FILTER_PRIMITIVES);
  } catch (e) {
    if (!(e instanceof FilterRuleError)) throw e;
    return invalid(`invalid filter "${request.filter}": ${e.message}`);
  }
  return { ok: true, request };
}
