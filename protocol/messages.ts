/**
 * JSON messages of protocol v1 (docs/protocol.md "Messages"), as zod schemas so that every
 * peer validates what it receives at the edge and works with typed values inside.
 *
 * @example Validate a STATUS payload
 * ```ts
 * import { StatusMessage } from "./messages.ts";
 *
 * const parsed = StatusMessage.safeParse({ type: "CONGESTED", text: "slow", origin: "api",
 *   counts: { cleared: 1, api_dropped: 12 } });
 * if (parsed.success) console.log(parsed.data.counts?.api_dropped); // 12
 * ```
 *
 * @module
 */
import { z } from "zod";
import { MAX_SNAPLEN } from "./records.ts";

/** Bound on a user's filter. */
export const MAX_FILTER_LENGTH = 4096;
/** Bound on what reaches an agent: the user's filter plus the api's own-connection exclusion. */
export const MAX_AGENT_FILTER_LENGTH: number = MAX_FILTER_LENGTH + 512;
/** Bound on any JSON control message; larger ones are refused before parsing. */
export const MAX_CONTROL_MESSAGE_BYTES = 64 * 1024;
/**
 * Longest capture anyone may ask for or configure: 7 days. Timers fire at once for delays above
 * 2^31-1 ms (~24.8 days), so an unbounded duration would end a capture immediately.
 */
export const MAX_CAPTURE_DURATION_MS = 7 * 24 * 3600 * 1000;
/** What an agent accepts: the api adds a few seconds of safety margin to the capture duration. */
export const MAX_AGENT_DURATION_MS: number = MAX_CAPTURE_DURATION_MS + 60_000;

/**
 * BOSH deployment names: the Director's charset, and never "." or ".." (which would change the
 * Director path they are put into, dots survive encodeURIComponent).
 */
export function deploymentNameProblem(name: string): string | null {
  if (typeof name !== "string" || name.length === 0 || name.length > 255) {
    return "the deployment name must be 1..255 characters";
  }
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) {
    return `deployment name ${JSON.stringify(name.slice(0, 80))} may only contain letters, ` +
      "digits, '_', '.' and '-'";
  }
  if (name === "." || name === "..") return `deployment name "${name}" is not allowed`;
  return null;
}

