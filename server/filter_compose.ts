/**
 * Builds the BPF filter an agent runs: the user's filter AND an exclusion of the capture's own
 * api↔agent connection (DESIGN §5). Wrapping the user text in parentheses is only safe if the
 * text cannot close our parenthesis itself (`port 80) or (port 443` would turn
 * `(excl) and (user)` into `(excl) and (port 80) or (port 443)`), so the user filter must
 * compile on its own AND keep its parentheses balanced at every prefix. It never reaches a shell.
 */
import { ApiError } from "./errors.ts";
import { type CompileResult, type FilterChecker, FilterCompiler } from "./filter_compiler.ts";
import { MAX_AGENT_FILTER_LENGTH, MAX_FILTER_LENGTH } from "../protocol/messages.ts";
import { checkFilterRules, FilterRuleError } from "../protocol/filter_rules.ts";

export type { FilterChecker } from "./filter_compiler.ts";

/** Upper bound of a user filter, in UTF-8 bytes (the protocol's bound, counted strictly). */
export const MAX_FILTER_BYTES = MAX_FILTER_LENGTH;
/** Upper bound of the composed filter: what an agent accepts in AgentStartRequest.filter. */
export const MAX_COMPOSED_FILTER_BYTES = MAX_AGENT_FILTER_LENGTH;

export interface FilterCheckOptions {
  /** DLT to compile against (default 1, Ethernet: what agents capture on in practice) */
  linkType?: number;
  snaplen?: number;
  /** defaults to a shared FilterCompiler (a Worker per compile, 1 s deadline) */
  check?: FilterChecker;
}

let shared: FilterCompiler | null = null;
/** Without an injected checker: a compiler that keeps no idle worker (none outlives a compile). */
function defaultCheck(): FilterChecker {
  shared ??= new FilterCompiler({ keepIdle: 0 });
  return shared.check;
}

function invalid(text: string): ApiError {
  return new ApiError("INVALID_REQUEST", text);
}

async function compile(text: string, opts: FilterCheckOptions): Promise<CompileResult> {
  return await (opts.check ?? defaultCheck())(text, opts.linkType ?? 1, opts.snaplen ?? 65535);
}

function compileRefusal(result: CompileResult & { ok: false }, what: string): ApiError {
  if (result.unavailable) {
    return new ApiError("START_CAPTURE_FAILED", `cannot check the filter: ${result.error}; retry`);
  }
  if (result.tooComplex) {
    return invalid(
      `filter too complex: ${result.error}; simplify it (fewer terms: a portrange instead of ` +
        `many ports, a net instead of many hosts)`,
    );
  }
  return invalid(`${what}: ${result.error}`);
}

/** Refuses a text that closes a parenthesis it never opened or leaves one open. */
function checkParentheses(text: string): void {
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
}

/**
 * Validates a user filter and returns it normalised (whitespace runs → one space, trimmed).
 * An empty result means "capture everything". Throws INVALID_REQUEST with the reason: text
 * rules first (length, control characters, parentheses, complexity, host names), so that a
 * pathological filter never reaches libpcap; then one compile, off the event loop.
 */
export async function validateUserFilter(
  filter: string,
  opts: FilterCheckOptions = {},
): Promise<string> {
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
  checkParentheses(text);
  try {
    checkFilterRules(text);
  } catch (e) {
    if (e instanceof FilterRuleError) throw invalid(e.message);
    throw e;
  }
  const result = await compile(text, opts);
  if (!result.ok) throw compileRefusal(result, "the filter does not compile");
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

/** The filter one agent runs: the exclusion, and the user's filter if there is one. */
export function composedFilter(userFilter: string, exclusion: string): string {
  return userFilter === "" ? exclusion : `(${exclusion}) and (${userFilter})`;
}

/**
 * Each agent's filter, for a user filter that validateUserFilter has already returned. The
 * composition is compiled once, with the first exclusion: the exclusions differ only in their
 * literal address and port, which does not change whether the conjunction compiles, so N
 * targets cost one compile, not N. The byte bound is checked for every target (address lengths
 * differ).
 */
export async function composeFilters(
  userFilter: string,
  exclusions: string[],
  opts: FilterCheckOptions = {},
): Promise<string[]> {
  checkParentheses(userFilter); // cheap, and the one rule the wrapping relies on
  const composed = exclusions.map((e) => composedFilter(userFilter, e));
  for (const c of composed) {
    const size = new TextEncoder().encode(c).byteLength;
    if (size > MAX_COMPOSED_FILTER_BYTES) {
      throw invalid(
        `the filter is too long to combine with the exclusion of the capture's own connection ` +
          `(${size} bytes combined, at most ${MAX_COMPOSED_FILTER_BYTES}); shorten it`,
      );
    }
  }
  if (composed.length === 0) return composed;
  const result = await compile(composed[0], opts);
  if (!result.ok) throw compileRefusal(result, "the filter cannot be combined with the exclusion");
  return composed;
}
