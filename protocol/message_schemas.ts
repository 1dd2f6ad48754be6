/**
 * The zod schemas behind protocol/messages.ts. Internal to protocol/: other layers use the typed
 * face in messages.ts, whose interfaces these schemas are checked against at compile time.
 *
 * @module
 */
import { z } from "zod";
import {
  deploymentNameProblem,
  interfaceNameProblem,
  MAX_AGENT_DURATION_MS,
  MAX_AGENT_FILTER_LENGTH,
  MAX_CAPTURE_DURATION_MS,
  MAX_FILTER_LENGTH,
  STATUS_TYPES,
} from "./message_rules.ts";
import { MAX_SNAPLEN } from "./records.ts";

/** A BOSH deployment name (see deploymentNameProblem). */
export const DeploymentName = z.string().superRefine((name, ctx) => {
  const problem = deploymentNameProblem(name);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

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

/** The client's own limits on a capture. */
export const CaptureLimits = z.strictObject({
  duration_ms: z.number().int().positive().max(
    MAX_CAPTURE_DURATION_MS,
    `duration_ms must be at most ${MAX_CAPTURE_DURATION_MS} (7 days)`,
  ).optional(),
  max_packets: z.number().int().positive().optional(),
  max_bytes: z.number().int().positive().optional(),
});

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

/** Client → api, later WebSocket text messages. */
export const StopRequest = z.strictObject({ type: z.literal("stop") });

/** First frame of every stream: who speaks, and which protocol versions. */
export const Hello = z.object({
  protocol_version: z.number().int().nonnegative(),
  min_protocol_version: z.number().int().nonnegative(),
  component: z.enum(["agent", "api"]),
  version: z.string(),
  id: z.string(),
});

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
}).catchall(z.number().optional());

/** Which limit a LIMIT_REACHED names, and its value. */
export const StatusLimit = z.object({ name: z.string(), value: z.union([z.number(), z.string()]) });

/** STATUS: something happened to a source or to the capture (DESIGN §3). */
export const StatusMessage = z.object({
  type: z.enum(STATUS_TYPES),
  text: z.string(),
  origin: z.string(),
  counts: CongestionCounts.optional(),
  limit: StatusLimit.optional(),
});

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
