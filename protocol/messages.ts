/**
 * JSON messages of protocol v1 (docs/protocol.md "Messages"): one documented interface per
 * message, and a schema for each that every peer validates what it receives with at the edge,
 * so that code inside works with typed values. The schemas are zod's (protocol/message_schemas.ts),
 * checked against these interfaces at compile time; callers only see `Schema<T>`.
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
import type { z } from "zod";
import * as schemas from "./message_schemas.ts";
import type { StatusType } from "./message_rules.ts";
import { type Same, type Schema, typed, type ValidationError } from "./schema_check.ts";

export * from "./message_rules.ts";

export type { ParseResult, Schema, ValidationError, ValidationIssue } from "./schema_check.ts";

/** A BOSH deployment name (see deploymentNameProblem). */
export const DeploymentName: Schema<string> = schemas.DeploymentName;
/** A network interface name (see interfaceNameProblem). */
export const InterfaceName: Schema<string> = schemas.InterfaceName;
/** Bytes to capture of each packet: 1..MAX_SNAPLEN. */
export const Snaplen: Schema<number> = schemas.Snaplen;
/** A user's capture filter (libpcap syntax, bounded length, no control characters). */
export const Filter: Schema<string> = schemas.Filter;
/** The filter an agent receives: the user's plus the api's exclusion. */
export const AgentFilter: Schema<string> = schemas.AgentFilter;

/**
 * Which network namespace to capture in; absent = the agent's own (BOSH VM capture). CF names
 * the container by instance guid (= Garden handle) + app guid, or by app guid + container ip on
 * CCs before 3.191.0; the agent checks the exact forms (protocol/cf_ids.ts) and the app.
 */
export type CaptureTarget =
  | { app_guid: string; instance_guid: string }
  | { app_guid: string; ip: string }
  | {
    /** legacy form: the instance guid alone */
    container: string;
  };
/** Validates a CaptureTarget. */
export const CaptureTarget: Schema<CaptureTarget> = typed(
  schemas.CaptureTarget,
  true satisfies Same<CaptureTarget, z.output<typeof schemas.CaptureTarget>>,
);

/** api → agent, body of `POST /captures`. */
export interface AgentStartRequest {
  /** the api's protocol version */
  protocol_version: number;
  /** interface to capture, in the VM's or the container's namespace */
  interface: string;
  /** bytes kept of each packet */
  snaplen: number;
  /** the user's filter with the api's exclusion of its own connection ("" = none) */
  filter: string;
  /** promiscuous mode, off unless asked for */
  promiscuous: boolean;
  /** the agent ends the capture after this long */
  duration_ms?: number;
  /** the container to capture in (CF); absent = the agent's own namespace */
  target?: CaptureTarget;
  /** who asked (user name from the api's token check), for the agent's log only */
  requester?: string;
}
/** Validates an AgentStartRequest. */
export const AgentStartRequest: Schema<AgentStartRequest> = typed(
  schemas.AgentStartRequest,
  true satisfies Same<AgentStartRequest, z.output<typeof schemas.AgentStartRequest>>,
);

/** The client's own limits on a capture; each ends it when reached. */
export interface CaptureLimits {
  /** how long to capture */
  duration_ms?: number;
  /** how many packets to write */
  max_packets?: number;
  /** how many bytes of packets to write */
  max_bytes?: number;
}
/** Validates CaptureLimits. */
export const CaptureLimits: Schema<CaptureLimits> = typed(
  schemas.CaptureLimits,
  true satisfies Same<CaptureLimits, z.output<typeof schemas.CaptureLimits>>,
);

/** Client → api, first WebSocket text message of a BOSH capture. */
export interface BoshStartRequest {
  /** always "start" */
  type: "start";
  /** the client's protocol version */
  protocol_version: number;
  /** what to capture: a deployment, optionally narrowed to groups and instances */
  bosh: {
    /** the deployment */
    deployment: string;
    /** instance groups ([] = all) */
    groups: string[];
    /** instances as `group/id`, `group/index` or `id` ([] = all of the groups) */
    instances: string[];
  };
  /** interface on every VM (default eth0) */
  interface: string;
  /** bytes kept of each packet (default 65535) */
  snaplen: number;
  /** libpcap filter ("" = everything) */
  filter: string;
  /** the client's limits */
  limits: CaptureLimits;
}
/** Validates a BoshStartRequest (defaults applied). */
export const BoshStartRequest: Schema<BoshStartRequest> = typed(
  schemas.BoshStartRequest,
  true satisfies Same<BoshStartRequest, z.output<typeof schemas.BoshStartRequest>>,
);

/** Client → api, later WebSocket text messages: stop and drain. */
export interface StopRequest {
  /** always "stop" */
  type: "stop";
}
/** Validates a StopRequest. */
export const StopRequest: Schema<StopRequest> = typed(
  schemas.StopRequest,
  true satisfies Same<StopRequest, z.output<typeof schemas.StopRequest>>,
);

