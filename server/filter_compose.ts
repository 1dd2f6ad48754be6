/**
 * Builds the BPF filter an agent runs: the user's filter AND an exclusion of the capture's own
 * api↔agent connection (DESIGN §5). Wrapping the user text in parentheses is only safe if the
 * text cannot close our parenthesis itself (`port 80) or (port 443` would turn
 * `(excl) and (user)` into `(excl) and (port 80) or (port 443)`), so the user filter must
 * compile on its own AND keep its parentheses balanced at every prefix. It never reaches a shell.
 */
import { ApiError } from "./errors.ts";
import { checkFilter } from "../ffi/filter_check.ts";
import { MAX_AGENT_FILTER_LENGTH, MAX_FILTER_LENGTH } from "../protocol/messages.ts";

/** Upper bound of a user filter, in UTF-8 bytes (the protocol's bound, counted strictly). */
export const MAX_FILTER_BYTES = MAX_FILTER_LENGTH;
/** Upper bound of the composed filter: what an agent accepts in AgentStartRequest.filter. */
export const MAX_COMPOSED_FILTER_BYTES = MAX_AGENT_FILTER_LENGTH;

export type FilterChecker = (
  filter: string,
  linkType?: number,
  snaplen?: number,
) => { ok: true } | { ok: false; error: string };

export interface FilterCheckOptions {
  /** DLT to compile against (default 1, Ethernet: what agents capture on in practice) */
  linkType?: number;
  snaplen?: number;
  /** defaults to the libpcap-backed checker */
  check?: FilterChecker;
}

function invalid(text: string): ApiError {
  return new ApiError("INVALID_REQUEST", text);
}

/**
 * Validates a user filter and returns it normalised (whitespace runs → one space, trimmed).
 * An empty result means "capture everything". Throws INVALID_REQUEST with libpcap's reason.
 */
export function validateUserFilter(filter: string, opts: FilterCheckOptions = {}): string {
  if (typeof filter !== "string") throw invalid("the filter must be a string");
  const bytes = new TextEncoder().encode(filter).byteLength;
  if (bytes > MAX_FILTER_BYTES) {
    throw invalid(`the filter is ${bytes} bytes long, at most ${MAX_FILTER_BYTES} are allowed`);
  }
  // Tabs and line breaks are harmless whitespace; every other control character is refused.
  // deno-lint-ignore no-control-regex
  const ctrl = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]/.exec(filter);
  if (ctrl) {
    const code = ctrl[0].charCodeAt(0).toString(16).padStart(2, "0");
    throw invalid(`the filter contains control character 0x${code} at offset ${ctrl.index}`);
  }
  const text = filter.replace(/\s+/g, " ").trim();
  if (text === "") return "";
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === "(") depth++;
    else if (text[i] === ")" && --depth < 0) {
      throw invalid(
        `the filter closes a parenthesis it never opened at offset ${i}: ` +
          `"${text.slice(0, i + 1)}"; balance its parentheses`,
      );
    }
  }
  if (depth !== 0) throw invalid(`the filter leaves ${depth} parenthesis(es) open`);
  const result = (opts.check ?? checkFilter)(text, opts.linkType ?? 1, opts.snaplen ?? 65535);
  if (!result.ok) throw invalid(`the filter does not compile: ${result.error}`);
  return text;
}

export interface OwnConnection {
  /** the api's address as the agent sees it (or the agent's own address) */
  host: string;
  /** the agent's TCP port */
  port: number;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IPV6 = /^[0-9a-f:.]+$/i;

/** `not (host A and tcp port P)`: drops only the capture's own stream, not A's other traffic. */
export function exclusionFilter(conn: OwnConnection): string {
  const host = conn.host.replace(/^\[|\]$/g, "");
  const isV6 = host.includes(":") && IPV6.test(host);
  if (!IPV4.test(host) && !isV6) {
    throw new RangeError(`exclusion host must be an IP address, got ${JSON.stringify(conn.host)}`);
  }
  if (!Number.isInteger(conn.port) || conn.port < 1 || conn.port > 65535) {
    throw new RangeError(`exclusion port must be 1..65535, got ${conn.port}`);
  }
  return `not (host ${host} and tcp port ${conn.port})`;
}

/**
 * The filter an agent runs. `userFilter` is validated here (callers may pass it raw);
 * the composed result is compiled once more so a failure surfaces at the api, not N agents.
 */
export function composeFilter(
  userFilter: string,
  exclusion: string,
  opts: FilterCheckOptions = {},
): string {
  const user = validateUserFilter(userFilter, opts);
  const composed = user === "" ? exclusion : `(${exclusion}) and (${user})`;
  const size = new TextEncoder().encode(composed).byteLength;
  if (size > MAX_COMPOSED_FILTER_BYTES) {
    throw invalid(
      `the filter is too long to combine with the exclusion of the capture's own connection ` +
        `(${size} bytes combined, at most ${MAX_COMPOSED_FILTER_BYTES}); shorten it`,
    );
  }
  const result = (opts.check ?? checkFilter)(
    composed,
    opts.linkType ?? 1,
    opts.snaplen ?? 65535,
  );
  if (!result.ok) {
    throw invalid(`the filter cannot be combined with the exclusion: ${result.error}`);
  }
  return composed;
}