/** A BOSH deployment name (see deploymentNameProblem). */
export const DeploymentName = z.string().superRefine((name, ctx) => {
  const problem = deploymentNameProblem(name);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

/** Every STATUS type of protocol v1 (DESIGN §3). */
export const STATUS_TYPES = [
  "INSTANCE_UNAVAILABLE",
  "START_CAPTURE_FAILED",
  "INVALID_REQUEST",
  "UNAUTHENTICATED",
  "PERMISSION_DENIED",
  "CONGESTED",
  "LIMIT_REACHED",
  "CAPTURE_STOPPED",
  "CONNECTION_ERROR",
] as const;
/** One of STATUS_TYPES: also the stable `type` of every error that ends up in a STATUS. */
export type StatusType = typeof STATUS_TYPES[number];

/**
 * libpcap devices that are not network interfaces: capturing them would read the host's D-Bus,
 * USB or Bluetooth traffic, or netfilter queues, none of which a network capture may expose.
 */
const PSEUDO_DEVICES = /^(dbus-|nflog|nfqueue|usbmon|bluetooth|rpcap)/;

/**
 * Linux dev_valid_name() (1..15 bytes, not "." or "..", no '/', ':' or whitespace), narrowed to
 * the printable ASCII names interfaces have in practice (letters, digits, '.', '_', '-'), and
 * no libpcap pseudo-device. `any` (every interface of the namespace) is allowed.
 */
export function interfaceNameProblem(name: string): string | null {
  if (name.length === 0) return "interface name is empty";
  const shown = JSON.stringify(name);
  if (new TextEncoder().encode(name).byteLength > 15) {
    return `interface name ${shown} is longer than 15 bytes`;
  }
  if (name === "." || name === "..") return `interface name ${shown} is not allowed`;
  if (/[\/:\s]/.test(name)) {
    return `interface name ${shown} contains '/', ':' or whitespace`;
  }
  if (!/^[A-Za-z0-9._-]+$/.test(name)) {
    return `interface name ${shown} has characters other than letters, digits, '.', '_' and '-'`;
  }
  if (PSEUDO_DEVICES.test(name)) {
    return `interface name ${shown} is a libpcap pseudo-device, not a network interface`;
  }
  return null;
}

/** A network interface name (see interfaceNameProblem). */
export const InterfaceName = z.string().superRefine((name, ctx) => {
  const problem = interfaceNameProblem(name);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

/** Bytes to capture of each packet: 1..MAX_SNAPLEN. */
export const Snaplen = z.number().int().min(1, "snaplen must be at least 1").max(
  MAX_SNAPLEN,
  `snaplen must be at most ${MAX_SNAPLEN}`,
);

// Tabs and newlines are harmless whitespace to libpcap; other control characters are not.
const hasControlChars = (f: string) =>
  [...f].some((c) => c !== "\t" && c !== "\n" && (c < " " || c === "\x7f"));

function filterSchema(max: number) {
  return z.string().max(max, `filter is longer than ${max} characters`).refine(
    (f) => !hasControlChars(f),
    { message: "filter contains control characters" },
  );
}
/** A user's capture filter (libpcap syntax, bounded length, no control characters). */
export const Filter = filterSchema(MAX_FILTER_LENGTH);
/** The filter an agent receives: the user's plus the api's exclusion. */
export const AgentFilter = filterSchema(MAX_AGENT_FILTER_LENGTH);

/**
 * Which network namespace to capture in; absent = the agent's own (BOSH VM capture). CF names
 * the container by instance guid (= Garden handle) + app guid, or by app guid + container ip on
 * CCs before 3.191.0; the agent checks the exact forms (protocol/cf_ids.ts) and the app.
 */
export const CaptureTarget = z.union([
  z.strictObject({ app_guid: z.string().max(64), instance_guid: z.string().max(64) }),
  z.strictObject({ app_guid: z.string().max(64), ip: z.string().max(64) }),
  z.strictObject({
    /** legacy form: the instance guid alone */
    container: z.string().regex(/^[0-9a-zA-Z-]{1,64}$/, "container must be an instance guid"),
  }),
]);

/** api → agent, body of `POST /captures`. */
export const AgentStartRequest = z.strictObject({
  protocol_version: z.number().int().nonnegative(),
  interface: InterfaceName,
  snaplen: Snaplen,
  filter: AgentFilter.default(""),
  promiscuous: z.boolean().default(false),
  duration_ms: z.number().int().positive().max(
    MAX_AGENT_DURATION_MS,
    `duration_ms must be at most ${MAX_AGENT_DURATION_MS} (7 days and a minute)`,
  ).optional(),
  target: CaptureTarget.optional(),
  /** Who asked (user name from the api's token check), for the agent's log only. */
  requester: z.string().max(256).optional(),
});
/** A validated AgentStartRequest. */
export type AgentStartRequest = z.output<typeof AgentStartRequest>;

/** The client's own limits on a capture. */
export const CaptureLimits = z.strictObject({
  duration_ms: z.number().int().positive().max(
    MAX_CAPTURE_DURATION_MS,
    `duration_ms must be at most ${MAX_CAPTURE_DURATION_MS} (7 days)`,
  ).optional(),
  max_packets: z.number().int().positive().optional(),
  max_bytes: z.number().int().positive().optional(),
});
/** Validated CaptureLimits. */
export type CaptureLimits = z.output<typeof CaptureLimits>;

/** Client → api, first WebSocket text message of a BOSH capture. */
export const BoshStartRequest = z.strictObject({
  type: z.literal("start"),
  protocol_version: z.number().int().nonnegative(),
  bosh: z.strictObject({
    deployment: DeploymentName,
    groups: z.array(z.string().min(1).max(256)).max(256).default([]),
    instances: z.array(z.string().min(1).max(256)).max(1024).default([]),
  }),
  interface: InterfaceName.default("eth0"),
  snaplen: Snaplen.default(65535),
  filter: Filter.default(""),
  limits: CaptureLimits.default({}),
});
/** A validated BoshStartRequest (defaults applied). */
export type BoshStartRequest = z.output<typeof BoshStartRequest>;

/** Client → api, later WebSocket text messages. */
export const StopRequest = z.strictObject({ type: z.literal("stop") });
/** A validated StopRequest. */
export type StopRequest = z.output<typeof StopRequest>;

/** First frame of every stream: who speaks, and which protocol versions. */
export const Hello = z.object({
  protocol_version: z.number().int().nonnegative(),
  min_protocol_version: z.number().int().nonnegative(),
  component: z.enum(["agent", "api"]),
  version: z.string(),
  id: z.string(),
});
/** A validated HELLO. */
export type Hello = z.output<typeof Hello>;

/** SOURCE: announces a source before its first packet. */
export const SourceDescriptor = z.object({
  origin: z.string(),
  interface: z.string(),
  link_type: z.number().int().nonnegative(),
  snaplen: Snaplen,
  instance: z.object({
    deployment: z.string().optional(),
    group: z.string(),
    index: z.number().int().nonnegative().optional(),
    id: z.string(),
  }).optional(),
});
/** A validated SOURCE. */
export type SourceDescriptor = z.output<typeof SourceDescriptor>;

/**
 * The `counts` of a CONGESTED status. Every producer uses these names; a receiver keeps
 * counts it does not know (all numbers) and ignores them.
 */
export const CongestionCounts = z.object({
  /** 1 on the message that says the congestion is over */
  cleared: z.literal(1).optional(),
  /** agent: packet batches queued towards the api when congestion began */
  queued: z.number().nonnegative().optional(),
  /** agent: packets discarded since the capture began, all episodes */
  discarded_total: z.number().nonnegative().optional(),
  /** agent: packets, batches and bytes discarded in the episode that cleared */
  discarded_packets: z.number().nonnegative().optional(),
  discarded_batches: z.number().nonnegative().optional(),
  discarded_bytes: z.number().nonnegative().optional(),
  /** api: frames and bytes queued towards the client when congestion began */
  buffered_frames: z.number().nonnegative().optional(),
  buffered_bytes: z.number().nonnegative().optional(),
  /** api: packets discarded in the episode that cleared */
  api_dropped: z.number().nonnegative().optional(),
}).catchall(z.number());
/** Validated CongestionCounts. */
export type CongestionCounts = z.output<typeof CongestionCounts>;

/** Which limit a LIMIT_REACHED names, and its value. */
export const StatusLimit = z.object({ name: z.string(), value: z.union([z.number(), z.string()]) });
/** A validated StatusLimit. */
export type StatusLimit = z.output<typeof StatusLimit>;

/** STATUS: something happened to a source or to the capture (DESIGN §3). */
export const StatusMessage = z.object({
  type: z.enum(STATUS_TYPES),
  text: z.string(),
  origin: z.string(),
  counts: CongestionCounts.optional(),
  limit: StatusLimit.optional(),
});
/** A validated STATUS. */
export type StatusMessage = z.output<typeof StatusMessage>;

/** Cumulative per-source counters; `final: true` on the last one of a source. */
export const SourceStats = z.object({
  received: z.number().nonnegative(),
  dropped: z.number().nonnegative(),
  if_dropped: z.number().nonnegative(),
  engine_dropped: z.number().nonnegative(),
  agent_dropped: z.number().nonnegative(),
  api_dropped: z.number().nonnegative().default(0),
  packets: z.number().nonnegative(),
  bytes: z.number().nonnegative(),
  final: z.boolean(),
});
/** Validated STATS. */
export type SourceStats = z.output<typeof SourceStats>;

/** STATS of a source before anything was counted. */
export function emptySourceStats(): SourceStats {
  return {
    received: 0,
    dropped: 0,
    if_dropped: 0,
    engine_dropped: 0,
    agent_dropped: 0,
    api_dropped: 0,
    packets: 0,
    bytes: 0,
    final: false,
  };
}

/** A STATUS message. */
export function status(
  type: StatusType,
  origin: string,
  text: string,
  extra: Pick<StatusMessage, "counts" | "limit"> = {},
): StatusMessage {
  return { type, origin, text, ...extra };
}

/** Formats the first zod issue as "field: message" for INVALID_REQUEST texts. */
export function describeZodError(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return "invalid request";
  const where = issue.path.length ? issue.path.map(String).join(".") : "request";
  if (issue.code === "unrecognized_keys") {
    return `${where}: unknown field${issue.keys.length > 1 ? "s" : ""} ${issue.keys.join(", ")}`;
  }
  return `${where}: ${issue.message}`;
}