/** First frame of every stream: who speaks, and which protocol versions. */
export interface Hello {
  /** the sender's protocol version */
  protocol_version: number;
  /** the oldest peer version the sender still speaks */
  min_protocol_version: number;
  /** which component sends */
  component: "agent" | "api";
  /** the sender's software version */
  version: string;
  /** the sender's id (agent: its instance; api: the capture) */
  id: string;
}
/** Validates a HELLO. */
export const Hello: Schema<Hello> = typed(
  schemas.Hello,
  true satisfies Same<Hello, z.output<typeof schemas.Hello>>,
);

/** SOURCE: announces a source before its first packet. */
export interface SourceDescriptor {
  /** the source's name in the merged stream, e.g. `router/0 (id) eth0` */
  origin: string;
  /** the captured interface */
  interface: string;
  /** libpcap DLT of its packets */
  link_type: number;
  /** bytes kept of each packet */
  snaplen: number;
  /** the BOSH instance (or CF app instance) it belongs to */
  instance?: {
    /** the deployment */
    deployment?: string;
    /** instance group (CF: app/process) */
    group: string;
    /** index in the group */
    index?: number;
    /** instance id (CF: instance guid) */
    id: string;
  };
}
/** Validates a SOURCE. */
export const SourceDescriptor: Schema<SourceDescriptor> = typed(
  schemas.SourceDescriptor,
  true satisfies Same<SourceDescriptor, z.output<typeof schemas.SourceDescriptor>>,
);

/**
 * The `counts` of a CONGESTED status. Every producer uses these names; a receiver keeps
 * counts it does not know (all numbers) and ignores them.
 */
export interface CongestionCounts {
  /** 1 on the message that says the congestion is over */
  cleared?: 1;
  /** agent: packet batches queued towards the api when congestion began */
  queued?: number;
  /** agent: packets discarded since the capture began, all episodes */
  discarded_total?: number;
  /** agent: packets discarded in the episode that cleared */
  discarded_packets?: number;
  /** agent: batches discarded in the episode that cleared */
  discarded_batches?: number;
  /** agent: bytes discarded in the episode that cleared */
  discarded_bytes?: number;
  /** api: frames queued towards the client when congestion began */
  buffered_frames?: number;
  /** api: bytes queued towards the client when congestion began */
  buffered_bytes?: number;
  /** api: packets discarded in the episode that cleared */
  api_dropped?: number;
  /** counts of newer peers */
  [count: string]: number | undefined;
}
/** Validates CongestionCounts. */
export const CongestionCounts: Schema<CongestionCounts> = typed(
  schemas.CongestionCounts,
  true satisfies Same<CongestionCounts, z.output<typeof schemas.CongestionCounts>>,
);

/** Which limit a LIMIT_REACHED names, and its value. */
export interface StatusLimit {
  /** the limit's name, e.g. `max_packets` */
  name: string;
  /** its configured value */
  value: number | string;
}
/** Validates a StatusLimit. */
export const StatusLimit: Schema<StatusLimit> = typed(
  schemas.StatusLimit,
  true satisfies Same<StatusLimit, z.output<typeof schemas.StatusLimit>>,
);

/** STATUS: something happened to a source or to the capture (DESIGN §3). */
export interface StatusMessage {
  /** what happened */
  type: StatusType;
  /** for people */
  text: string;
  /** the source it concerns, or `api` */
  origin: string;
  /** with CONGESTED */
  counts?: CongestionCounts;
  /** with LIMIT_REACHED */
  limit?: StatusLimit;
}
/** Validates a STATUS. */
export const StatusMessage: Schema<StatusMessage> = typed(
  schemas.StatusMessage,
  true satisfies Same<StatusMessage, z.output<typeof schemas.StatusMessage>>,
);

/** Cumulative per-source counters; `final: true` on the last one of a source. */
export interface SourceStats {
  /** packets the kernel passed to libpcap */
  received: number;
  /** packets the kernel dropped for lack of buffer space */
  dropped: number;
  /** packets the interface dropped */
  if_dropped: number;
  /** packets the capture engine could not queue */
  engine_dropped: number;
  /** packets the agent discarded towards a slow api */
  agent_dropped: number;
  /** packets the api discarded towards a slow client */
  api_dropped: number;
  /** packets sent */
  packets: number;
  /** bytes of packets sent */
  bytes: number;
  /** the last STATS of the source */
  final: boolean;
}
/** Validates STATS. */
export const SourceStats: Schema<SourceStats> = typed(
  schemas.SourceStats,
  true satisfies Same<SourceStats, z.output<typeof schemas.SourceStats>>,
);

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

/** Formats the first issue as "field: message" for INVALID_REQUEST texts. */
export function describeZodError(error: ValidationError): string {
  const issue = error.issues[0];
  if (!issue) return "invalid request";
  const where = issue.path.length ? issue.path.map(String).join(".") : "request";
  if (issue.code === "unrecognized_keys") {
    const keys = issue.keys ?? [];
    return `${where}: unknown field${keys.length > 1 ? "s" : ""} ${keys.join(", ")}`;
  }
  return `${where}: ${issue.message}`;
}
